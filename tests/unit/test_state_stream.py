"""The state file format: round trip, zero chunks, and every kind of damage refused before use."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from qmpd.migration.stream import (
    CHUNK,
    MAGIC,
    MAX_DESCRIPTION,
    READ_SIZE,
    TRAILER,
    StateFormatError,
    open_regular_file,
    parse_state,
    read_bounded,
    read_state,
    save_atomically,
    write_atomically,
    write_state,
)
from qmpd.vcpu.ram import GuestRAM

META = {"machine": {"type": "pc-i440fx-7.2"}, "cpus": [{"index": 0}]}


def _ram() -> bytearray:
    ram = bytearray(16 * CHUNK + 4096)  # a partial last chunk
    ram[10:20] = b"0123456789"
    ram[5 * CHUNK + 7] = 0xFF
    ram[-1] = 0x42
    return ram


def _encoded(ram: bytearray) -> bytes:
    out = io.BytesIO()
    size = write_state(out, META, memoryview(ram))
    assert size == len(out.getvalue())
    return out.getvalue()


def test_round_trip_stores_only_non_zero_chunks() -> None:
    ram = _ram()
    data = _encoded(ram)
    assert len(data) < 4 * CHUNK, "3 chunks with data, the 14 others cost a byte each"
    meta, image = parse_state(memoryview(data))
    assert meta == META
    assert sorted(image.chunks) == [0, 5, 16]
    assert image.to_bytes() == bytes(ram)


def test_loading_clears_what_the_image_says_is_zero() -> None:
    image = parse_state(memoryview(_encoded(_ram())))[1]
    target = bytearray(b"\xaa" * len(_ram()))
    image.load_into(memoryview(target))
    assert bytes(target) == bytes(_ram())


@pytest.mark.parametrize("offset", [0, 5, 12, 40, -40, -33, -5, -1])
def test_any_flipped_byte_is_refused(offset: int) -> None:
    data = bytearray(_encoded(_ram()))
    data[offset] ^= 0x01
    with pytest.raises(StateFormatError):
        parse_state(memoryview(bytes(data)))


@pytest.mark.parametrize("length", [0, 5, 30, 100, CHUNK, -41, -1])
def test_any_truncation_is_refused(length: int) -> None:
    data = _encoded(_ram())
    with pytest.raises(StateFormatError):
        parse_state(memoryview(data[:length]))


def test_another_version_is_refused_by_name() -> None:
    data = bytearray(_encoded(_ram()))
    data[10] = 2
    with pytest.raises(StateFormatError, match="version 2"):
        parse_state(memoryview(bytes(data)))


def test_untouched_guest_ram_is_not_read_and_saves_as_zeros(tmp_path: os.PathLike[str]) -> None:
    ram = GuestRAM(64 * CHUNK)
    ram.write(3 * CHUNK + 1, b"x")
    touched = ram.touched_chunks(CHUNK)
    assert touched[3] == 1 and sum(touched) < len(touched), "untouched RAM is not resident"
    path = os.path.join(tmp_path, "s.state")
    save_atomically(path, META, ram.view(), touched)
    image = read_state(path)[1]
    assert sorted(image.chunks) == [3]
    assert os.listdir(tmp_path) == ["s.state"], "no temporary left"


# -- bounded reading and safe targets ---------------------------------------------------------------


class _Endless(io.RawIOBase):
    """A source that never ends (like /dev/zero or `exec:cat /dev/zero`), counting what it gives."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        head = self.prefix[self.given : self.given + len(view)]
        view[: len(head)] = head
        view[len(head) :] = bytes(len(view) - len(head))
        self.given += len(view)
        return len(view)


def test_a_stream_declaring_more_ram_than_the_target_is_refused_after_its_header() -> None:
    data = _encoded(_ram())
    source = _Endless(data)
    with pytest.raises(StateFormatError, match=r"declares .* bytes of RAM"):
        read_bounded(source, "big", max_ram=len(_ram()) - 1)
    assert source.given < 2 * READ_SIZE, "nothing past the header was read"


def test_reading_stops_at_the_declared_end_of_an_endless_source() -> None:
    data = _encoded(_ram())
    source = _Endless(data)
    meta, image = read_bounded(source, "endless", max_ram=1 << 30)
    assert meta == META and image.to_bytes() == bytes(_ram())
    assert source.given <= len(data) + READ_SIZE


def test_zeros_and_an_oversized_description_are_refused_at_once() -> None:
    with pytest.raises(StateFormatError, match="not a qmpd state file"):
        read_bounded(_Endless(b""), "/dev/zero", max_ram=1 << 30)
    header = MAGIC + struct.pack("<IQ", 1, MAX_DESCRIPTION + 1)
    source = _Endless(header)
    with pytest.raises(StateFormatError, match="description declares"):
        read_bounded(source, "huge", max_ram=1 << 30)
    assert source.given <= READ_SIZE


def test_the_temporary_is_never_a_planted_link(tmp_path: Path) -> None:
    target = tmp_path / "out.state"
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    for name in (f"out.state.{os.getpid()}.part", f".out.state.{os.getpid()}.tmp", f".out.state.{os.getpid()}.part"):
        (tmp_path / name).symlink_to(outside)
    write_atomically(str(target), lambda out: write_state(out, META, memoryview(_ram())), suffix=".part")
    assert outside.read_bytes() == b"precious"
    assert parse_state(memoryview(target.read_bytes()))[0] == META
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part") and not p.is_symlink()]


def test_special_files_are_refused_as_targets_and_sources(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/null"):
        with pytest.raises(OSError, match="not a regular file"):
            write_atomically(path, lambda out: write_state(out, META, memoryview(_ram())))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    for path in (str(fifo), "/dev/zero"):
        with pytest.raises(OSError, match="not a regular file"):
            open_regular_file(path)


def test_a_deeply_nested_description_is_a_format_error() -> None:
    data = bytearray(_encoded(_ram()))
    nested = b"[" * 100_000 + b"]" * 100_000
    meta_len = struct.unpack_from("<Q", data, len(MAGIC) + 4)[0]
    body = MAGIC + struct.pack("<IQ", 1, len(nested)) + nested + data[len(MAGIC) + 12 + meta_len : -40]
    with pytest.raises(StateFormatError, match="nested too deeply"):
        parse_state(memoryview(bytes(body) + hashlib.sha256(body).digest() + TRAILER))
