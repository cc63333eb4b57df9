"""``x`` and ``xp`` output, laid out exactly as QEMU's monitor prints it (monitor/misc.c memory_dump).

QEMU puts no limit on the count, so a dump can be tens of megabytes of text:
callers build it in a worker thread (CommandContext.in_worker), and the text
is joined from pieces of ``LINES_PER_PIECE`` lines rather than from one list
of a million small strings (which would cost several times the text itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

#: Lines joined into one piece of the text before the pieces are joined.
LINES_PER_PIECE = 4096


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


def _renderer(fmt: str, digits: int) -> Callable[[int], str]:
    """`` <value>`` for one unit; hex, the usual format, is one %-format (a third faster on big dumps)."""
    if fmt == "x":
        return f" 0x%0{digits}x".__mod__
    return lambda value: " " + _value(fmt, value, digits)


def memory_dump(count: int, fmt: str, size: int, address: int, read: Callable[[int, int], bytes | None]) -> str:
    """Dump ``count`` units of ``size`` bytes from ``address``; ``read`` returns None where memory is inaccessible."""
    return "".join(_pieces(count, fmt, size, address, read))


def _pieces(count: int, fmt: str, size: int, address: int, read: Callable[[int, int], bytes | None]) -> Iterator[str]:
    """The dump's text, ``LINES_PER_PIECE`` lines at a time; one read per line, as QEMU reads."""
    length = size * count
    line_size = 8 if size == 1 else 16
    render = _renderer(fmt, _digits(fmt, size))
    if fmt == "c":
        size = 1
    lines: list[str] = []
    while length > 0:
        head = f"{address & 0xFFFF_FFFF_FFFF_FFFF:016x}:"
        chunk = min(length, line_size)
        data = read(address, chunk)
        if data is None:
            lines.append(head + " Cannot access memory\n")
            break
        values = (int.from_bytes(data[at : at + size].ljust(size, b"\0"), "little") for at in range(0, chunk, size))
        lines.append(head + "".join(map(render, values)) + "\n")
        if len(lines) == LINES_PER_PIECE:
            yield "".join(lines)
            lines.clear()
        address += chunk
        length -= chunk
    yield "".join(lines)
