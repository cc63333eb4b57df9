"""The machine types qmpd offers, with QEMU's names, aliases, limits and per-type hardware facts.

Everything that differs between ``pc``, ``q35`` and ``none`` is a field here, so the
rest of qmpd asks the type instead of comparing its name.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

from collections.abc import Mapping
from typing import NamedTuple

from qmpd.devices.chipsets import I440FX_PIIX4, Q35_ICH9, Chipset


class ACPILayout(NamedTuple):
    """Where a chipset puts the ACPI blocks qmpd emulates (QEMU's PIIX4 PM or ICH9 LPC)."""

    #: Base port of the ACPI CPU hot-plug register block.
    cpuhp_base: int
    #: GPE0 block: base port and length (where the firmware puts it, if it lives in the PM I/O space).
    gpe0_base: int
    gpe0_len: int
    #: GPE0's offset in the PM I/O space (q35), or None for a block at a fixed port (pc).
    gpe0_in_pm: int | None = None


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
    #: Parent of the ``/machine`` QOM type.
    qom_parent: str
    #: A PC: x86 machine properties, a kvmvapic beside the first CPU, every -smp boot CPU, the ISA reset ports.
    is_pc: bool
    #: CPU model without ``-cpu`` (None: no CPU at all).
    default_cpu: str | None
    #: query-machines' ``default-ram-id``.
    default_ram_id: str
    #: The ACPI blocks (None: the type has no ACPI).
    acpi: ACPILayout | None
    hotpluggable_cpus: bool
    #: Bits of the reset control register at 0xCF9 that stay as written: PIIX3's RCR (pc), ICH9's RST_CNT (q35).
    reset_control_kept_bits: int
    #: Buses by qbus name, with their QOM type names as QEMU prints them (device_add accepts a bare bus name).
    buses: Mapping[str, str]
    #: The PCI functions a firmware finds (host bridge, PM function), or None without a PCI bus.
    chipset: Chipset | None = None
    #: query-current-machine's ``wakeup-suspend-support``: who registers S3 wakeup (PIIX4 PM only with ACPI;
    #: ICH9 LPC always): "with-acpi", "always" or "never".
    wakeup_suspend: str = "never"

    def can_wake_from_suspend(self, acpi: bool) -> bool:
        """query-current-machine's ``wakeup-suspend-support`` (also what system_wakeup checks first)."""
        return self.wakeup_suspend == "always" or (self.wakeup_suspend == "with-acpi" and acpi)

    @property
    def qom_type(self) -> str:
        """QOM type of ``/machine`` (``pc-i440fx-7.2-machine``)."""
        return f"{self.name}-machine"

    @property
    def default_cpu_type(self) -> str | None:
        """QOM type of the default CPU (query-machines' ``default-cpu-type``)."""
        return f"{self.default_cpu}-x86_64-cpu" if self.default_cpu is not None else None


MACHINE_TYPES: tuple[MachineType, ...] = (
    MachineType(
        name="pc-i440fx-7.2",
        description="Standard PC (i440FX + PIIX, 1996)",
        alias="pc",
        is_default=True,
        qemu_max_cpus=255,
        max_cpus=1024,
        qom_parent="generic-pc-machine",
        is_pc=True,
        default_cpu="qemu64",
        default_ram_id="pc.ram",
        acpi=ACPILayout(cpuhp_base=0xAF00, gpe0_base=0xAFE0, gpe0_len=4),
        hotpluggable_cpus=True,
        reset_control_kept_bits=0x2,
        buses={"pci.0": "PCI", "isa.0": "ISA", "main-system-bus": "System"},
        chipset=I440FX_PIIX4,
        wakeup_suspend="with-acpi",
    ),
    MachineType(
        name="pc-q35-7.2",
        description="Standard PC (Q35 + ICH9, 2009)",
        alias="q35",
        is_default=False,
        qemu_max_cpus=288,
        max_cpus=1024,
        qom_parent="generic-pc-machine",
        is_pc=True,
        default_cpu="qemu64",
        default_ram_id="pc.ram",
        acpi=ACPILayout(cpuhp_base=0x0CD8, gpe0_base=0x0620, gpe0_len=16, gpe0_in_pm=0x20),
        hotpluggable_cpus=True,
        reset_control_kept_bits=0xA,
        buses={"pcie.0": "PCIE", "isa.0": "ISA", "main-system-bus": "System"},
        chipset=Q35_ICH9,
        wakeup_suspend="always",
    ),
    MachineType(
        name="none",
        description="empty machine",
        alias=None,
        is_default=False,
        qemu_max_cpus=1,
        max_cpus=1,
        qom_parent="machine",
        is_pc=False,
        default_cpu=None,
        default_ram_id="ram",
        acpi=None,
        hotpluggable_cpus=False,
        reset_control_kept_bits=0,
        buses={"main-system-bus": "System"},
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
    # QEMU's order: machine families (the PC ones) by name, each newest first, then the standalone types.
    for machine_type in sorted(MACHINE_TYPES, key=lambda m: (not m.is_pc, m.name)):
        if machine_type.alias:
            lines.append(f"{machine_type.alias:<20} {machine_type.description} (alias of {machine_type.name})")
        suffix = " (default)" if machine_type.is_default else ""
        lines.append(f"{machine_type.name:<20} {machine_type.description}{suffix}")
    return "\n".join(lines) + "\n"
