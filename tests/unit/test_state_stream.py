"""The state file format: round trip, zero chunks, and every kind of damage refused before use."""

from __future__ import annotations

import io
import os

import pytest

from qmpd.migration.stream import CHUNK, StateFormatError, parse_state, read_state, save_atomically, write_state
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
