"""Guest memory reads for the monitor: physical ranges and x86-64 4-level address translation.

The page tables are built by hand in a 4 MiB GuestRAM, entry by entry as the
Intel SDM (vol. 3A 4.5) lays them out, so every expected physical address is
worked out from the entries, not from the translator.  The CR tuple of a
snapshot is (CR0, CR2, CR3, CR4): CR2 is set to garbage to catch a wrong index.
"""

from __future__ import annotations

import pytest

from qmpd.machine.guest_memory import read_physical, read_physical_or_zeros, read_virtual, translate
from qmpd.vcpu.ram import GuestRAM
from qmpd.vcpu.snapshot import CPUSnapshot

RAM_SIZE = 4 << 20
P, RW, PS = 1, 2, 1 << 7
NX = 1 << 63
PAT_LARGE = 1 << 12  # PAT bit of a 2 MiB / 1 GiB entry: not an address bit
CR0_PE_ET = 0x11
CR0_PG = 1 << 31

PML4, PDPT, PD, PT = 0x1000, 0x2000, 0x3000, 0x4000


def va(pml4: int, pdpt: int, pd: int, pt: int, offset: int) -> int:
    """A virtual address from its table indexes, sign-extended from bit 47."""
    address = pml4 << 39 | pdpt << 30 | pd << 21 | pt << 12 | offset
    return address | (0xFFFF << 48 if address >> 47 & 1 else 0)


def write_entry(ram: GuestRAM, table: int, index: int, value: int) -> None:
    ram.write(table + 8 * index, value.to_bytes(8, "little"))


def paging(cr3: int) -> CPUSnapshot:
    return CPUSnapshot.powered_off()._replace(cr=(CR0_PE_ET | CR0_PG, 0xDEAD_B000, cr3, 0x20))


@pytest.fixture
def ram() -> GuestRAM:
    """RAM with a 4-level hierarchy:

    PML4[1] and PML4[511] -> PDPT; PDPT[2] -> PD; PDPT[3] = 1 GiB page at 0x4000_0000;
    PD[3] -> PT; PD[5] = 2 MiB page at 0x20_0000; PT[4] -> 0x1_0000 (NX set); PT[5] -> 0x3_0000;
    PT[6] -> a page beyond RAM; PD[7] -> a page table beyond RAM; everything else not present.
    """
    memory = GuestRAM(RAM_SIZE)
    write_entry(memory, PML4, 1, PDPT | P | RW)
    write_entry(memory, PML4, 511, PDPT | P)
    write_entry(memory, PML4, 2, PDPT | RW)  # not present
    write_entry(memory, PDPT, 2, PD | P | RW)
    write_entry(memory, PDPT, 3, 0x4000_0000 | PAT_LARGE | PS | P)
    write_entry(memory, PD, 3, PT | P | RW)
    write_entry(memory, PD, 5, 0x20_0000 | PAT_LARGE | PS | P | RW)
    write_entry(memory, PD, 7, 0x8000_0000 | P)
    write_entry(memory, PT, 4, NX | 0x1_0000 | P | RW)
    write_entry(memory, PT, 5, 0x3_0000 | P)
    write_entry(memory, PT, 6, 0x7000_0000 | P)
    return memory


# -- physical ---------------------------------------------------------------------------------------


def test_read_physical_inside_and_outside_ram(ram: GuestRAM) -> None:
    ram.write(0x1234, b"\x01\x02\x03")
    ram.write(RAM_SIZE - 2, b"\xaa\xbb")
    assert read_physical(ram, 0x1234, 3) == b"\x01\x02\x03"
    assert read_physical(ram, RAM_SIZE - 2, 2) == b"\xaa\xbb"
    assert read_physical(ram, RAM_SIZE - 2, 3) is None, "one byte past the end"
    assert read_physical(ram, RAM_SIZE, 1) is None
    assert read_physical(ram, -1, 2) is None
    assert read_physical(ram, 0xFEE0_0000, 4) is None, "the APIC page is not RAM"


def test_read_physical_or_zeros(ram: GuestRAM) -> None:
    ram.write(0, b"head")
    ram.write(RAM_SIZE - 4, b"tail")
    assert read_physical_or_zeros(ram, 0, 4) == b"head"
    assert read_physical_or_zeros(ram, RAM_SIZE + 100, 6) == bytes(6)
    assert read_physical_or_zeros(ram, RAM_SIZE - 4, 8) == b"tail" + bytes(4), "partial overlap"
    assert read_physical_or_zeros(ram, (1 << 64) - 1, 1) == b"\0"
    assert read_physical_or_zeros(ram, -1, 1) == b"\0", "a negative address is 2**64 - n"
    assert read_physical_or_zeros(ram, 0, 0) == b""


def test_read_physical_or_zeros_wraps_to_address_zero(ram: GuestRAM) -> None:
    """pmemsave of a range that crosses 2**64 continues at physical 0, as QEMU's hwaddr arithmetic does."""
    ram.write(0, b"head")
    assert read_physical_or_zeros(ram, (1 << 64) - 3, 7) == bytes(3) + b"head"
    assert read_physical_or_zeros(ram, -3, 7) == bytes(3) + b"head", "a negative address is 2**64 - n"
    assert read_physical_or_zeros(ram, (1 << 64) - 2, RAM_SIZE + 4) == bytes(2) + ram.read(0, RAM_SIZE) + bytes(2)


# -- translation ------------------------------------------------------------------------------------


def test_no_paging_is_identity(ram: GuestRAM) -> None:
    cpu = CPUSnapshot.powered_off()
    assert cpu.cr[0] & CR0_PG == 0
    assert translate(ram, cpu, 0x1234_5678) == 0x1234_5678
    assert translate(ram, cpu, 0x8000_0000_0000) == 0x8000_0000_0000, "no canonical check without paging"
    long_mode = cpu._replace(cr=(CR0_PE_ET, 0, PML4, 0x20))
    assert translate(ram, long_mode, va(1, 2, 3, 4, 0x567)) == va(1, 2, 3, 4, 0x567)


def test_4k_page(ram: GuestRAM) -> None:
    cpu = paging(PML4)
    assert va(1, 2, 3, 4, 0x567) == 0x80_8060_4567
    assert translate(ram, cpu, 0x80_8060_4567) == 0x1_0567, "NX (bit 63) is not part of the address"
    assert translate(ram, cpu, va(1, 2, 3, 5, 0)) == 0x3_0000
    assert translate(ram, cpu, va(1, 2, 3, 5, 0xFFF)) == 0x3_0FFF


def test_upper_half_canonical_address(ram: GuestRAM) -> None:
    address = va(511, 2, 3, 4, 0x10)
    assert address == 0xFFFF_FF80_8060_4010
    assert translate(ram, paging(PML4), address) == 0x1_0010


def test_2m_page(ram: GuestRAM) -> None:
    assert translate(ram, paging(PML4), va(1, 2, 5, 0x12, 0x345)) == 0x21_2345, "PAT bit 12 ignored"
    assert translate(ram, paging(PML4), va(1, 2, 5, 0x1FF, 0xFFF)) == 0x3F_FFFF


def test_1g_page(ram: GuestRAM) -> None:
    assert translate(ram, paging(PML4), va(1, 3, 0, 0x123, 0x456)) == 0x4012_3456
    assert translate(ram, paging(PML4), va(1, 3, 0x1FF, 0x1FF, 0xFFF)) == 0x7FFF_FFFF


def test_cr3_flag_bits_are_not_address_bits(ram: GuestRAM) -> None:
    assert translate(ram, paging(PML4 | 0x18), va(1, 2, 3, 4, 1)) == 0x1_0001, "PWT/PCD"
    assert translate(ram, paging(PML4 | 0x7FF), va(1, 2, 3, 4, 2)) == 0x1_0002, "a PCID"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        (va(0, 0, 0, 0, 0), "PML4[0] empty"),
        (va(2, 2, 3, 4, 0), "PML4[2] has P clear"),
        (va(1, 0, 0, 0, 0), "PDPT[0] empty"),
        (va(1, 2, 0, 0, 0), "PD[0] empty"),
        (va(1, 2, 3, 0, 0), "PT[0] empty"),
        (va(1, 2, 7, 0, 0), "the page table would be beyond RAM"),
        (0x0000_8000_0000_0000, "non-canonical: bit 47 set, 63:48 clear"),
        (0xFFFF_0000_0000_0000, "non-canonical: bit 47 clear, 63:48 set"),
        (0x7FFF_FFFF_FFFF_FFFF, "non-canonical"),
    ],
)
def test_unmapped_addresses(ram: GuestRAM, address: int, why: str) -> None:
    assert translate(ram, paging(PML4), address) is None, why


def test_page_beyond_ram_translates_but_cannot_be_read(ram: GuestRAM) -> None:
    address = va(1, 2, 3, 6, 0x10)
    assert translate(ram, paging(PML4), address) == 0x7000_0010
    assert read_virtual(ram, paging(PML4), address, 1) is None


# -- virtual reads ----------------------------------------------------------------------------------


def test_read_virtual_across_non_adjacent_pages(ram: GuestRAM) -> None:
    ram.write(0x1_0FFC, b"ABCD")
    ram.write(0x3_0000, b"EFGH")
    ram.write(0x1_1000, b"no!!")  # what an identity continuation would read
    cpu = paging(PML4)
    assert read_virtual(ram, cpu, va(1, 2, 3, 4, 0xFFC), 8) == b"ABCDEFGH"
    assert read_virtual(ram, cpu, va(1, 2, 3, 4, 0xFFE), 2) == b"CD"
    assert read_virtual(ram, cpu, va(1, 2, 3, 4, 0), 0) == b""


def test_read_virtual_fails_if_any_page_is_unmapped(ram: GuestRAM) -> None:
    ram.write(0x3_0FFF, b"Z")
    cpu = paging(PML4)
    assert read_virtual(ram, cpu, va(1, 2, 3, 5, 0xFFF), 1) == b"Z"
    assert read_virtual(ram, cpu, va(1, 2, 3, 5, 0xFFF), 2) is None, "PT[6] maps a page outside RAM"
    assert read_virtual(ram, cpu, va(1, 2, 3, 3, 0xFFF), 2) is None, "PT[3] is empty"


def test_read_virtual_without_paging_is_physical(ram: GuestRAM) -> None:
    ram.write(0x2FFE, b"wxyz")
    cpu = CPUSnapshot.powered_off()
    assert read_virtual(ram, cpu, 0x2FFE, 4) == b"wxyz"
    assert read_virtual(ram, cpu, RAM_SIZE - 1, 2) is None
