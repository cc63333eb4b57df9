"""QEMU's integer types and their ranges (shared by QAPI arguments and QOM properties)."""

from __future__ import annotations

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
