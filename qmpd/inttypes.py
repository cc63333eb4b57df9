"""QEMU's integer types and their ranges (shared by QAPI arguments and QOM properties)."""

from __future__ import annotations

import re

#: Value range of each QEMU integer type name.
INT_RANGES: dict[str, tuple[int, int]] = {
    "int": (-(1 << 63), (1 << 63) - 1),
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint8": (0, (1 << 8) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
    "size": (0, (1 << 64) - 1),
}


def is_unsigned(type_name: str) -> bool:
    """uint* and size."""
    return type_name.startswith("uint") or type_name == "size"


def parse_c_integer(text: str, *, unsigned: bool) -> int | None:
    """qemu_strtoi64/qemu_strtou64 with base 0: the whole text, C's 0x and 0 prefixes, overflow refused.

    Unsigned input may be negative: strtoull wraps it, as QEMU's visitors accept ``-1`` for a uint64.
    """
    match = re.fullmatch(_C_INTEGER, text)
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[:2].lower() == "0x":
        value = int(digits, 16)
    elif digits.startswith("0") and len(digits) > 1:
        value = int(digits, 8)
    else:
        value = int(digits)
    if unsigned:
        if value >= 1 << 64:
            return None
        return (-value) % (1 << 64) if sign == "-" else value
    value = -value if sign == "-" else value
    return value if -(1 << 63) <= value < 1 << 63 else None


#: Compiled with the first integer option (-device, -cpu), in re's cache: most starts have none.
_C_INTEGER = r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)"
