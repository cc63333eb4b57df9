"""Local APIC registers at 0xFEE00000: what a firmware reads to identify itself and writes to start CPUs.

Values follow the Intel SDM (vol. 3A ch. 10/11) and QEMU's hw/intc/apic.c
(version 0x14 with max LVT entry 5; LDR keeps bits 31:24, DFR bits 31:28 with
the rest read as ones).  An ICR low write sends exactly one IPI, decoded from
the delivery mode (bits 10:8), the shorthand (bits 19:18) and the destination
in ICR high, except the INIT level de-assert that QEMU ignores.
"""

from __future__ import annotations

import pytest

from qmpd.devices.lapic import (
    APIC_VERSION,
    DELIVERY_FIXED,
    DELIVERY_INIT,
    DELIVERY_STARTUP,
    DEST_ALL,
    DEST_ALL_BUT_SELF,
    DEST_FIELD,
    DEST_SELF,
    LocalAPIC,
    extended_destination,
)
from qmpd.machine.qom_tree import new_object

ID, VERSION, TPR, EOI, LDR, DFR, SVR, ICR_LOW, ICR_HIGH = 0x20, 0x30, 0x80, 0xB0, 0xD0, 0xE0, 0xF0, 0x300, 0x310

IPI = tuple[int, int, int, int, int]


@pytest.fixture
def sent() -> list[IPI]:
    return []


@pytest.fixture
def apic(sent: list[IPI]) -> LocalAPIC:
    """An APIC as CPUSlots.plug makes it (APIC ID 5), with IPIs recorded."""
    lapic = new_object("apic")
    assert isinstance(lapic, LocalAPIC)
    lapic.apic_id = 5

    def record(source: int, shorthand: int, destination: int, mode: int, vector: int) -> None:
        sent.append((source, shorthand, destination, mode, vector))

    lapic.send_ipi = record
    return lapic


def send(apic: LocalAPIC, high: int, low: int) -> None:
    apic.mmio_write(ICR_HIGH, 4, high)
    apic.mmio_write(ICR_LOW, 4, low)


def test_id_and_version(apic: LocalAPIC) -> None:
    assert apic.mmio_read(ID, 4) == 0x0500_0000
    apic.apic_id = 0xFE
    assert apic.mmio_read(ID, 4) == 0xFE00_0000
    assert APIC_VERSION == 0x14
    assert apic.mmio_read(VERSION, 4) == 0x0005_0014, "version 0x14, max LVT entry 5 (6 LVTs), no EOI suppression"
    assert apic.get_property("version") == 0x14


def test_power_on_values(apic: LocalAPIC) -> None:
    assert [apic.mmio_read(register, 4) for register in (TPR, LDR, DFR, SVR, ICR_LOW, ICR_HIGH)] == [
        0, 0, 0xFFFF_FFFF, 0xFF, 0, 0,
    ]  # fmt: skip


def test_registers_read_back_with_their_writable_bits(apic: LocalAPIC) -> None:
    apic.mmio_write(TPR, 4, 0x1234)
    apic.mmio_write(LDR, 4, 0x1234_5678)
    apic.mmio_write(DFR, 4, 0x0000_0000)
    apic.mmio_write(SVR, 4, 0xFFFF_EDAB)  # bits 8 and 7:0 kept; 9, 12 clear here; 10, 11, 13+ reserved
    assert apic.mmio_read(TPR, 4) == 0x34
    assert apic.mmio_read(LDR, 4) == 0x1200_0000
    assert apic.mmio_read(DFR, 4) == 0x0FFF_FFFF, "cluster model: bits 31:28 = 0, the rest reads as ones"
    assert apic.mmio_read(SVR, 4) == 0x1AB
    apic.mmio_write(SVR, 4, 0x1FF)
    assert apic.mmio_read(SVR, 4) == 0x1FF
    apic.reset_registers()
    assert apic.mmio_read(SVR, 4) == 0xFF and apic.mmio_read(TPR, 4) == 0 and apic.mmio_read(LDR, 4) == 0


def test_unknown_registers_read_zero_and_writes_send_nothing(apic: LocalAPIC, sent: list[IPI]) -> None:
    apic.mmio_write(EOI, 4, 0)
    apic.mmio_write(0x100, 4, 0xFFFF_FFFF)  # ISR: read-only
    assert apic.mmio_read(0x100, 4) == 0
    assert apic.mmio_read(0x3E0, 4) == 0
    apic.mmio_write(ICR_HIGH, 4, 0x0300_0000)
    assert sent == [], "only the low ICR word sends"


@pytest.mark.parametrize(
    ("low", "expected"),
    [
        (0x0000_4500, (DEST_FIELD, DELIVERY_INIT, 0x00)),  # INIT, level assert
        (0x0000_4608, (DEST_FIELD, DELIVERY_STARTUP, 0x08)),  # STARTUP at 0x8000
        (0x0000_46FF, (DEST_FIELD, DELIVERY_STARTUP, 0xFF)),
        (0x0000_0040, (DEST_FIELD, DELIVERY_FIXED, 0x40)),
        (0x0004_0031, (DEST_SELF, DELIVERY_FIXED, 0x31)),
        (0x0008_4500, (DEST_ALL, DELIVERY_INIT, 0x00)),
        (0x000C_4500, (DEST_ALL_BUT_SELF, DELIVERY_INIT, 0x00)),
        (0x000C_4610, (DEST_ALL_BUT_SELF, DELIVERY_STARTUP, 0x10)),
    ],
)
def test_icr_low_write_sends_one_ipi(
    apic: LocalAPIC, sent: list[IPI], low: int, expected: tuple[int, int, int]
) -> None:
    send(apic, 0x0300_0000, low)
    shorthand, mode, vector = expected
    assert sent == [(5, shorthand, 3, mode, vector)]


def test_init_level_deassert_is_not_sent(apic: LocalAPIC, sent: list[IPI]) -> None:
    send(apic, 0x0300_0000, 0x0000_8500)  # INIT, level 0, trigger level: the old 82489DX de-assert
    assert sent == []
    send(apic, 0x0300_0000, 0x0000_C500)  # level 1: an ordinary INIT
    assert sent == [(5, DEST_FIELD, 3, DELIVERY_INIT, 0)]


def test_icr_reads_back_without_delivery_status(apic: LocalAPIC) -> None:
    send(apic, 0x0700_0000, 0x0000_5608)  # bit 12 (delivery status) is read-only
    assert apic.mmio_read(ICR_LOW, 4) == 0x0000_4608
    assert apic.mmio_read(ICR_HIGH, 4) == 0x0700_0000


def test_destination_uses_the_last_icr_high(apic: LocalAPIC, sent: list[IPI]) -> None:
    send(apic, 0x0100_0000, 0x4500)
    apic.mmio_write(ICR_LOW, 4, 0x4609)  # ICR high unchanged: same target
    assert [ipi[2] for ipi in sent] == [1, 1]


def test_extended_destination_bits() -> None:
    assert extended_destination(0xFF00_0000) == 0xFF
    assert extended_destination(0x0000_00FF) == 0, "bits 7:0 are not part of any destination"
    assert extended_destination(0x2300_0100) == 0x123
    assert extended_destination(0x0000_0300) == 0x300
    assert extended_destination(0x00FF_FF00) == 0xFF_FF00


def test_ipi_to_an_extended_apic_id(apic: LocalAPIC, sent: list[IPI]) -> None:
    apic.apic_id = 0x1FF
    send(apic, 0xFE00_0300, 0x4500)  # APIC ID 0x3FE as qmpd's firmware encodes it
    assert sent == [(0x1FF, DEST_FIELD, 0x3FE, DELIVERY_INIT, 0)]


def test_no_sender_is_harmless() -> None:
    lapic = new_object("apic")
    assert isinstance(lapic, LocalAPIC)
    send(lapic, 0, 0x4500)
    assert lapic.mmio_read(ICR_LOW, 4) == 0x4500


def test_lint1_lets_an_nmi_through_only_unmasked_with_delivery_mode_nmi(apic: LocalAPIC) -> None:
    assert apic.mmio_read(0x360, 4) == 0x10000 and apic.mmio_read(0x350, 4) == 0x10000, "masked at power-on"
    assert not apic.takes_nmi()
    apic.mmio_write(0x360, 4, 0x400)
    assert apic.takes_nmi() and apic.mmio_read(0x360, 4) == 0x400
    apic.mmio_write(0x360, 4, 0x10400)
    assert not apic.takes_nmi(), "masked"
    apic.mmio_write(0x360, 4, 0x000)
    assert not apic.takes_nmi(), "fixed delivery: not an NMI"
    apic.mmio_write(0x360, 4, 0x400)
    apic.reset_registers()
    assert not apic.takes_nmi()


def test_a_version_1_state_has_masked_lint_entries(apic: LocalAPIC) -> None:
    apic.mmio_write(0x360, 4, 0x400)
    saved = apic.save_state()
    assert saved["lint1"] == 0x400
    old = {key: value for key, value in saved.items() if key not in ("lint0", "lint1")}
    apic.load_state(LocalAPIC.check_state(old, 1))
    assert not apic.takes_nmi()
    apic.load_state(LocalAPIC.check_state(saved, 2))
    assert apic.takes_nmi()
