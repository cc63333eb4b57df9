"""Reading guest memory for the monitor: physical reads and a CPU's virtual addresses.

Guest RAM is the only memory a monitor can read (QEMU's ``x``/``xp``/
``memsave``/``pmemsave`` report anything else as inaccessible).  A virtual
address is translated with the CPU's own page tables when it has paging on
(4-level x86-64 paging: 4 KiB, 2 MiB and 1 GiB pages); without paging,
virtual equals physical, which is how qmpd starts every CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from qmpd.vcpu.ram import GuestRAM

if TYPE_CHECKING:
    from qmpd.vcpu.snapshot import CPUSnapshot

PAGE_SIZE = 4096
CR0_PG = 1 << 31
_PRESENT = 1
_LARGE = 1 << 7
_ADDRESS = 0x000F_FFFF_FFFF_F000


def read_physical(ram: GuestRAM, address: int, length: int) -> bytes | None:
    """``length`` bytes at a physical address, or None if any of them is outside RAM."""
    if address < 0 or not ram.contains(address, length):
        return None
    return ram.read(address, length)


def read_physical_or_zeros(ram: GuestRAM, address: int, length: int) -> bytes:
    """``length`` bytes at a physical address (wrapping at 2**64), zeros where there is no RAM."""
    address &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray(length)
    start = max(address, 0)
    end = min(address + length, ram.size)
    if start < end:
        out[start - address : end - address] = ram.read(start, end - start)
    wrapped = address + length - (1 << 64)
    if wrapped > 0:  # the range wraps round to address 0
        offset, taken = length - wrapped, min(wrapped, ram.size)
        out[offset : offset + taken] = ram.read(0, taken)
    return bytes(out)


def physical_chunks(ram: GuestRAM, address: int, length: int, chunk: int) -> Iterator[bytes]:
    """``read_physical_or_zeros`` of a range, ``chunk`` bytes at a time (a big dump never sits in memory)."""
    for offset in range(0, length, chunk):
        yield read_physical_or_zeros(ram, address + offset, min(chunk, length - offset))


def virtual_mapped(ram: GuestRAM, cpu: CPUSnapshot, address: int, length: int) -> bool:
    """Whether every byte of a virtual range is mapped to RAM for ``cpu`` (one walk per page, no copy)."""
    while length > 0:
        step = min(length, PAGE_SIZE - (address & (PAGE_SIZE - 1)))
        physical = translate(ram, cpu, address)
        if physical is None or not ram.contains(physical, step):
            return False
        address = (address + step) & 0xFFFF_FFFF_FFFF_FFFF
        length -= step
    return True


def translate(ram: GuestRAM, cpu: CPUSnapshot, address: int) -> int | None:
    """Physical address of virtual ``address`` for this CPU, or None if it is not mapped."""
    if not cpu.cr[0] & CR0_PG:
        return address
    if not _canonical(address):
        return None
    table = cpu.cr[2] & _ADDRESS
    for level, shift in enumerate((39, 30, 21, 12)):
        entry_address = table + ((address >> shift) & 0x1FF) * 8
        if not ram.contains(entry_address, 8):
            return None
        entry = ram.read_u64(entry_address)
        if not entry & _PRESENT:
            return None
        if level in (1, 2) and entry & _LARGE:
            size = 1 << shift
            return (entry & _ADDRESS & ~(size - 1)) | (address & (size - 1))
        table = entry & _ADDRESS
    return table | (address & (PAGE_SIZE - 1))


def read_virtual(ram: GuestRAM, cpu: CPUSnapshot, address: int, length: int) -> bytes | None:
    """``length`` bytes at a virtual address of ``cpu``, page by page; None if any is inaccessible."""
    out = bytearray()
    while length > 0:
        chunk = min(length, PAGE_SIZE - (address & (PAGE_SIZE - 1)))
        physical = translate(ram, cpu, address)
        data = None if physical is None else read_physical(ram, physical, chunk)
        if data is None:
            return None
        out += data
        address = (address + chunk) & 0xFFFF_FFFF_FFFF_FFFF
        length -= chunk
    return bytes(out)


def _canonical(address: int) -> bool:
    top = address >> 47
    return top in (0, 0x1FFFF)
