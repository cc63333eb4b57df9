"""``x`` and ``xp`` output, laid out exactly as QEMU's monitor prints it (monitor/misc.c memory_dump)."""

from __future__ import annotations

from collections.abc import Callable


def _digits(fmt: str, size: int) -> int:
    bits = size * 8
    if fmt == "o":
        return -(-bits // 3)
    if fmt in ("u", "d"):
        return -(-bits * 10 // 33)
    return bits // 4


def _char(value: int) -> str:
    escapes = {ord("'"): "\\'", ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r"}
    if value in escapes:
        return f"'{escapes[value]}'"
    if 32 <= value <= 126:
        return f"'{chr(value)}'"
    return f"'\\x{value:02x}'"


def _value(fmt: str, value: int, digits: int) -> str:
    if fmt == "o":
        return f"{'0' + format(value, 'o') if value else '0':>{digits}}"
    if fmt == "u":
        return f"{value:>{digits}}"
    if fmt == "d":
        signed = value - (1 << 64) if value >= 1 << 63 else value
        return f"{signed:>{digits}}"
    if fmt == "c":
        return _char(value)
    return f"0x{value:0{digits}x}"


def memory_dump(count: int, fmt: str, size: int, address: int, read: Callable[[int, int], bytes | None]) -> str:
    """Dump ``count`` units of ``size`` bytes from ``address``; ``read`` returns None where memory is inaccessible."""
    length = size * count
    line_size = 8 if size == 1 else 16
    digits = _digits(fmt, size)
    if fmt == "c":
        size = 1
    out = []
    while length > 0:
        line = [f"{address & 0xFFFF_FFFF_FFFF_FFFF:016x}:"]
        chunk = min(length, line_size)
        data = read(address, chunk)
        if data is None:
            out.append(line[0] + " Cannot access memory\n")
            break
        for offset in range(0, chunk, size):
            value = int.from_bytes(data[offset : offset + size].ljust(size, b"\0"), "little")
            line.append(" " + _value(fmt, value, digits))
        out.append("".join(line) + "\n")
        address += chunk
        length -= chunk
    return "".join(out)
