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
booted guest's RAM is mostly zeros.  An incoming stream is read through ``read_bounded``: the header
says how big the stream is, so one that declares more than the target holds is refused before its
bulk is read, and reading stops at the declared end (``file:/dev/zero`` cannot grow memory).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import struct
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

MAGIC = b"QMPDSTATE\0"
TRAILER = b"QMPDEND\0"
FORMAT_VERSION = 1
CHUNK = 64 << 10
_ZERO = bytes(CHUNK)
#: The largest machine description a reader accepts (a 1024-CPU description is about 2 MiB).
MAX_DESCRIPTION = 16 << 20
#: The largest chunk size a reader accepts (writers use CHUNK).
MAX_CHUNK = 16 << 20
#: How much a reader asks of its source at once.
READ_SIZE = 1 << 20
_HEAD = len(MAGIC) + 12
_END = 32 + len(TRAILER)


class Readable(Protocol):
    """A source read_bounded can fill buffers from (a file, a pipe)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class StateFormatError(Exception):
    """The file is not a complete, intact qmpd state of a version this qmpd reads."""


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        import hashlib  # here, as below: a start that never saves or restores needs neither module

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
    import hashlib

    if hashlib.sha256(data[:end]).digest() != bytes(data[end : end + 32]):
        raise StateFormatError(f"{name}: checksum mismatch (the file is corrupted)")
    offset = head + meta_len
    if offset + 12 > end:
        raise StateFormatError(f"{name}: truncated (machine description)")
    try:
        meta = json.loads(bytes(data[head:offset]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFormatError(f"{name}: unreadable machine description: {exc}") from None
    except RecursionError:
        raise StateFormatError(f"{name}: unreadable machine description: nested too deeply") from None
    if not isinstance(meta, dict):
        raise StateFormatError(f"{name}: the machine description is not a JSON object")
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


def read_bounded(source: Readable, name: str, max_ram: int) -> tuple[dict[str, Any], RAMImage]:
    """As parse_state, from a stream read in bounded pieces up to the end its header declares.

    A stream that declares a description over MAX_DESCRIPTION or more RAM than ``max_ram`` is
    refused before its bulk is read, so neither a bad header nor an endless source can grow memory.
    """
    head = _read_exact(source, _HEAD, name, "header")
    if head[: len(MAGIC)] != MAGIC:
        raise StateFormatError(f"{name}: not a qmpd state file")
    version, meta_len = struct.unpack_from("<IQ", head, len(MAGIC))
    if version != FORMAT_VERSION:
        raise StateFormatError(f"{name}: state format version {version}; this qmpd reads version {FORMAT_VERSION}")
    if meta_len > MAX_DESCRIPTION:
        raise StateFormatError(f"{name}: the machine description declares {meta_len} bytes (limit {MAX_DESCRIPTION})")
    prefix = head + _read_exact(source, meta_len + 12, name, "machine description")
    ram_size, chunk = struct.unpack_from("<QI", prefix, _HEAD + meta_len)
    if ram_size > max_ram:
        raise StateFormatError(f"{name}: the stream declares {ram_size} bytes of RAM; this machine has {max_ram}")
    if not 0 < chunk <= MAX_CHUNK:
        raise StateFormatError(f"{name}: invalid RAM chunk size {chunk}")
    count = (ram_size + chunk - 1) // chunk
    flags = _read_exact(source, count, name, "RAM map")
    stored = sum(min(chunk, ram_size - index * chunk) for index in range(count) if flags[index])
    total = len(prefix) + count + stored + _END
    data = bytearray(total)
    data[: len(prefix)] = prefix
    data[len(prefix) : len(prefix) + count] = flags
    _read_into(source, memoryview(data)[len(prefix) + count :], name)
    return parse_state(memoryview(data), name)


def _read_exact(source: Readable, length: int, name: str, part: str) -> bytes:
    buffer = bytearray(length)
    _read_into(source, memoryview(buffer), name, part)
    return bytes(buffer)


def _read_into(source: Readable, view: memoryview, name: str, part: str = "RAM") -> None:
    """Fill ``view`` from ``source``, READ_SIZE at most per call; a short source is a truncation."""
    done = 0
    while done < len(view):
        got = source.readinto(view[done : done + READ_SIZE])
        if not got:
            raise StateFormatError(f"{name}: truncated ({part})")
        done += got


def open_regular_file(path: str) -> io.BufferedReader:
    """Open an incoming state file; a FIFO, device or socket is refused (it could block or never end)."""
    if "\0" in path:
        raise OSError(f"Could not open '{path!r}': the path contains a NUL byte")
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(f"{path} is not a regular file")
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def check_target(path: str) -> None:
    """Refuse a target that is not a plain path to a regular file (or to nothing yet).

    Writing replaces the target by rename; a FIFO, device or socket there would be replaced by a
    regular file (as root, ``file:/dev/null`` would replace /dev/null).
    """
    if "\0" in path:
        raise OSError(f"Could not open '{path!r}': the path contains a NUL byte")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OSError(f"{path} is not a regular file: qmpd writes states only to regular files")


def write_atomically(path: str, write: Callable[[BinaryIO], int], suffix: str = ".tmp") -> int:
    """Write through ``write`` to a new temporary file beside ``path``, fsync, rename over it,
    fsync the directory; returns what ``write`` returned.

    The temporary is created with O_EXCL|O_NOFOLLOW (mkstemp), so a link planted beside the target
    cannot redirect the write; a crash at any point leaves the previous file or the new one, never a
    mixture, and a failed or cancelled write leaves no temporary.
    """
    check_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    import tempfile

    descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as out:
            size = write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    return size


def save_atomically(path: str, meta: dict[str, Any], ram: memoryview, touched: bytes | None = None) -> int:
    """--state-dir's save: the state written by write_atomically (temporaries a killed save left
    beside ``path`` are removed first)."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(directory):
        if name.startswith(prefix) and name.endswith(".tmp"):
            os.unlink(os.path.join(directory, name))
    return write_atomically(path, lambda out: write_state(out, meta, ram, touched=touched))
