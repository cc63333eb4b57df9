"""The machine types qmpd offers, with QEMU's names, aliases, limits and per-type hardware facts.

Everything that differs between ``pc``, ``q35`` and ``none`` is a field here, so the
rest of qmpd asks the type instead of comparing its name.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

from collections.abc import Mapping

from qmpd.devices.chipsets import I440FX_PIIX4, Q35_ICH9, Chipset


class ACPILayout:
    """Where a chipset puts the ACPI blocks qmpd emulates (QEMU's PIIX4 PM or ICH9 LPC)."""

    __slots__ = ("cpuhp_base", "gpe0_base", "gpe0_in_pm", "gpe0_len")

    def __init__(self, cpuhp_base: int, gpe0_base: int, gpe0_len: int, gpe0_in_pm: int | None = None) -> None:
        #: Base port of the ACPI CPU hot-plug register block.
        self.cpuhp_base = cpuhp_base
        #: GPE0 block: base port and length (where the firmware puts it, if it lives in the PM I/O space).
        self.gpe0_base = gpe0_base
        self.gpe0_len = gpe0_len
        #: GPE0's offset in the PM I/O space (q35), or None for a block at a fixed port (pc).
        self.gpe0_in_pm = gpe0_in_pm


class MachineType:
    """One ``-machine`` type."""

    __slots__ = (
        "acpi",
        "alias",
        "buses",
        "chipset",
        "default_cpu",
        "default_ram_id",
        "description",
        "hotpluggable_cpus",
        "is_default",
        "is_pc",
        "max_cpus",
        "name",
        "qemu_max_cpus",
        "qom_parent",
        "reset_control_kept_bits",
        "wakeup_suspend",
    )

    def __init__(
        self,
        name: str,
        description: str,
        alias: str | None,
        is_default: bool,
        qemu_max_cpus: int,
        max_cpus: int,
        qom_parent: str,
        is_pc: bool,
        default_cpu: str | None,
        default_ram_id: str,
        acpi: ACPILayout | None,
        hotpluggable_cpus: bool,
        reset_control_kept_bits: int,
        buses: Mapping[str, str],
        chipset: Chipset | None = None,
        wakeup_suspend: str = "never",
    ) -> None:
        #: Versioned name (``pc-i440fx-7.2``) and the QOM type it becomes.
        self.name = name
        self.description = description
        self.alias = alias
        self.is_default = is_default
        #: QEMU's limit under TCG, and qmpd's own (x2APIC IDs are no problem for Unicorn).
        self.qemu_max_cpus = qemu_max_cpus
        self.max_cpus = max_cpus
        #: Parent of the ``/machine`` QOM type.
        self.qom_parent = qom_parent
        #: A PC: x86 machine properties, a kvmvapic beside the first CPU, every -smp boot CPU, the ISA reset ports.
        self.is_pc = is_pc
        #: CPU model without ``-cpu`` (None: no CPU at all).
        self.default_cpu = default_cpu
        #: query-machines' ``default-ram-id``.
        self.default_ram_id = default_ram_id
        #: The ACPI blocks (None: the type has no ACPI).
        self.acpi = acpi
        self.hotpluggable_cpus = hotpluggable_cpus
        #: Bits of the reset control register at 0xCF9 that stay as written: PIIX3's RCR (pc), ICH9's RST_CNT (q35).
        self.reset_control_kept_bits = reset_control_kept_bits
        #: Buses by qbus name, with their QOM type names as QEMU prints them (device_add accepts a bare bus name).
        self.buses = buses
        #: The PCI functions a firmware finds (host bridge, PM function), or None without a PCI bus.
        self.chipset = chipset
        #: query-current-machine's ``wakeup-suspend-support``: who registers S3 wakeup (PIIX4 PM only with ACPI;
        #: ICH9 LPC always): "with-acpi", "always" or "never".
        self.wakeup_suspend = wakeup_suspend

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
