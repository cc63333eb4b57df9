"""``x``/``xp`` output and their ``/count-format-size`` argument, as QEMU 7.2's monitor prints and parses them.

The dump texts were captured from QEMU 7.2 (``xp`` over zeroed RAM) or follow
monitor/hmp-cmds.c memory_dump's printf formats (``%#*o``, ``0x%0*x``, ``%*u``,
``%*d`` with QEMU's digit counts); the ``/`` parser follows monitor/hmp.c,
including its sticky defaults (the last format and size given).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from qmpd.hmp.memory_dump import memory_dump
from qmpd.hmp.parser import FORMAT_DEFAULTS, HMPSyntaxError, parse_args_type, parse_arguments

Reader = Callable[[int, int], bytes | None]


def zeros(address: int, length: int) -> bytes | None:
    return bytes(length)


def memory(base: int, data: bytes) -> Reader:
    """Reads of ``data`` placed at ``base``, zeros elsewhere."""

    def read(address: int, length: int) -> bytes | None:
        out = bytearray(length)
        for i in range(length):
            if 0 <= address + i - base < len(data):
                out[i] = data[address + i - base]
        return bytes(out)

    return read


BIOS_RESET = bytes.fromhex("ea5be000f030362f")  # the bytes at 0xffff0 of SeaBIOS: ljmp f000:e05b, "06/2"


# -- memory_dump ------------------------------------------------------------------------------------


def test_hex_quadwords_from_qemu() -> None:
    assert memory_dump(4, "x", 8, 0x200000, zeros) == (
        "0000000000200000: 0x0000000000000000 0x0000000000000000\n"
        "0000000000200010: 0x0000000000000000 0x0000000000000000\n"
    )


def test_signed_decimal_quadwords_from_qemu() -> None:
    assert memory_dump(5, "d", 8, 0, zeros) == (
        "0000000000000000:                    0                    0\n"
        "0000000000000010:                    0                    0\n"
        "0000000000000020:                    0\n"
    )


def test_characters_keep_the_line_size_of_the_unit_size_from_qemu() -> None:
    # /3cg: 'c' forces 1-byte units, but 24 bytes are dumped in 16-byte lines as for size 8.
    assert memory_dump(3, "c", 8, 0xFFFFF, zeros) == (
        "00000000000fffff:" + " '\\x00'" * 16 + "\n" + "000000000010000f:" + " '\\x00'" * 8 + "\n"
    )


def test_octal_quadwords_from_qemu() -> None:
    assert memory_dump(2, "o", 8, 0, zeros) == "0000000000000000:                      0                      0\n"


def test_decimal_halfwords_are_unsigned_below_64_bits_from_qemu() -> None:
    assert memory_dump(2, "d", 2, 0xFFFF0, memory(0xFFFF0, BIOS_RESET)) == "00000000000ffff0: 23530   224\n"
    # lduw_p zero-extends, so %PRId64 of 0xffff prints 65535, not -1.
    assert memory_dump(1, "d", 2, 0, memory(0, b"\xff\xff")) == "0000000000000000: 65535\n"


def test_hex_words_and_bytes_from_qemu() -> None:
    read = memory(0xFFFF0, BIOS_RESET)
    assert memory_dump(2, "x", 4, 0xFFFF0, read) == "00000000000ffff0: 0x00e05bea 0x2f3630f0\n"
    assert memory_dump(2, "x", 1, 0xFFFF0, read) == "00000000000ffff0: 0xea 0x5b\n"
    assert memory_dump(9, "x", 1, 0xFFFF0, read) == (
        "00000000000ffff0: 0xea 0x5b 0xe0 0x00 0xf0 0x30 0x36 0x2f\n00000000000ffff8: 0x00\n"
    ), "bytes go 8 to a line"


def test_unsigned_quadwords() -> None:
    read = memory(0xFFFF0, BIOS_RESET + b"\xff" * 8)
    # 0x2f3630f000e05bea = 3401960375889976298 (19 digits); 2**64 - 1 fills all 20 columns.
    assert memory_dump(2, "u", 8, 0xFFFF0, read) == "00000000000ffff0:  3401960375889976298 18446744073709551615\n"


def test_signed_quadword_minus_one() -> None:
    assert memory_dump(1, "d", 8, 0, memory(0, b"\xff" * 8)) == "0000000000000000:" + " " * 19 + "-1\n"


def test_octal_alternate_form_and_widths() -> None:
    read = memory(0xFFFF0, BIOS_RESET)
    # %#*o: ceil(bits/3) columns, a leading 0 for non-zero values (which may overflow the width).
    assert memory_dump(1, "o", 2, 0xFFFF0, read) == "00000000000ffff0: 055752\n"
    assert memory_dump(1, "o", 1, 0xFFFF0, read) == "00000000000ffff0: 0352\n"
    assert memory_dump(1, "o", 8, 0, memory(0, b"\xff" * 8)) == "0000000000000000: 01777777777777777777777\n"
    assert memory_dump(1, "o", 4, 0, zeros) == "0000000000000000:           0\n"


def test_hex_zero_count_prints_nothing() -> None:
    assert memory_dump(0, "x", 4, 0, zeros) == ""


def test_character_escapes() -> None:
    data = b"A'\\\n\r\t\x7f\x80 ~"
    assert memory_dump(len(data), "c", 1, 0, memory(0, data)) == (
        "0000000000000000: 'A' '\\'' '\\\\' '\\n' '\\r' '\\x09' '\\x7f' '\\x80'\n0000000000000008: ' ' '~'\n"
    )


def test_inaccessible_memory_stops_the_dump() -> None:
    assert memory_dump(4, "x", 4, 0x1000, lambda address, length: None) == "0000000000001000: Cannot access memory\n"

    def first_line_only(address: int, length: int) -> bytes | None:
        return bytes(length) if address < 0x1010 else None

    assert memory_dump(8, "x", 4, 0x1000, first_line_only) == (
        "0000000000001000: 0x00000000 0x00000000 0x00000000 0x00000000\n0000000000001010: Cannot access memory\n"
    )


def test_reads_are_one_line_at_a_time() -> None:
    calls: list[tuple[int, int]] = []

    def read(address: int, length: int) -> bytes | None:
        calls.append((address, length))
        return bytes(length)

    memory_dump(5, "x", 4, 0x100, read)
    assert calls == [(0x100, 16), (0x110, 4)]


# -- the / argument ---------------------------------------------------------------------------------

SPECS = parse_args_type("fmt:/,addr:l")


@pytest.fixture(autouse=True)
def format_defaults() -> Iterator[None]:
    """QEMU's defaults at start-up (x, 4 bytes); restored afterwards for the other tests."""
    saved = (FORMAT_DEFAULTS.format, FORMAT_DEFAULTS.size)
    FORMAT_DEFAULTS.format = "x"
    FORMAT_DEFAULTS.size = 4
    yield
    FORMAT_DEFAULTS.format, FORMAT_DEFAULTS.size = saved


def parse(text: str) -> dict[str, object]:
    return parse_arguments("xp", SPECS, text)


def test_specs() -> None:
    assert [(spec.name, spec.kind, spec.optional) for spec in SPECS] == [("fmt", "/", False), ("addr", "l", False)]


def test_full_format_then_sticky_defaults() -> None:
    assert parse("/4xg 0x200000") == {"count": 4, "format": "x", "size": 8, "addr": 0x200000}
    assert (FORMAT_DEFAULTS.format, FORMAT_DEFAULTS.size) == ("x", 8)
    assert parse("0") == {"count": 1, "format": "x", "size": 8, "addr": 0}
    assert parse("/2d 16") == {"count": 2, "format": "d", "size": 8, "addr": 16}
    assert parse("  0x10") == {"count": 1, "format": "d", "size": 8, "addr": 16}


def test_initial_defaults() -> None:
    assert parse("0") == {"count": 1, "format": "x", "size": 4, "addr": 0}
    assert parse("/ 0") == {"count": 1, "format": "x", "size": 4, "addr": 0}


@pytest.mark.parametrize(
    ("letter", "size"),
    [("b", 1), ("h", 2), ("w", 4), ("g", 8), ("L", 8)],
)
def test_size_letters(letter: str, size: int) -> None:
    assert parse(f"/3{letter} 0") == {"count": 3, "format": "x", "size": size, "addr": 0}
    assert FORMAT_DEFAULTS.size == size


def test_later_letters_win() -> None:
    assert parse("/bxgdh 0") == {"count": 1, "format": "d", "size": 2, "addr": 0}


def test_invalid_format_char() -> None:
    with pytest.raises(HMPSyntaxError) as error:
        parse("/q 0")
    assert str(error.value) == "invalid char in format: 'q'"
    with pytest.raises(HMPSyntaxError, match=r"^invalid char in format: '0'$"):
        parse("/4xg0x200000")
    assert (FORMAT_DEFAULTS.format, FORMAT_DEFAULTS.size) == ("x", 4), "a rejected format changes nothing"


def test_zero_count() -> None:
    assert parse("/0x 0") == {"count": 0, "format": "x", "size": 4, "addr": 0}
    assert parse("/12 0") == {"count": 12, "format": "x", "size": 4, "addr": 0}


def test_instruction_format_has_no_size_and_keeps_the_default_size() -> None:
    parse("/g 0")
    assert parse("/i 0") == {"count": 1, "format": "i", "size": -1, "addr": 0}
    assert (FORMAT_DEFAULTS.format, FORMAT_DEFAULTS.size) == ("i", 8)
    assert parse("0") == {"count": 1, "format": "i", "size": -1, "addr": 0}
    assert parse("/5ib 0") == {"count": 5, "format": "i", "size": 1, "addr": 0}
    assert FORMAT_DEFAULTS.size == 8, "a size given with 'i' is not remembered"
    assert parse("/x 0") == {"count": 1, "format": "x", "size": 8, "addr": 0}


def test_character_format_keeps_the_default_size() -> None:
    parse("/w 0")
    assert parse("/2c 0") == {"count": 2, "format": "c", "size": 4, "addr": 0}
    assert parse("0") == {"count": 1, "format": "c", "size": 4, "addr": 0}


def test_address_is_required() -> None:
    with pytest.raises(HMPSyntaxError, match="unexpected end of expression"):
        parse("/4x")
