"""``-machine`` properties: the ones qmpd's machine object has, their defaults, and QEMU's checks.

libvirt starts a domain with ``-machine pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram``;
the values given here are what ``qom-get /machine`` reports afterwards.  Only properties qmpd's machine
really holds are listed (in QEMU 7.2's order, with its descriptions); any other name is refused with
QEMU's "Property ... not found".
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

from collections.abc import Iterable
from typing import Any, NamedTuple

from qmpd.machine.types import MachineType
from qmpd.qemuopts import OptionError, parse_bool


class MachineProperty(NamedTuple):
    """One property of ``/machine``; ``settable`` ones may be given with ``-machine``."""

    name: str
    qapi_type: str
    description: str
    settable: bool
    #: Only on x86 machines (pc, q35), not on ``none``.
    x86_only: bool = False


MACHINE_PROPERTIES: tuple[MachineProperty, ...] = (
    MachineProperty("kernel", "string", "Linux kernel image file", False),
    MachineProperty("memory", "MemorySizeConfiguration", "Memory size configuration", False),
    MachineProperty("usb", "bool", "Set on/off to enable/disable usb", True),
    MachineProperty("firmware", "string", "Firmware image", False),
    MachineProperty("smp", "SMPConfiguration", "CPU topology", False),
    MachineProperty("dump-guest-core", "bool", "Include guest memory in a core dump", True),
    MachineProperty("mem-merge", "bool", "Enable/disable memory merge support", True),
    MachineProperty("suppress-vmdesc", "bool", "Set on to disable self-describing migration", True),
    MachineProperty("acpi", "OnOffAuto", "Enable ACPI", True, x86_only=True),
)

#: What the settable properties read when ``-machine`` does not set them (QEMU 7.2's defaults).
DEFAULTS: dict[str, Any] = {
    "usb": False,
    "dump-guest-core": True,
    "mem-merge": True,
    "suppress-vmdesc": False,
    "acpi": "auto",
}
_ON_OFF_AUTO = ("on", "off", "auto")


def properties_of(machine_type: MachineType) -> tuple[MachineProperty, ...]:
    """The properties of one machine type's ``/machine`` object."""
    return tuple(prop for prop in MACHINE_PROPERTIES if machine_type.is_pc or not prop.x86_only)


def parse_machine_properties(
    machine_type: MachineType, given: Iterable[tuple[str, str]], memory_backends: Iterable[str]
) -> dict[str, Any]:
    """Check ``-machine`` key=value pairs as QEMU does; return the settings they change.

    ``memory-backend=ID`` must name an ``-object memory-backend-*`` of the command line; qmpd keeps
    guest RAM in its own mapping, so the backend is checked and otherwise not used.
    """
    known = {prop.name: prop for prop in properties_of(machine_type) if prop.settable}
    backends = set(memory_backends)
    settings: dict[str, Any] = {}
    for name, value in given:
        if name == "memory-backend":
            if value not in backends:
                raise OptionError(f"Memory backend '{value}' not found")
            continue
        prop = known.get(name)
        if prop is None:
            raise OptionError(f"Property '{machine_type.qom_type}.{name}' not found")
        if prop.qapi_type == "bool":
            settings[name] = parse_bool(name, value)
        elif value in _ON_OFF_AUTO:
            settings[name] = value
        else:
            raise OptionError(f"Parameter '{name}' does not accept value '{value}'")
    return settings
