"""qmpd's state file: a versioned header, the machine description as JSON, guest RAM, and a checksum.

Layout (integers little-endian):
    magic     b"QMPDSTATE\\0"                      10 bytes
    version   u32 (FORMAT_VERSION)
    meta_len  u64, then meta_len bytes of UTF-8 JSON (the machine, its CPUs and devices)
    ram_size  u64, chunk u32 (CHUNK), then one flag byte per chunk (1: data follows, 0: all zeros)
              and the data of every non-zero chunk, in order
    digest    SHA-256 of everything above, 32 bytes
    trailer   b"QMPDEND\\0"

A reader checks the whole file (sizes, digest, trailer) before it hands anything back, so a truncated
or corrupted file is refused and nothing of it is applied.  Zero chunks cost one byte: a freshly
booted guest's RAM is mostly zeros.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

MAGIC = b"QMPDSTATE\0"
TRAILER = b"QMPDEND\0"
FORMAT_VERSION = 1
CHUNK = 64 << 10
_ZERO = bytes(CHUNK)


class StateFormatError(Exception):
    """The file is not a complete, intact qmpd state of a version this qmpd reads."""


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        self._out.write(data)
        self.written += len(data)


def write_state(
    out: BinaryIO,
    meta: dict[str, Any],
    ram: memoryview,
    cancelled: Callable[[], bool] = lambda: False,
    touched: bytes | None = None,
) -> int:
    """Write one state; returns the bytes written.  ``cancelled`` is polled between RAM chunks;
    ``touched`` (one byte per CHUNK, see GuestRAM.touched_chunks) spares reading chunks never used."""
    writer = _HashingWriter(out)
    encoded = json.dumps(meta, separators=(",", ":")).encode()
    writer.write(MAGIC + struct.pack("<IQ", FORMAT_VERSION, len(encoded)))
    writer.write(encoded)
    count = (len(ram) + CHUNK - 1) // CHUNK
    flags = bytearray(count)
    for index in range(count):
        if touched is not None and not touched[index]:
            continue
        # tobytes() + bytes equality is a memcpy and a memcmp; comparing memoryviews goes byte by byte.
        chunk = ram[index * CHUNK : (index + 1) * CHUNK].tobytes()
        flags[index] = 0 if chunk == (_ZERO if len(chunk) == CHUNK else bytes(len(chunk))) else 1
    writer.write(struct.pack("<QI", len(ram), CHUNK))
    writer.write(bytes(flags))
    for index in range(count):
        if flags[index]:
            if cancelled():
                raise InterruptedError("cancelled")
            writer.write(ram[index * CHUNK : (index + 1) * CHUNK])
    out.write(writer.digest.digest() + TRAILER)
    return writer.written + 32 + len(TRAILER)


class RAMImage:
    """Guest RAM as stored: its size and the non-zero chunks (views into the file's bytes)."""

    def __init__(self, size: int, chunk: int, chunks: dict[int, memoryview]) -> None:
        self.size = size
        self.chunk = chunk
        self.chunks = chunks

    def load_into(self, view: memoryview, touched: bytes | None = None) -> None:
        """Make ``view`` (guest RAM, same size) equal to the image: stored chunks are copied, other
        chunks cleared where they are not zero already (``touched``: which chunks may hold data)."""
        zero = bytes(self.chunk)
        for index in range((self.size + self.chunk - 1) // self.chunk):
            start = index * self.chunk
            end = min(start + self.chunk, self.size)
            data = self.chunks.get(index)
            if data is not None:
                view[start:end] = data
            elif (touched is None or touched[index]) and view[start:end].tobytes() != zero[: end - start]:
                view[start:end] = zero[: end - start]

    def to_bytes(self) -> bytes:
        out = bytearray(self.size)
        self.load_into(memoryview(out))
        return bytes(out)


def read_state(path: str) -> tuple[dict[str, Any], RAMImage]:
    """The machine description and guest RAM of a state file, after checking all of it."""
    try:
        with open(path, "rb") as source:
            data = memoryview(source.read())
    except OSError as exc:
        raise StateFormatError(f"{path}: {exc.strerror or exc}") from None
    return parse_state(data, path)


def parse_state(data: memoryview, name: str = "state") -> tuple[dict[str, Any], RAMImage]:
    """As read_state, from bytes in memory."""
    head = len(MAGIC) + 12
    if len(data) < head or bytes(data[: len(MAGIC)]) != MAGIC:
        raise StateFormatError(f"{name}: not a qmpd state file")
    version, meta_len = struct.unpack_from("<IQ", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise StateFormatError(f"{name}: state format version {version}; this qmpd reads version {FORMAT_VERSION}")
    end = len(data) - 32 - len(TRAILER)
    if end < head or bytes(data[end + 32 :]) != TRAILER:
        raise StateFormatError(f"{name}: truncated (no end marker)")
    if hashlib.sha256(data[:end]).digest() != bytes(data[end : end + 32]):
        raise StateFormatError(f"{name}: checksum mismatch (the file is corrupted)")
    offset = head + meta_len
    if offset + 12 > end:
        raise StateFormatError(f"{name}: truncated (machine description)")
    try:
        meta = json.loads(bytes(data[head:offset]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFormatError(f"{name}: unreadable machine description: {exc}") from None
    ram_size, chunk = struct.unpack_from("<QI", data, offset)
    offset += 12
    count = (ram_size + chunk - 1) // chunk if chunk else 0
    if chunk == 0 or offset + count > end:
        raise StateFormatError(f"{name}: truncated (RAM map)")
    flags = bytes(data[offset : offset + count])
    offset += count
    chunks: dict[int, memoryview] = {}
    for index in range(count):
        if flags[index]:
            length = min(chunk, ram_size - index * chunk)
            if offset + length > end:
                raise StateFormatError(f"{name}: truncated (RAM)")
            chunks[index] = data[offset : offset + length]
            offset += length
    if offset != end:
        raise StateFormatError(f"{name}: {end - offset} unexpected bytes after the RAM")
    return meta, RAMImage(ram_size, chunk, chunks)


def save_atomically(path: str, meta: dict[str, Any], ram: memoryview, touched: bytes | None = None) -> int:
    """Write to a temporary file beside ``path``, fsync, rename over it, fsync the directory.

    A crash at any point leaves either the previous file or the new one, never a mixture.
    """
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(directory):  # left by a save that was killed
        if name.startswith(prefix) and name.endswith(".tmp"):
            os.unlink(os.path.join(directory, name))
    temporary = os.path.join(directory, f"{prefix}{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as out:
            size = write_state(out, meta, ram, touched=touched)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return size
