"""The hardware behind the QOM tree: RAM, the port bus and its devices, the vCPU threads.

A pc (or q35) board has QEMU's ACPI CPU hot-plug block (0xaf00 on pc, 0x0cd8
on q35) with its GPE0 block, fw_cfg at 0x510 (with the -fw_cfg files), the i8042 with its PS/2 keyboard,
plus whatever ISA devices the command line asked for (isa-debugcon, isa-debug-exit).  Guest RAM is one shared
mapping; the
firmware image is copied into it at power-on and at every reset.  CPUs are
wired here when plugged: a runner thread, a local APIC that can send IPIs,
and an engine (with its own CPUID table) created when the CPU first starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from qmpd.cpu.cpuid import build_cpuid
from qmpd.cpu.x86cpu import X86CPU
from qmpd.devices.acpi_cpuhp import LEGACY_LEN, CPUHotplugBlock, GPEBlock
from qmpd.devices.acpi_pm import PM1_LEN, PM_BASE, PM1Block
from qmpd.devices.bus import PortBus
from qmpd.devices.debug_exit import DebugExit
from qmpd.devices.debugcon import CharSink, DebugCon
from qmpd.devices.fw_cfg import (
    FW_CFG_DMA_LEN,
    FW_CFG_DMA_PORT,
    FW_CFG_PORT,
    FW_CFG_PORT_LEN,
    FwCfg,
    MachineFacts,
    fw_cfg_items,
)
from qmpd.devices.guest_policy import GUEST_POLICY_BASE, GUEST_POLICY_LEN, GuestPolicyPort
from qmpd.devices.i8042 import COMMAND_PORT, DATA_PORT, I8042
from qmpd.devices.ioapic import IOAPIC, SCI_GSI
from qmpd.devices.lapic import LocalAPIC
from qmpd.devices.pci import CONFIG_ADDRESS_PORT, CONFIG_DATA_PORT, PCIConfig
from qmpd.devices.pvpanic import PVPanic
from qmpd.devices.reset import RESET_CONTROL_PORT, ResetControl
from qmpd.log import get_logger
from qmpd.machine.spec import MachineSpec
from qmpd.vcpu.bridge import LoopBridge
from qmpd.vcpu.manager import VCPUManager
from qmpd.vcpu.ram import GuestRAM
from qmpd.vcpu.runner import VCPURunner

if TYPE_CHECKING:
    from qmpd.vcpu.engine import VCPUEngine

log = get_logger(__name__)


class Board:
    """RAM, devices and vCPUs of one machine."""

    def __init__(
        self, spec: MachineSpec, ram_size: int, *, single_threaded: bool, vcpu_nice: int = 0, acpi: bool = True
    ) -> None:
        self.spec = spec
        self.ram = GuestRAM(ram_size)
        self.bus = PortBus()
        self.bridge = LoopBridge()
        self.vcpus = VCPUManager(self.bridge, self.ram.size, single_threaded=single_threaded, nice=vcpu_nice)
        self._sinks: list[CharSink] = []
        #: Called on the loop thread when the guest writes isa-debug-exit: the exit status.
        self.on_guest_exit: Callable[[int], None] = lambda status: None
        #: Called on the loop thread when the guest reports a panic / a loaded crash kernel (pvpanic).
        self.on_panic: Callable[[], None] = lambda: None
        self.on_crashloaded: Callable[[], None] = lambda: None
        #: Called on the loop thread when the guest resets the machine (port 0xCF9, the i8042 reset pulse).
        self.on_guest_reset: Callable[[], None] = lambda: None
        #: Called on the loop thread when the guest enters soft-off (S5) through PM1_CNT.
        self.on_guest_poweroff: Callable[[], None] = lambda: None
        #: Called on the loop thread for ACPI_DEVICE_OST (the info) and for an eject (the slot).
        self.on_ost: Callable[[dict[str, object]], None] = lambda info: None
        self.on_eject: Callable[[int], None] = lambda index: None
        self.cpuhp: CPUHotplugBlock | None = None
        self.gpe: GPEBlock | None = None
        #: The PM1 registers (pc's PIIX4 PM, q35's ICH9 LPC); like QEMU, none with -no-acpi.
        self.pm: PM1Block | None = None
        #: Where the guest last turned the PM I/O space on (the PM function's ``pm_io_base``; 0 before).
        self.pm_io_base = 0
        machine = spec.machine_type
        self.pci: PCIConfig | None = None
        if machine.chipset is not None:
            self.pci = PCIConfig(machine.chipset, self._place_pm_space, with_pm=acpi)
            self.bus.add(CONFIG_ADDRESS_PORT, 1, self.pci.address_port)
            self.bus.add(CONFIG_DATA_PORT, 4, self.pci.data_port)
        layout = machine.acpi if acpi else None
        #: Where the guest routes the SCI (and nothing else, yet).
        self.ioapic = IOAPIC()
        if layout is not None:
            # The PM1 registers (and q35's GPE0) appear where the firmware places the PM I/O space.
            self.pm = PM1Block(on_sci=self._sci, on_soft_off=lambda: self.bridge.post(self.on_guest_poweroff))
            self.gpe = GPEBlock(layout.gpe0_len, on_sci=self._sci)
            if layout.gpe0_in_pm is None:
                self.bus.add(layout.gpe0_base, layout.gpe0_len, self.gpe)
            self.cpuhp = CPUHotplugBlock(
                [slot.apic_id for slot in spec.topology.slots],
                self.gpe,
                on_eject=lambda index: self.bridge.post(self.on_eject, index),
                on_ost=lambda info: self.bridge.post(self.on_ost, info),
            )
            self.bus.add(layout.cpuhp_base, LEGACY_LEN, self.cpuhp)
        self.reset_control: ResetControl | None = None
        #: fw_cfg (pc and q35, as QEMU's; machine none has none).
        self.fw_cfg: FwCfg | None = None
        #: The keyboard controller and its PS/2 keyboard (pc and q35 have one, as QEMU's).
        self.i8042: I8042 | None = None
        #: qmpd's guest-policy device (pc and q35): the firmware's hot-plug behaviour per slot.
        self.guest_policy: GuestPolicyPort | None = None
        if machine.is_pc:
            apic_id_limit = max((slot.apic_id for slot in spec.topology.slots), default=-1) + 1
            facts = MachineFacts(spec.uuid, spec.nographic, spec.smp.cpus, apic_id_limit, ram_size)
            self.fw_cfg = FwCfg(fw_cfg_items(facts, spec.fw_cfg_files), self.ram)
            self.bus.add(FW_CFG_PORT, FW_CFG_PORT_LEN, self.fw_cfg.ports)
            self.bus.add(FW_CFG_DMA_PORT, FW_CFG_DMA_LEN, self.fw_cfg.dma_ports)
            self.guest_policy = GuestPolicyPort(len(spec.topology.slots))
            self.bus.add(GUEST_POLICY_BASE, GUEST_POLICY_LEN, self.guest_policy)
            self.reset_control = ResetControl(self._guest_reset, machine.reset_control_kept_bits)
            self.bus.add(RESET_CONTROL_PORT, 1, self.reset_control)
            self.i8042 = I8042(self._guest_reset)
            self.bus.add(DATA_PORT, 1, self.i8042.data_port)
            self.bus.add(COMMAND_PORT, 1, self.i8042.command_port)
        for device in spec.port_devices:
            if device.driver == "isa-debugcon":
                assert device.chardev is not None
                sink = CharSink(device.chardev.kind, device.chardev.path, device.chardev.append)
                self._sinks.append(sink)
                self.bus.add(device.iobase, 1, DebugCon(sink))
            elif device.driver == "isa-debug-exit":
                exit_device = DebugExit(lambda status: self.bridge.post(self.on_guest_exit, status))
                self.bus.add(device.iobase, device.iosize, exit_device)
            elif device.driver == "pvpanic":
                panic = PVPanic(
                    lambda: self.bridge.post(self.on_panic),
                    lambda: self.bridge.post(self.on_crashloaded),
                    device.events,
                )
                self.bus.add(device.iobase, device.iosize, panic)
        self.vcpus.boot_args = (layout.cpuhp_base, layout.gpe0_base) if layout is not None else (0, 0)
        if spec.firmware is not None:
            spec.firmware.load(self.ram)
        self._prepare_chipset()

    def _prepare_chipset(self) -> None:
        """An image that is not a BIOS ROM starts as after QEMU's firmware: the PM I/O space placed."""
        chipset = self.spec.machine_type.chipset
        if (
            self.pci is not None
            and chipset is not None
            and self.spec.firmware is not None
            and not self.spec.firmware.rom
        ):
            self.pci.load_pm_registers(PM_BASE | 1, chipset.pm_function.enable_bit)

    def _place_pm_space(self, base: int | None) -> None:
        """The guest moved the PM I/O space (or turned it on or off): move the PM1 (and q35's GPE0) ports."""
        if self.pm is None or self.gpe is None:
            return
        self.bus.remove(self.pm)
        layout = self.spec.machine_type.acpi
        in_pm = layout.gpe0_in_pm if layout is not None else None
        if in_pm is not None:
            self.bus.remove(self.gpe)
        if base is None:
            return
        self.bus.add(base, PM1_LEN, self.pm)
        self.pm_io_base = base
        if in_pm is not None:
            self.bus.add(base + in_pm, self.gpe.half * 2, self.gpe)

    def _sci(self) -> None:
        """The SCI fired (from a vCPU thread or the loop): wake the CPU the I/O APIC routes it to."""
        destination = self.ioapic.destination(SCI_GSI)
        if destination is None:
            self.vcpus.kick_all()
        else:
            self.vcpus.kick_apic(destination)

    def attach_cpu(self, cpu: X86CPU, lapic: LocalAPIC, *, running: bool) -> VCPURunner:
        """Give a realized CPU its thread; it stays powered off until started."""
        assert cpu.cpu_index is not None
        index = cpu.cpu_index
        apic_id = int(cpu.values["apic-id"])
        lapic.send_ipi = self.vcpus.send_ipi

        def make_engine() -> VCPUEngine:
            from qmpd.vcpu.engine import VCPUEngine  # Unicorn: loaded by the first vCPU that runs

            engine_model = cpu.engine()
            levels = {name: cpu.level(name) for name in ("level", "xlevel", "xlevel2", "level-func7")}
            table = build_cpuid(engine_model, cpu.identity, cpu.guest_features(), levels, self.spec.topology, apic_id)
            return VCPUEngine(engine_model.engine, self.ram, self.bus, lapic, table, ioapic=self.ioapic)

        return self.vcpus.add(index, apic_id, make_engine, paused=not running)

    def start_boot_cpu(self, index: int) -> None:
        """The boot CPU begins at the firmware's entry."""
        if self.spec.firmware is not None:
            self.vcpus.power_on(index, self.spec.firmware.entry)

    def _guest_reset(self) -> None:
        self.bridge.post(self.on_guest_reset)

    def reset(self, boot_index: int | None) -> None:
        """While every vCPU is paused: restore the firmware, power CPUs off, restart the boot CPU."""
        if self.reset_control is not None:
            self.reset_control.reset_registers()
        if self.i8042 is not None:
            self.i8042.reset_registers()
        if self.pm is not None:
            self.pm.reset_registers()
        self.ioapic.reset_registers()
        if self.fw_cfg is not None:
            self.fw_cfg.reset_registers()
        if self.pci is not None:
            self.pci.reset_registers()
            self._place_pm_space(None)
        if self.spec.firmware is not None:
            self.spec.firmware.load(self.ram)
        self._prepare_chipset()
        # The CPU hot-plug block keeps its mode and pending events across a reset, as QEMU's does
        # (measured: after qom-set cpu-hotplug-legacy=false and system_reset, QEMU is still modern).
        for index, runner in self.vcpus.runners.items():
            if index == boot_index and self.spec.firmware is not None:
                runner.reset(self.vcpus.entry(runner, self.spec.firmware.entry))
            else:
                runner.reset(None)

    def close(self) -> None:
        """Stop every vCPU thread and close the character devices."""
        self.bridge.close()
        self.vcpus.shutdown()
        for sink in self._sinks:
            sink.close()
