"""Guest RAM: one anonymous shared mapping, mapped at physical 0 in every vCPU engine.

The mapping lives as long as the machine: an engine that still maps it would
crash the process if it were freed (unicorn-facts Q3).
"""

from __future__ import annotations

import ctypes
import mmap


class GuestRAM:
    """The machine's memory."""

    def __init__(self, size: int) -> None:
        #: Size in bytes (a multiple of the page size).
        self.size = (size + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
        self._map = mmap.mmap(-1, self.size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self._anchor = ctypes.c_char.from_buffer(self._map)
        #: Host address of guest physical 0 (for mem_map_ptr).
        self.address = ctypes.addressof(self._anchor)

    def view(self) -> memoryview:
        """All of guest RAM, without a copy (for saving it; vCPUs must be stopped)."""
        return memoryview(self._map)

    def read(self, address: int, length: int) -> bytes:
        """Guest physical bytes (raises ValueError outside RAM)."""
        self._check(address, length)
        return self._map[address : address + length]

    def write(self, address: int, data: bytes) -> None:
        """Store bytes at a guest physical address."""
        self._check(address, len(data))
        self._map[address : address + len(data)] = data

    def read_u64(self, address: int) -> int:
        """A little-endian 64-bit value."""
        return int.from_bytes(self.read(address, 8), "little")

    def contains(self, address: int, length: int) -> bool:
        """Whether [address, address+length) lies in RAM."""
        return address >= 0 and length >= 0 and address + length <= self.size

    def _check(self, address: int, length: int) -> None:
        if not self.contains(address, length):
            raise ValueError(f"guest range {address:#x}+{length:#x} is outside RAM ({self.size:#x} bytes)")
