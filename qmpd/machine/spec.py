"""The machine the command line describes, checked before anything is created.

QEMU rejects a bad ``-machine``/``-cpu``/``-smp`` combination before it opens
any monitor; so does qmpd: ``build_spec`` runs at start-up, before the
sockets exist, and either returns a spec the machine can be built from
without failing, or raises SpecError with QEMU's text.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import os
from typing import NamedTuple

from qmpd.config import CharConfig, MachineConfig
from qmpd.cpu.cpu_option import CPUOption, CPUOptionError, parse_cpu_option
from qmpd.cpu.topology import SMP, Topology, TopologyError, parse_smp
from qmpd.devices.fw_cfg import FW_CFG_DMA_LEN, FW_CFG_DMA_PORT, FW_CFG_PORT, FW_CFG_PORT_LEN
from qmpd.devices.guest_policy import GUEST_POLICY_BASE, GUEST_POLICY_LEN
from qmpd.machine.fw_cfg_files import FwCfgError, load_fw_cfg_files
from qmpd.machine.types import MachineType, default_machine_type, find_machine_type
from qmpd.vcpu.loader import STACK_SIZE, Firmware, FirmwareError, load_file

#: The firmware qmpd boots without -bios/-kernel (built from examples/firmware).
DEFAULT_FIRMWARE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "firmware", "qmpd-firmware.bin"
)
#: RAM must end below the local APIC (and the I/O APIC below it).
MAX_RAM = 0xFEC00000


class PortDeviceSpec:
    """An ISA device on the port bus."""

    __slots__ = ("chardev", "chardev_id", "driver", "events", "id", "iobase", "iosize", "readback")

    def __init__(
        self,
        driver: str,
        iobase: int,
        iosize: int,
        chardev: CharConfig | None,
        events: int = 3,
        id: str | None = None,
        readback: int = 0xE9,
        chardev_id: str = "",
    ) -> None:
        self.driver = driver
        self.iobase = iobase
        self.iosize = iosize
        self.chardev = chardev
        #: pvpanic's ``events`` (the events it reports as supported).
        self.events = events
        #: The qdev id (None: anonymous, /machine/peripheral-anon/device[N]).
        self.id = id
        #: isa-debugcon's ``readback`` (what a read of its port returns in QEMU).
        self.readback = readback
        #: isa-debugcon's ``chardev`` (the chardev's id).
        self.chardev_id = chardev_id


class SpecError(ValueError):
    """The machine cannot be built; the text is QEMU's.

    ``warnings`` name their option and were due before the error (QEMU prints them first).
    """

    def __init__(self, text: str, warnings: tuple[str, ...] = ()) -> None:
        super().__init__(text)
        self.warnings = warnings


class MachineSpec(NamedTuple):
    """A validated machine description."""

    machine_type: MachineType
    smp: SMP
    topology: Topology
    #: The -cpu option (None: machine none without -cpu, which has no CPU).
    cpu: CPUOption | None
    warnings: tuple[str, ...]
    #: What the boot CPU runs (None without CPUs).
    firmware: Firmware | None = None
    port_devices: tuple[PortDeviceSpec, ...] = ()
    #: The -fw_cfg files (name, contents), read at start.
    fw_cfg_files: tuple[tuple[str, bytes], ...] = ()
    #: -nographic (fw_cfg's NOGRAPHIC item).
    nographic: bool = False
    #: -uuid (fw_cfg's UUID item).
    uuid: bytes = bytes(16)
    #: Warnings that name their option (printed after the program name as they are).
    located_warnings: tuple[str, ...] = ()

    @property
    def cpu_type(self) -> str | None:
        """QOM type of the machine's CPUs (QEMU's ms->cpu_type)."""
        return self.cpu.model.typename if self.cpu else None


def build_spec(config: MachineConfig) -> MachineSpec:
    """Validate the machine part of the command line."""
    machine_type = find_machine_type(config.machine_type) or default_machine_type()
    warnings: list[str] = []
    try:
        smp, smp_warnings = parse_smp(config.smp, machine_type.name, machine_type.max_cpus)
    except TopologyError as exc:
        raise SpecError(str(exc)) from None
    warnings += smp_warnings
    cpu_text = config.cpu
    if cpu_text is None:
        cpu_text = machine_type.default_cpu
    cpu: CPUOption | None = None
    if cpu_text is not None:
        try:
            cpu = parse_cpu_option(cpu_text)
        except CPUOptionError as exc:
            raise SpecError(str(exc)) from None
        warnings += cpu.warnings
    if config.ram_size > MAX_RAM:
        raise SpecError(f"-m: qmpd maps guest RAM below the APICs: at most {MAX_RAM >> 20} MiB")
    if config.ram_size < smp.max_cpus * STACK_SIZE + (4 << 20):
        raise SpecError(f"-m: {config.ram_size >> 20} MiB is too small for {smp.max_cpus} CPUs' boot stacks")
    firmware = None
    if cpu is not None:
        try:
            firmware = load_file(config.kernel or config.bios or DEFAULT_FIRMWARE)
        except FirmwareError as exc:
            raise SpecError(str(exc)) from None
        low, high = firmware.extent
        if high > config.ram_size - smp.max_cpus * STACK_SIZE:
            raise SpecError(f"{firmware.path}: the image ({low:#x}-{high:#x}) does not fit in guest RAM")
    port_devices = _port_devices(config, machine_type)
    try:  # as QEMU, once the machine exists
        fw_cfg_files, located = load_fw_cfg_files(config.fw_cfg, available=machine_type.is_pc)
    except FwCfgError as exc:
        raise SpecError(str(exc), exc.warnings) from None
    return MachineSpec(
        machine_type,
        smp,
        Topology(smp),
        cpu,
        tuple(warnings),
        firmware,
        port_devices,
        fw_cfg_files=fw_cfg_files,
        nographic=config.nographic,
        uuid=config.uuid,
        located_warnings=located,
    )


def _int(text: str, name: str, driver: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise SpecError(f"{driver}: Parameter '{name}' expects integer") from None


def _port_devices(config: MachineConfig, machine_type: MachineType) -> tuple[PortDeviceSpec, ...]:
    chardevs = dict(config.chardevs)
    out = []
    for device in config.devices:
        props = dict(device.props)
        if device.driver == "isa-debug-exit":
            out.append(
                PortDeviceSpec(
                    "isa-debug-exit",
                    _int(props.get("iobase", "0x501"), "iobase", device.driver),
                    _int(props.get("iosize", "0x02"), "iosize", device.driver),
                    None,
                    id=props.get("id"),
                )
            )
        elif device.driver == "pvpanic":
            events = _int(props.get("events", "3"), "events", device.driver)
            out.append(
                PortDeviceSpec(
                    "pvpanic",
                    _int(props.get("ioport", "0x505"), "ioport", device.driver),
                    1,
                    None,
                    events,
                    id=props.get("id"),
                )
            )
        elif device.driver == "isa-debugcon":
            chardev = chardevs.get(props.get("chardev", ""), CharConfig("null"))
            out.append(
                PortDeviceSpec(
                    "isa-debugcon",
                    _int(props.get("iobase", "0xe9"), "iobase", device.driver),
                    1,
                    chardev,
                    id=props.get("id"),
                    readback=_int(props.get("readback", "0xe9"), "readback", device.driver),
                    chardev_id=props.get("chardev", ""),
                )
            )
    ids = [spec.id for spec in out if spec.id is not None]
    for number, device_id in enumerate(ids):
        if device_id in ids[:number]:
            raise SpecError(f"Duplicate ID '{device_id}' for device")
    ports: dict[int, str] = {}
    if machine_type.is_pc:
        ports = {0xCF9: "the reset control register", 0x60: "i8042", 0x64: "i8042"}
        for base, length in ((FW_CFG_PORT, FW_CFG_PORT_LEN), (FW_CFG_DMA_PORT, FW_CFG_DMA_LEN)):
            ports.update(dict.fromkeys(range(base, base + length), "fw_cfg"))
        ports.update(
            dict.fromkeys(range(GUEST_POLICY_BASE, GUEST_POLICY_BASE + GUEST_POLICY_LEN), "qmpd's guest-policy device")
        )
    for spec in out:
        for port in range(spec.iobase, spec.iobase + spec.iosize):
            if port in ports:
                raise SpecError(f"{spec.driver}: I/O port {port:#x} is already used by {ports[port]}")
            ports[port] = spec.driver
    return tuple(out)
