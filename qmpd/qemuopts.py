"""QEMU's ``key=value,key=value`` option strings (QemuOpts), sizes and booleans.

Rules kept from util/qemu-option.c: the first item may omit its key (an
"implied" key such as ``type`` for ``-machine pc``); ``,,`` is a literal
comma inside a value; a bare ``flag`` means ``flag=on`` and ``noflag`` means
``flag=off``.
"""

from __future__ import annotations

import re
from collections.abc import Callable


class OptionError(ValueError):
    """An option string or value QEMU would reject; the text is QEMU's."""


def _value(text: str, pos: int) -> tuple[str, int]:
    """The text from ``pos`` to the next single comma (``,,`` is a literal comma), and where it stopped."""
    out: list[str] = []
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch == ",":
            if pos + 1 < n and text[pos + 1] == ",":
                out.append(",")
                pos += 2
                continue
            break
        out.append(ch)
        pos += 1
    return "".join(out), pos


def split_items(text: str) -> list[str]:
    """The items between single commas (``,,`` is a literal comma, in names too)."""
    items: list[str] = []
    pos = 0
    while True:
        item, pos = _value(text, pos)
        items.append(item)
        if pos >= len(text):
            return items
        pos += 1


def parse(text: str, implied: str | None = None) -> list[tuple[str, str]]:
    """Split an option string into (key, value) pairs, in order."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    n = len(text)
    first = True
    while pos < n:
        match = re.compile(r"[^=,]*").match(text, pos)
        assert match is not None
        end = match.end()
        if end >= n or text[end] != "=":
            if first and implied is not None:
                value, pos = _value(text, pos)
                pairs.append((implied, value))
            else:
                name = text[pos:end]
                pos = end
                if name.startswith("no"):
                    pairs.append((name[2:], "off"))
                else:
                    pairs.append((name, "on"))
        else:
            name = text[pos:end]
            value, pos = _value(text, end + 1)
            pairs.append((name, value))
        first = False
        if pos < n and text[pos] == ",":
            pos += 1
    return pairs


_TRUE = {"on", "yes", "true", "y"}
_FALSE = {"off", "no", "false", "n"}


def parse_bool(name: str, value: str, error: Callable[[str], Exception] = OptionError) -> bool:
    """QEMU's boolean words (qapi_bool_parse), for options and properties given as text.

    ``error`` is the caller's exception class: the text is the same everywhere, the error tree is not.
    """
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise error(f"Parameter '{name}' expects 'on' or 'off'")


_SUFFIXES = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_SIZE_ERROR = (
    "Parameter 'size' expects a non-negative number below 2^64\n"
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively."
)


def parse_size(text: str, default_suffix: str = "B") -> int:
    """A size with an optional k/M/G/T/P/E suffix (``-m 128`` means MiB)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|0[xX][0-9a-fA-F]+)([bBkKmMgGtTpPeE]?)", text)
    if not match:
        raise OptionError(_SIZE_ERROR)
    number, suffix = match.groups()
    shift = _SUFFIXES[(suffix or default_suffix).lower()]
    if number.lower().startswith("0x"):
        if suffix:
            raise OptionError(_SIZE_ERROR)
        value = int(number, 16)
    elif "." in number:
        value = int(float(number) * (1 << shift))
        shift = 0
    else:
        value = int(number)
    value <<= shift
    if value >= 1 << 64:
        raise OptionError(_SIZE_ERROR)
    return value
