"""The I/O APIC's registers as QEMU's ioapic shows them, and where it sends the SCI."""

from __future__ import annotations

import pytest

from qmpd.devices.ioapic import IOAPIC, SCI_GSI
from qmpd.vmstate import StateError

IOREGSEL, IOWIN = 0x00, 0x10


def write(ioapic: IOAPIC, index: int, value: int) -> None:
    ioapic.mmio_write(IOREGSEL, 4, index)
    ioapic.mmio_write(IOWIN, 4, value)


def read(ioapic: IOAPIC, index: int) -> int:
    ioapic.mmio_write(IOREGSEL, 4, index)
    return ioapic.mmio_read(IOWIN, 4)


def test_identification_registers_are_qemus() -> None:
    ioapic = IOAPIC()
    assert read(ioapic, 1) == 0x170020, "version 0x20, 24 entries"
    assert read(ioapic, 0) == 0
    write(ioapic, 0, 0x0F00_0000 | 0xFF)
    assert read(ioapic, 0) == 0x0F00_0000 and read(ioapic, 2) == 0x0F00_0000
    assert read(ioapic, 3) == 0xFFFFFFFF and read(ioapic, 0x10 + 2 * 24) == 0xFFFFFFFF, "no such register"
    assert ioapic.mmio_read(IOREGSEL, 4) == 0x10 + 2 * 24


def test_entries_power_on_masked_and_keep_read_only_bits() -> None:
    ioapic = IOAPIC()
    assert [read(ioapic, 0x10 + n) for n in range(4)] == [0x10000, 0, 0x10000, 0]
    write(ioapic, 0x10 + 2 * SCI_GSI, 0xFFFF_FFFF)
    assert read(ioapic, 0x10 + 2 * SCI_GSI) == 0xFFFF_AFFF, "delivery status and remote IRR are read-only"


def test_the_sci_goes_where_the_guest_routes_it() -> None:
    ioapic = IOAPIC()
    assert ioapic.destination(SCI_GSI) is None, "masked: every CPU is woken, as before there was an I/O APIC"
    write(ioapic, 0x11 + 2 * SCI_GSI, 5 << 24)
    write(ioapic, 0x10 + 2 * SCI_GSI, 0x30)
    assert ioapic.destination(SCI_GSI) == 5
    write(ioapic, 0x10 + 2 * SCI_GSI, 0x30 | 1 << 11)
    assert ioapic.destination(SCI_GSI) is None, "a logical destination wakes every CPU"
    write(ioapic, 0x10 + 2 * SCI_GSI, 0x30 | 1 << 16)
    assert ioapic.destination(SCI_GSI) is None
    ioapic.mmio_write(IOWIN, 2, 0x30)
    assert ioapic.destination(SCI_GSI) is None, "a 16-bit write to IOWIN is ignored, as by QEMU"


def test_state_round_trip_and_a_bad_table_is_refused() -> None:
    ioapic = IOAPIC()
    write(ioapic, 0x11 + 2 * SCI_GSI, 2 << 24)
    write(ioapic, 0x10 + 2 * SCI_GSI, 0x30)
    saved = ioapic.save_state()
    other = IOAPIC()
    other.load_state(IOAPIC.check_state(saved, 1))
    assert other.destination(SCI_GSI) == 2 and other.save_state() == saved
    with pytest.raises(StateError, match="table"):
        IOAPIC.check_state({**saved, "table": [0] * 23}, 1)
    other.reset_registers()
    assert other.destination(SCI_GSI) is None
