"""``device_add`` and ``device_del`` as QEMU's qdev-monitor runs them.

device_add: options, driver, bus, id, properties, realize.

QMP and HMP arguments both become QemuOpts first, so every value is text:
numbers are printed, booleans become ``on``/``off``, a non-string ``id`` and
null/object/array members are dropped (QEMU's qemu_opts_from_qdict).  The
steps then run in QEMU's order, each with its error text:

1. ``id`` must be an identifier (checked while building the options);
2. ``driver`` present, a device type, concrete, user-creatable;
3. ``bus``, if given, must exist and take the device (CPUs take none);
4. the machine must have a hot-plug handler for the device;
5. the id must be free (``/machine/peripheral/<id>``), or the device is
   anonymous (``/machine/peripheral-anon/device[N]``, N from a counter that
   every anonymous device_add reaching this step advances, failed or not);
6. properties are set in QDict order (text parsed by the property's type);
7. realize: the machine's hot-plug handler's pre_plug checks, then plug.

A failure after step 5, of any kind, unparents the device again, so nothing
is left but the counter's step (the plug itself changes nothing until it
cannot fail any more).

device_del finds the device by id or path and makes the unplug request
(qmpd.machine.hotplug_handler.request_unplug).
"""

# Annotations are not postponed here: its NamedTuple is made at every start (tests/unit/test_startup_imports.py).

import re
from typing import TYPE_CHECKING, Any, NamedTuple

from qmpd.errors import DeviceNotFound, GenericError
from qmpd.inttypes import INT_RANGES, parse_c_integer
from qmpd.machine.hotplug_handler import request_unplug
from qmpd.machine.qom_tree import new_object, type_registry
from qmpd.qemuopts import parse_bool, split_items
from qmpd.qobject.writer import format_double, qdict_order
from qmpd.qom.device import DEVICE_LIST_EXCLUDED, Device
from qmpd.qom.enums import enum_error
from qmpd.qom.object import resolve_at, resolve_path

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

#: QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_' (compiled with the first id, in re's cache).
_IDENTIFIER = r"[A-Za-z][A-Za-z0-9_.-]*\Z"
#: Properties device_add must not set (QEMU asserts or misbehaves on them).
_RESERVED = {"realized"}


class DeviceOptions(NamedTuple):
    """A device's QemuOpts: its id and its other options as text, in QDict iteration order."""

    id: str | None
    options: tuple[tuple[str, str], ...]


class OptionsSyntaxError(Exception):
    """HMP device_add text that QemuOpts refuses (QEMU then prints only the "Try help" line)."""


def check_id(value: str) -> None:
    """QEMU's qemu_opts_create check."""
    if not re.match(_IDENTIFIER, value):
        raise GenericError("Parameter 'id' expects an identifier")


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, str):
        return value
    return None  # null, objects and arrays are not options


def options_from_arguments(arguments: dict[str, Any]) -> DeviceOptions:
    """QMP device_add arguments to options (qemu_opts_from_qdict)."""
    device_id = arguments.get("id")
    if not isinstance(device_id, str):
        device_id = None
    elif device_id is not None:
        check_id(device_id)
    options = []
    for key in qdict_order(list(arguments)):
        if key == "id":
            continue
        text = _text(arguments[key])
        if text is not None:
            options.append((key, text))
    return DeviceOptions(device_id, tuple(options))


def options_from_text(text: str) -> DeviceOptions:
    """HMP ``driver[,prop=value][,...]`` to options (QemuOpts parsing; ``,,`` is a literal comma)."""
    items = split_items(text)
    device_id: str | None = None
    options: list[tuple[str, str]] = []
    for position, item in enumerate(items):
        key, equals, value = item.partition("=")
        if not equals:
            if position == 0:
                key, value = "driver", item
            else:
                value = "on"  # a bare name is a flag
        if key == "id":
            if not re.match(_IDENTIFIER, value):
                raise OptionsSyntaxError(value)
            device_id = value
            continue
        options.append((key, value))
    ordered = dict(options)
    return DeviceOptions(device_id, tuple((key, ordered[key]) for key in qdict_order(list(ordered))))


def parse_text(type_name: str, name: str, text: str) -> Any:
    """A device property from text, as QEMU's keyval input visitor parses it."""
    if type_name == "bool":
        return parse_bool(name, text, GenericError)
    if type_name in INT_RANGES or type_name == "int":
        value = parse_c_integer(text, unsigned=type_name.startswith("uint"))
        if value is None:
            raise GenericError(f"Parameter '{name}' expects integer")
        if type_name in INT_RANGES and type_name not in ("int", "int64", "uint64"):
            low, high = INT_RANGES[type_name]
            if not low <= value <= high:
                raise GenericError(f"Parameter '{name}' expects {type_name}_t")
        return value
    refused = enum_error(type_name, name, text)
    if refused is not None:
        raise GenericError(refused)
    return text


def qdev_device_add(machine: "Machine", opts: DeviceOptions) -> Device:
    """Create, configure and plug a device; on any error nothing stays but the anon counter's step."""
    options = dict(opts.options)
    driver = options.pop("driver", None)
    if driver is None:
        raise GenericError("Parameter 'driver' is missing")
    registry = machine.registry
    info = registry.get(driver)
    if info is None or not registry.is_a(driver, "device"):
        raise GenericError(f"'{driver}' is not a valid device model name")
    if info.abstract or info.factory is None:
        raise GenericError("Parameter 'driver' expects a non-abstract device type")
    if not info.user_creatable:
        raise GenericError("Parameter 'driver' expects a pluggable device type")
    bus = options.pop("bus", None)
    buses = machine.machine_type.buses
    if bus is not None:
        if bus not in buses:
            raise GenericError(f"Bus '{bus}' not found")
        if not (buses[bus] == "ISA" and registry.is_a(driver, "isa-device")):
            raise GenericError(f"Device '{driver}' can't go on {buses[bus]} bus")
    if registry.is_a(driver, "isa-device"):  # the i8042: QEMU finds the ISA bus, which cannot hot-plug
        isa = bus if bus is not None else next((name for name, kind in buses.items() if kind == "ISA"), None)
        if isa is None:
            raise GenericError(f"No 'ISA' bus found for device '{driver}'")
        raise GenericError(f"Bus '{isa}' does not support hotplugging")
    handler = machine.hotplug_handler(driver)
    if handler is None:
        raise GenericError(f"Device '{driver}' can not be hotplugged on this machine")
    device = _new_device(machine, driver)
    qom = machine.qom
    if opts.id is not None:
        if qom.peripheral.child(opts.id) is not None:
            raise GenericError(f"Duplicate device ID '{opts.id}'")
        device.qdev_id = opts.id
        qom.peripheral.add_child(opts.id, device)
    else:
        qom.peripheral_anon.add_child(f"device[{qom.next_anon()}]", device)
    try:
        for name, text in options.items():
            _set_option(device, name, text)
        device.hotplugged = True
        handler.pre_plug(device)
        handler.plug(device)
    except BaseException:  # any failure, ours or unexpected: the id is free again (QEMU's object_unparent)
        parent = device.parent
        if parent is not None and device.name_in_parent is not None:
            parent.remove_child(device.name_in_parent)
        raise
    return device


def _new_device(machine: "Machine", driver: str) -> Device:
    """A new device of type ``driver``; a CPU gets the -cpu settings (QEMU's global properties)."""
    if machine.registry.is_a(driver, "x86_64-cpu"):
        return machine.cpu_slots.new_cpu(driver)
    device = new_object(driver)
    assert isinstance(device, Device)
    return device


def qdev_device_del(machine: "Machine", device_id: str) -> None:
    """device_del: an id under /machine/peripheral, or any QOM path; the guest is asked to release it."""
    qom = machine.qom
    if device_id.startswith("/"):
        found, _ = resolve_path(qom.root, device_id)
    else:
        found = resolve_at(qom.peripheral, device_id)
    if found is None:
        raise DeviceNotFound(f"Device '{device_id}' not found")
    if isinstance(found, Device) and found.pending_deleted_event:
        raise GenericError(f"Device {device_id} is already in the process of unplug")
    request_unplug(machine, found, device_id)


def _set_option(device: Device, name: str, text: str) -> None:
    prop = device.find_property(name)
    if prop is None:
        raise GenericError(f"Property '{device.type_name}.{name}' not found")
    if prop.setter is None or prop.is_child or prop.is_link or name in _RESERVED:
        raise GenericError(f"Property '{device.type_name}.{name}' is not writable")
    device.set_property(name, parse_text(prop.type, name, text))


def device_properties(typename: str) -> list[dict[str, Any]]:
    """``device-list-properties``: what a QOM device type's instances have (names, types, defaults)."""
    registry = type_registry()
    info = registry.get(typename)
    if info is None:
        raise DeviceNotFound(f"Device '{typename}' not found")
    if info.abstract or info.factory is None or not registry.is_a(typename, "device"):
        raise GenericError("Parameter 'typename' expects a non-abstract device type")
    return [
        prop.info(description=True, default=True)
        for prop in new_object(typename).properties()
        if prop.name not in DEVICE_LIST_EXCLUDED and not prop.name.startswith("legacy-")
    ]
