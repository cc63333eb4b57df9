"""The chipset devices qmpd emulates, in QOM where QEMU 7.2 puts them: the i8042 (with its ``ps2kbd``) and
the ACPI PM function (``PIIX4_PM`` on pc, ``ICH9-LPC`` on q35), the machine's ``acpi-device``; and the ISA
devices of the command line (-device isa-debugcon/isa-debug-exit/pvpanic, -debugcon), which QEMU puts under
``/machine/peripheral`` or ``/machine/peripheral-anon``.

Their types and properties are QEMU's, recorded by tools/gen_qemu_tables.py; the properties that name
what qmpd does not emulate (IRQ lines, memory regions, the PS/2 mouse, the SMBus, the ISA bus) are left
out (README, "Deliberate differences").  QEMU creates them under ``/machine/unattached`` after the boot
CPUs, among chipset devices qmpd does not have; qmpd reserves those devices' ``device[N]`` numbers
(:data:`PC_DEVICES`, :data:`Q35_DEVICES`) so that its own objects, and everything ``cpu-add`` puts
there later, sit at QEMU's paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from qmpd.machine.spec import PortDeviceSpec
from qmpd.qapi.host_tables import host_tables
from qmpd.qom.device import Device
from qmpd.qom.object import Object
from qmpd.qom.properties import PropertyDef
from qmpd.qom.types import TypeInfo, TypeRegistry

#: Property types of what qmpd does not emulate: such properties are not listed.
_ABSENT = ("<irq>", "<memory-region>", "<ps2-mouse>", "<i2c-bus>", "<ISA>")
#: Types qmpd creates objects of (the others are their abstract parents).
_CONCRETE = {"i8042", "PIIX4_PM", "ICH9-LPC", "ps2-kbd", "isa-debugcon", "isa-debug-exit", "pvpanic"}
#: Types device_add accepts as a driver (as in QEMU: it then reaches the ISA bus's refusal).
_USER_CREATABLE = {"i8042", "isa-debugcon", "isa-debug-exit", "pvpanic"}

#: /machine/unattached devices QEMU 7.2 creates after the boot CPUs, in its order, with the machine settings
#: that must all be on for it (read on QEMU with each of them off); ``*`` marks the ones qmpd has.
PC_DEVICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("i440FX", ()), ("PIIX3", ()), ("i8257", ()), ("i8257", ()), ("isa-i8259", ()), ("isa-i8259", ()),
    ("hpet", ("hpet",)), ("mc146818rtc", ()), ("isa-pit", ()), ("isa-pcspk", ()), ("isa-fdc", ()),
    ("*i8042", ("i8042",)), ("vmport", ("i8042", "vmport")), ("vmmouse", ("i8042", "vmport")),
    ("port92", ("i8042",)), ("piix3-ide", ()), ("*PIIX4_PM", ("acpi",)), *(("smbus-eeprom", ("acpi",)),) * 8,
)  # fmt: skip
Q35_DEVICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("*ICH9-LPC", ()), ("i8257", ()), ("i8257", ()), ("isa-i8259", ()), ("isa-i8259", ()), ("hpet", ("hpet",)),
    ("mc146818rtc", ()), ("isa-pit", ()), ("isa-pcspk", ()), ("*i8042", ("i8042",)),
    ("vmport", ("i8042", "vmport")), ("vmmouse", ("i8042", "vmport")), ("port92", ("i8042",)),
    ("ich9-ahci", ("sata",)), ("ICH9-SMB", ("smbus",)), *(("smbus-eeprom", ("smbus",)),) * 8,
)  # fmt: skip

#: Values that are not the type's defaults (or that have none), as QEMU 7.2 shows them on its objects.
_VALUES: dict[str, dict[str, Any]] = {
    "PIIX4_PM": {
        "failover_pair_id": "", "romfile": "", "addr": 0x0B, "legacy-addr": "01.3", "smb_io_base": 0xB100,
        "smm-enabled": True,
    },
    "ICH9-LPC": {
        "failover_pair_id": "", "romfile": "", "addr": 0xF8, "multifunction": True, "legacy-addr": "1f.0",
        "enable_tco": True, "acpi_enable_cmd": 2, "acpi-pci-hotplug-with-bridge-support": True, "disable_s3": 0,
        "disable_s4": 0, "acpi_disable_cmd": 3, "memory-hotplug-support": True, "gpe0_blk_len": 16,
        "x-keep-pci-slot-hpc": True, "sci_int": 9, "x-smi-negotiated-features": 0, "s4_val": 2,
    },
}  # fmt: skip
#: PIIX4_PM's properties that QEMU adds at realize (instance properties), with their fixed values.
_PIIX4_REALIZED = (
    ("acpi_enable_cmd", "uint8", 0xF1), ("acpi_disable_cmd", "uint8", 0xF0), ("gpe0_blk", "uint32", 0xAFE0),
    ("gpe0_blk_len", "uint32", 4), ("sci_int", "uint16", 9), ("acpi-pcihp-io-base", "uint16", 0xAE00),
    ("acpi-pcihp-io-len", "uint16", 24),
)  # fmt: skip

#: ICH9-LPC's properties that QEMU adds at realize.
_ICH9_REALIZED = (("acpi-pcihp-io-base", "uint16", 0xCC0), ("acpi-pcihp-io-len", "uint16", 24))


class ChipsetDevice(Device):
    """One of QEMU's chipset devices that qmpd emulates: realized with the machine, never unplugged."""

    hotpluggable = False

    def __init__(self, registry: TypeRegistry, type_name: str) -> None:
        super().__init__(registry, type_name)
        #: Property values that are not the type's defaults.
        self.values: dict[str, Any] = dict(_VALUES.get(type_name, {}))
        #: Properties read off qmpd's emulation (the PM function's ``cpu-hotplug-legacy``).
        self.live: dict[str, Callable[[], Any]] = {}
        if type_name == "i8042":
            keyboard = registry.get("ps2-kbd")
            assert keyboard is not None and keyboard.factory is not None
            self.add_child("ps2kbd", keyboard.factory(registry, "ps2-kbd"))


def _getter(name: str, default: Any) -> Callable[[Object], Any]:
    def get(obj: Object) -> Any:
        assert isinstance(obj, ChipsetDevice)
        live = obj.live.get(name)
        return live() if live is not None else obj.values.get(name, default)

    return get


def _refuse(obj: Object, value: Any) -> None:
    """Never reached: every property here is static and these devices are realized with the machine."""


def register_chipset_types(registry: TypeRegistry) -> None:
    """isa-device, pci-device, ps2-device and the concrete types, as QEMU 7.2 lists them."""
    devices: dict[str, Any] = host_tables()["devices"]
    # Defaults and descriptions are device-list-properties' (concrete types only): an abstract parent's
    # properties take those its concrete types list.
    listed: dict[str, dict[str, Any]] = {}
    for info in devices.values():
        for prop in info["device_properties"] or ():
            listed.setdefault(prop["name"], prop)
    for name, info in devices.items():
        parent = info["parent"]
        inherited = {prop["name"] for prop in devices[parent]["properties"]} if parent in devices else set()
        inherited |= {"type", "parent_bus", "realized", "hotplugged", "hotpluggable"}
        own = {entry["name"]: entry for entry in info["device_properties"] or ()}
        properties = []
        for prop in info["properties"]:
            if prop["name"] in inherited or prop["type"].endswith(_ABSENT) or prop["type"].startswith("child<"):
                continue
            entry = own.get(prop["name"]) or (listed.get(prop["name"], prop) if info["abstract"] else prop)
            properties.append(
                PropertyDef(
                    prop["name"],
                    prop["type"],
                    getter=_getter(prop["name"], entry.get("default-value")),
                    setter=_refuse,
                    description=entry.get("description"),
                    default=entry.get("default-value"),
                    has_default="default-value" in entry,
                    static=True,
                )
            )
        concrete = name in _CONCRETE
        registry.register(
            TypeInfo(
                name,
                parent,
                abstract=not concrete,
                factory=ChipsetDevice if concrete else None,
                user_creatable=name in _USER_CREATABLE,
                properties=tuple(properties),
            )
        )


def chipset_devices(
    registry: TypeRegistry,
    q35: bool,
    settings: Mapping[str, Any],
    *,
    cpu_hotplug_legacy: Callable[[], bool],
    pm_io_base: Callable[[], int],
) -> list[tuple[str, ChipsetDevice | None]]:
    """QEMU's unattached chipset devices for this machine, in order: (type, qmpd's object or None).

    ``settings`` are /machine's (with ``acpi`` on or off); ``cpu_hotplug_legacy`` reads the ACPI CPU hot-plug
    block's mode, the PM function's ``cpu-hotplug-legacy``; ``pm_io_base`` where the guest last put the PM
    I/O space (0 before it did).
    """
    switches = {**settings, "acpi": settings.get("acpi") != "off", "vmport": settings.get("vmport") != "off"}
    devices: list[tuple[str, ChipsetDevice | None]] = []
    for entry, needs in Q35_DEVICES if q35 else PC_DEVICES:
        if not all(switches.get(setting, True) for setting in needs):
            continue
        if not entry.startswith("*"):
            devices.append((entry, None))
            continue
        info = registry.get(entry[1:])
        assert info is not None and info.factory is not None
        device = info.factory(registry, entry[1:])
        assert isinstance(device, ChipsetDevice)
        if entry == "*PIIX4_PM":
            for name, kind, value in _PIIX4_REALIZED:
                device.add_property(PropertyDef(name, kind, getter=_constant(value), setter=_refuse))
            device.add_property(
                PropertyDef("cpu-hotplug-legacy", "bool", getter=_getter("cpu-hotplug-legacy", True), setter=_refuse)
            )
            device.add_property(PropertyDef("pm_io_base", "uint32", getter=_getter("pm_io_base", 0), setter=_refuse))
        if entry in ("*PIIX4_PM", "*ICH9-LPC"):
            device.live["cpu-hotplug-legacy"] = cpu_hotplug_legacy
            device.live["pm_io_base"] = pm_io_base
        if entry == "*ICH9-LPC":
            device.live["gpe0_blk"] = lambda: pm_io_base() + 0x20
            for name, kind, value in _ICH9_REALIZED:
                device.add_property(PropertyDef(name, kind, getter=_constant(value), setter=_refuse))
        if entry == "*i8042":
            keyboard = device.child("ps2kbd")
            assert isinstance(keyboard, ChipsetDevice)
            keyboard.realized = True
        device.realized = True
        devices.append((entry[1:], device))
    return devices


def command_line_devices(
    registry: TypeRegistry, specs: Iterable[PortDeviceSpec], isa_bus: str
) -> list[tuple[str | None, ChipsetDevice]]:
    """The command line's ISA devices in its order, as QEMU shows them: (qdev id or None, object).

    Realized with the machine on ``isa_bus``, which cannot hot-unplug (device_del is refused as QEMU's).
    """
    devices: list[tuple[str | None, ChipsetDevice]] = []
    for spec in specs:
        info = registry.get(spec.driver)
        assert info is not None and info.factory is not None
        device = info.factory(registry, spec.driver)
        assert isinstance(device, ChipsetDevice)
        if spec.driver == "pvpanic":
            device.values.update({"ioport": spec.iobase, "events": spec.events})
        elif spec.driver == "isa-debug-exit":
            device.values.update({"iobase": spec.iobase, "iosize": spec.iosize})
        else:
            device.values.update({"iobase": spec.iobase, "readback": spec.readback, "chardev": spec.chardev_id})
        device.fixed_bus = isa_bus
        device.qdev_id = spec.id
        device.realized = True
        devices.append((spec.id, device))
    return devices


def _constant(value: Any) -> Callable[[Object], Any]:
    return lambda obj: value
