"""The local APIC of each CPU, as QOM sees it: the ``lapic`` child of a CPU.

QEMU gives every x86 CPU a ``lapic`` child of type ``apic`` (under TCG) whose
``id`` is the CPU's APIC ID.
"""

from __future__ import annotations

from typing import Any

from qmpd.qom.device import Device
from qmpd.qom.object import QObject
from qmpd.qom.properties import PropertyDef
from qmpd.qom.types import TypeInfo, TypeRegistry

#: APIC version register value of QEMU's APIC (an integrated 82489DX successor).
APIC_VERSION = 0x14


class LocalAPIC(Device):
    """One CPU's local APIC."""

    hotpluggable = False

    def __init__(self, registry: TypeRegistry, type_name: str = "apic") -> None:
        super().__init__(registry, type_name)
        self.apic_id = 0
        self.vapic = True


def _getter(attribute: str) -> Any:
    def get(obj: QObject) -> Any:
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
                PropertyDef("vapic", "bool", getter=_getter("vapic"), static=True, default=True, has_default=True),
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
                PropertyDef("id", "uint32", getter=_getter("apic_id"), static=True, default=255, has_default=True),
            ),
        )
    )
    registry.register(TypeInfo("apic", "apic-common", factory=LocalAPIC))
