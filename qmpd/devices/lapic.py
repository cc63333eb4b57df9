"""The local APIC of each CPU: the ``lapic`` child in QOM, and its registers at 0xFEE00000.

QEMU gives every x86 CPU a ``lapic`` child of type ``apic`` (under TCG) whose
``id`` is the CPU's APIC ID.  qmpd implements the registers a firmware needs
to identify itself and to start other CPUs: ID, version, TPR, EOI, SVR, LDR,
DFR, the local interrupt pins' LVT entries (LINT0, LINT1) and the interrupt
command register (ICR).  Writing the low ICR word sends an IPI: INIT and
STARTUP (to bring a CPU up at vector x 4096) and fixed interrupts (to wake a
halted CPU), to one APIC ID or by shorthand (self, all, all but self).

``inject-nmi`` reaches a CPU as on QEMU's x86 machines: through LINT1, so only
a CPU whose guest unmasked LINT1 with delivery mode NMI takes it (QEMU's
apic_deliver_nmi; firmware such as SeaBIOS programs it on every CPU).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qmpd.qom.device import Device
from qmpd.qom.object import Object
from qmpd.qom.properties import PropertyDef
from qmpd.qom.types import TypeInfo, TypeRegistry
from qmpd.vmstate import U32, fields, integer

if TYPE_CHECKING:
    from qmpd.devices.saved import APICRegisters

#: APIC version register value of QEMU's APIC (an integrated 82489DX successor).
APIC_VERSION = 0x14
#: Physical base of the local APIC registers.
LAPIC_BASE = 0xFEE00000
LAPIC_SIZE = 0x1000

#: ICR delivery modes (bits 10:8).
DELIVERY_FIXED = 0
DELIVERY_NMI = 4
DELIVERY_INIT = 5
DELIVERY_STARTUP = 6
#: ICR destination shorthands (bits 19:18).
DEST_FIELD, DEST_SELF, DEST_ALL, DEST_ALL_BUT_SELF = 0, 1, 2, 3
#: LVT entries: the mask bit, and their power-on value (masked, as QEMU's apic_reset_common).
LVT_MASKED = 1 << 16
#: Register offsets of the LINT0 and LINT1 entries.
LVT_LINT0 = 0x350
LVT_LINT1 = 0x360


def extended_destination(icr_high: int) -> int:
    """The destination APIC ID of an ICR high word.

    Bits 31:24 are the xAPIC destination.  xAPIC cannot address APIC IDs above
    255, and Unicorn has no x2APIC; qmpd takes bits 23:8 (reserved in xAPIC)
    as the higher bits of the ID, so a firmware can reach all 1024 slots.
    """
    return (icr_high >> 24 & 0xFF) | (icr_high >> 8 & 0xFFFF) << 8


#: send_ipi(source APIC ID, shorthand, destination APIC ID, delivery mode, vector)
IPISender = Callable[[int, int, int, int, int], None]


#: The registers a saved local APIC carries (its ID comes from the CPU's slot); version 2 added the last two.
_SAVED_REGISTERS = ("tpr", "svr", "ldr", "dfr", "icr_low", "icr_high", "lint0", "lint1")
_SAVED_IN_VERSION_1 = _SAVED_REGISTERS[:6]


class LocalAPIC(Device):
    """One CPU's local APIC (QOM reads it hotpluggable, as QEMU's; it is never plugged alone: the machine's
    hot-plug handler takes CPUs only)."""

    #: Its section of a saved CPU (qmpd.vmstate).
    state_name = "lapic"
    state_version = 2

    def __init__(self, registry: TypeRegistry, type_name: str = "apic") -> None:
        super().__init__(registry, type_name)
        self.apic_id = 0
        self.vapic = True
        self._lock = threading.Lock()
        #: Where IPIs go (the vCPU manager sets it when the CPU is plugged).
        self.send_ipi: IPISender | None = None
        self.reset_registers()

    def reset_registers(self) -> None:
        """Power-on values."""
        self.tpr = 0
        self.svr = 0xFF
        self.ldr = 0
        self.dfr = 0xFFFFFFFF
        self.icr_low = 0
        self.icr_high = 0
        self.lint0 = LVT_MASKED
        self.lint1 = LVT_MASKED

    def takes_nmi(self) -> bool:
        """Whether an NMI raised on LINT1 (inject-nmi) reaches the CPU: unmasked, delivery mode NMI."""
        with self._lock:
            return not self.lint1 & LVT_MASKED and (self.lint1 >> 8) & 7 == DELIVERY_NMI

    def save_state(self) -> dict[str, Any]:
        with self._lock:
            return {name: getattr(self, name) for name in _SAVED_REGISTERS}

    @staticmethod
    def check_state(state: Any, version: int, where: str = "lapic") -> APICRegisters:
        from qmpd.devices.saved import APICRegisters  # with a restore only

        """Pure, and static: a saved CPU is checked before the target has plugged it."""
        registers = fields(state, where)
        names = _SAVED_IN_VERSION_1 if version == 1 else _SAVED_REGISTERS
        return APICRegisters(*(integer(registers, name, U32, where) for name in names))

    def load_state(self, checked: APICRegisters) -> None:
        with self._lock:
            self.tpr, self.svr, self.ldr = checked.tpr, checked.svr, checked.ldr
            self.dfr, self.icr_low, self.icr_high = checked.dfr, checked.icr_low, checked.icr_high
            self.lint0, self.lint1 = checked.lint0, checked.lint1

    def mmio_read(self, offset: int, size: int) -> int:
        """A register read from the vCPU that owns this APIC."""
        with self._lock:
            register = offset & ~0xF
            value = {
                0x20: (self.apic_id & 0xFF) << 24,  # xAPIC: 8 bits
                0x30: APIC_VERSION | 5 << 16,
                0x80: self.tpr,
                0xD0: self.ldr,
                0xE0: self.dfr,
                0xF0: self.svr,
                0x300: self.icr_low & ~(1 << 12),
                0x310: self.icr_high,
                LVT_LINT0: self.lint0,
                LVT_LINT1: self.lint1,
            }.get(register, 0)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1) if size < 4 else value & 0xFFFFFFFF

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """A register write; the low ICR word sends an IPI."""
        register = offset & ~0xF
        with self._lock:
            if register == 0x80:
                self.tpr = value & 0xFF
            elif register == 0xD0:
                self.ldr = value & 0xFF000000
            elif register == 0xE0:
                self.dfr = value | 0x0FFFFFFF
            elif register == 0xF0:
                self.svr = value & 0x1FF  # vector and APIC enable, as QEMU's apic.c
            elif register == 0x310:
                self.icr_high = value
            elif register == LVT_LINT0:
                self.lint0 = value  # stored whole, as QEMU's apic_mem_write
            elif register == LVT_LINT1:
                self.lint1 = value
            elif register == 0x300:
                self.icr_low = value
            else:
                return
            if register != 0x300:
                return
            mode = value >> 8 & 7
            shorthand = value >> 18 & 3
            destination = extended_destination(self.icr_high)
            level_deassert = mode == DELIVERY_INIT and not value & 1 << 14 and value & 1 << 15
            sender = self.send_ipi
            source = self.apic_id
        if sender is not None and not level_deassert:
            sender(source, shorthand, destination, mode, value & 0xFF)


def _getter(attribute: str) -> Any:
    def get(obj: Object) -> Any:
        return getattr(obj, attribute)

    return get


def register_apic_types(registry: TypeRegistry) -> None:
    """apic-common and apic, with the properties QEMU shows on a TCG lapic."""
    registry.register(
        TypeInfo(
            "apic-common",
            "device",
            abstract=True,
            properties=(
                PropertyDef(
                    "vapic",
                    "bool",
                    getter=_getter("vapic"),
                    static=True,
                    default=True,
                    has_default=True,
                    description="on/off",
                ),
                PropertyDef(
                    "version",
                    "uint8",
                    getter=lambda obj: APIC_VERSION,
                    static=True,
                    default=APIC_VERSION,
                    has_default=True,
                ),
                PropertyDef(
                    "legacy-instance-id", "bool", getter=lambda obj: False, static=True, default=False, has_default=True
                ),
                # apic_common_initfn adds it to each instance: no default, refused once realized.
                PropertyDef("id", "uint32", getter=_getter("apic_id"), static=True, instance=True),
            ),
        )
    )
    registry.register(TypeInfo("apic", "apic-common", factory=LocalAPIC, user_creatable=False))
