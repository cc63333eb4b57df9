"""Guest RAM: one anonymous shared mapping, mapped at physical 0 in every vCPU engine.

The mapping lives as long as the machine: an engine that still maps it would
crash the process if it were freed (unicorn-facts Q3).  Also the process's
huge-page policy (disable_huge_pages).  ctypes (~3 ms to import) comes with the
first access to the RAM's pages or address: a start that touches no RAM (libvirt's
probe) never loads it.
"""

from __future__ import annotations

import mmap
from functools import cache
from typing import Any

_LOW_BIT = bytes(value & 1 for value in range(256))
_PR_SET_THP_DISABLE = 41


@cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


@cache
def disable_huge_pages() -> bool:
    """No transparent huge pages for this process (PR_SET_THP_DISABLE); True if it took.

    Unicorn maps a translation buffer per engine and writes a little code at its start; with THP
    set to "always" the kernel backs that with a 2 MiB page, 2 of the ~2.9 MiB an online vCPU cost.
    Guest RAM is touched sparsely too, so it loses nothing that matters (save and restore of
    1 GiB: no measurable change).  The setting is checked at each page fault, so it is made once,
    before the first: an engine's (VCPUEngine calls it) or guest RAM's (GuestRAM's accessors do).
    """
    prctl = getattr(_libc(), "prctl", None)
    return prctl is not None and prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0


class GuestRAM:
    """The machine's memory."""

    def __init__(self, size: int) -> None:
        #: Size in bytes (a multiple of the page size).
        self.size = (size + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
        self._map = mmap.mmap(-1, self.size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self._address: int | None = None

    @property
    def address(self) -> int:
        """Host address of guest physical 0 (for mem_map_ptr); from then on the mapping is pinned
        (an exported buffer: it can no longer be closed or resized)."""
        if self._address is None:
            import ctypes

            disable_huge_pages()
            self._anchor = ctypes.c_char.from_buffer(self._map)
            self._address = ctypes.addressof(self._anchor)
        return self._address

    def touched_chunks(self, chunk: int) -> bytes:
        """One byte per ``chunk`` bytes of RAM: 1 where some page is resident (maybe non-zero),
        0 where no page has ever been touched (certainly zero).

        From mincore(2), so a save need not read (and thereby allocate) untouched RAM.
        """
        import ctypes

        pages = self.size // mmap.PAGESIZE
        vector = (ctypes.c_ubyte * pages)()
        if _libc().mincore(ctypes.c_void_p(self.address), ctypes.c_size_t(self.size), vector) != 0:
            return b"\x01" * ((self.size + chunk - 1) // chunk)
        resident = bytes(vector).translate(_LOW_BIT)  # bit 0: resident; the others are reserved
        per_chunk = max(1, chunk // mmap.PAGESIZE)
        return bytes(1 if 1 in resident[start : start + per_chunk] else 0 for start in range(0, pages, per_chunk))

    def view(self) -> memoryview:
        """All of guest RAM, without a copy (for saving it; vCPUs must be stopped)."""
        disable_huge_pages()
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
        disable_huge_pages()  # before this access's page faults
        if not self.contains(address, length):
            raise ValueError(f"guest range {address:#x}+{length:#x} is outside RAM ({self.size:#x} bytes)")
