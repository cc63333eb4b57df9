"""The machine types qmpd offers, with QEMU's names, aliases and limits."""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

from typing import NamedTuple


class MachineType(NamedTuple):
    """One ``-machine`` type."""

    #: Versioned name (``pc-i440fx-7.2``) and the QOM type it becomes.
    name: str
    description: str
    alias: str | None
    is_default: bool
    #: QEMU's limit under TCG, and qmpd's own (x2APIC IDs are no problem for Unicorn).
    qemu_max_cpus: int
    max_cpus: int
    #: Base port of the ACPI CPU hot-plug register block (None: no ACPI).
    cpuhp_base: int | None
    hotpluggable_cpus: bool

    @property
    def qom_type(self) -> str:
        """QOM type of ``/machine`` (``pc-i440fx-7.2-machine``)."""
        return f"{self.name}-machine"


MACHINE_TYPES: tuple[MachineType, ...] = (
    MachineType(
        name="pc-i440fx-7.2",
        description="Standard PC (i440FX + PIIX, 1996)",
        alias="pc",
        is_default=True,
        qemu_max_cpus=255,
        max_cpus=1024,
        cpuhp_base=0xAF00,
        hotpluggable_cpus=True,
    ),
    MachineType(
        name="pc-q35-7.2",
        description="Standard PC (Q35 + ICH9, 2009)",
        alias="q35",
        is_default=False,
        qemu_max_cpus=288,
        max_cpus=1024,
        cpuhp_base=0x0CD8,
        hotpluggable_cpus=True,
    ),
    MachineType(
        name="none",
        description="empty machine",
        alias=None,
        is_default=False,
        qemu_max_cpus=1,
        max_cpus=1,
        cpuhp_base=None,
        hotpluggable_cpus=False,
    ),
)


def find_machine_type(name: str) -> MachineType | None:
    """Look a type up by name or alias."""
    for machine_type in MACHINE_TYPES:
        if name in (machine_type.name, machine_type.alias):
            return machine_type
    return None


def default_machine_type() -> MachineType:
    """What QEMU picks without ``-machine`` (pc)."""
    return next(m for m in MACHINE_TYPES if m.is_default)


def machine_help() -> str:
    """``-machine help``, in QEMU's layout."""
    lines = ["Supported machines are:"]
    for machine_type in sorted(MACHINE_TYPES, key=lambda m: m.name):
        if machine_type.alias:
            lines.append(f"{machine_type.alias:<20} {machine_type.description} (alias of {machine_type.name})")
        suffix = " (default)" if machine_type.is_default else ""
        lines.append(f"{machine_type.name:<20} {machine_type.description}{suffix}")
    return "\n".join(lines) + "\n"
