"""The I/O APIC at 0xFEC00000, as far as the SCI needs it: where the guest routes GSI 9.

QEMU's pc and q35 wire the ACPI SCI to GSI 9 of an 82093AA-style I/O APIC
(``ioapic``, version 0x20, 24 pins).  qmpd models its registers (IOREGSEL at
offset 0, IOWIN at 0x10: ID, version, arbitration, the 24 redirection entries)
so a guest programs it as on QEMU, and uses one entry: the SCI's.  An unmasked
entry in physical destination mode sends the SCI to that one APIC ID, which
is what lets 1023 halted CPUs sleep through a hot-plug event that only the
boot CPU handles.  A masked entry, or a logical destination (qmpd has no
logical APIC model), falls back to waking every CPU, which is what qmpd did
before it had an I/O APIC, so a guest that never programs it still sees its
events.  qmpd does not vector interrupts through the IDT: a woken CPU goes on
after its ``hlt`` (see README "One guest image, two emulators").
"""

from __future__ import annotations

import threading
from typing import Any

from qmpd.vmstate import U32, U64, fields, integer, integers

#: Physical base and size of the register window.
IOAPIC_BASE = 0xFEC00000
IOAPIC_SIZE = 0x1000
#: QEMU's ioapic: version 0x20, 24 redirection entries.
IOAPIC_VERSION = 0x20
IOAPIC_PINS = 24
#: The GSI QEMU's pc and q35 give the ACPI SCI.
SCI_GSI = 9
_MASKED = 1 << 16
_LOGICAL = 1 << 11
#: Read-only bits of a redirection entry: delivery status and remote IRR.
_READ_ONLY = 1 << 12 | 1 << 14


class IOAPIC:
    """IOREGSEL, IOWIN and the redirection table; vCPU threads access it, hence the lock."""

    #: Its section of a saved machine (qmpd.vmstate).
    state_name = "ioapic"
    state_version = 1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset_registers()

    def reset_registers(self) -> None:
        """Power-on values: ID 0, every entry masked."""
        with self._lock:
            self.select = 0
            self.ioapic_id = 0
            self.table = [_MASKED] * IOAPIC_PINS

    def destination(self, pin: int) -> int | None:
        """The APIC ID an interrupt on ``pin`` goes to, or None when it is masked or logical (wake all)."""
        with self._lock:
            entry = self.table[pin]
        if entry & (_MASKED | _LOGICAL):
            return None
        return entry >> 56

    def mmio_read(self, offset: int, size: int) -> int:
        """QEMU's ioapic_mem_read: IOWIN answers 32-bit reads only."""
        with self._lock:
            if offset == 0:
                return self.select
            if offset != 0x10 or size != 4:
                return 0
            return self._register(self.select)

    def _register(self, index: int) -> int:
        if index == 0:
            return self.ioapic_id << 24
        if index == 1:
            return (IOAPIC_PINS - 1) << 16 | IOAPIC_VERSION
        if index == 2:
            return self.ioapic_id << 24
        pin, high = divmod(index - 0x10, 2)
        if 0 <= pin < IOAPIC_PINS:
            return (self.table[pin] >> (32 * high)) & 0xFFFFFFFF
        return 0xFFFFFFFF  # as QEMU's ioapic_mem_read for an unknown index

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """QEMU's ioapic_mem_write: IOWIN takes 32-bit writes only."""
        with self._lock:
            if offset == 0:
                self.select = value & 0xFFFFFFFF
                return
            if offset != 0x10 or size != 4:
                return
            index = self.select
            if index == 0:
                self.ioapic_id = value >> 24 & 0xF
                return
            pin, high = divmod(index - 0x10, 2)
            if not 0 <= pin < IOAPIC_PINS:
                return
            shift = 32 * high
            entry = (self.table[pin] & ~(0xFFFFFFFF << shift)) | (value & 0xFFFFFFFF) << shift
            self.table[pin] = (self.table[pin] & _READ_ONLY) | (entry & ~_READ_ONLY)

    # -- saved state -------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        with self._lock:
            return {"select": self.select, "id": self.ioapic_id, "table": list(self.table)}

    @staticmethod
    def check_state(state: Any, version: int, where: str = "ioapic") -> tuple[int, int, list[int]]:
        saved = fields(state, where)
        table = integers(saved.get("table"), IOAPIC_PINS, U64, f"{where}.table")
        return integer(saved, "select", U32, where), integer(saved, "id", U32, where) & 0xF, list(table)

    def load_state(self, checked: tuple[int, int, list[int]]) -> None:
        with self._lock:
            self.select, self.ioapic_id, table = checked
            self.table = list(table)
