"""The QOM types of a machine and the object tree qmpd builds for it.

``/`` holds ``objects``, ``machine`` and ``chardevs`` (as in QEMU).  Under
``/machine`` are QEMU's ``unattached``, ``peripheral`` and
``peripheral-anon`` containers, and qmpd's ``topology``: the seed's "full
vision" of CPU topology in QOM, ``socket[S]/die[D]/core[C]/thread[T]``, where
each thread node has a ``link<x86_64-cpu>`` property ``cpu`` pointing at the
CPU in that slot.  Setting that link is the seed's third hot-plug interface:
an unrealized CPU (made by ``object-add`` under ``/objects``) is plugged into
the slot through the machine's hot-plug handler; ``""`` asks for its unplug.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from qmpd.cpu.topology import Slot, Topology
from qmpd.cpu.x86cpu import X86CPU, register_cpu_types
from qmpd.devices.fw_cfg import FILE_SLOTS
from qmpd.devices.lapic import register_apic_types
from qmpd.errors import DeviceNotFound, GenericError
from qmpd.machine.chipset_qom import ChipsetDevice, register_chipset_types
from qmpd.machine.guest_policy import register_guest_policy_type
from qmpd.machine.hotplug_handler import HotplugHandler, request_unplug
from qmpd.machine.properties import INSTANCE_ORDER, MACHINE_PROPERTIES
from qmpd.machine.types import MACHINE_TYPES, MachineType
from qmpd.qapi.host_tables import host_tables
from qmpd.qom.device import Device, register_base_types
from qmpd.qom.object import Container, Object, resolve_path
from qmpd.qom.properties import PropertyDef
from qmpd.qom.types import TypeInfo, TypeRegistry


class MachineObject(Object):
    """``/machine``: the machine's QOM object."""

    def __init__(self, registry: TypeRegistry, type_name: str) -> None:
        super().__init__(registry, type_name)
        self.settings: dict[str, Any] = {}
        # QEMU's machine_initfn makes the two containers, so qom-list-properties shows them on every machine
        # type, among a board's own properties.
        board = {prop.name: prop for prop in _machine_properties("board")}
        for name in INSTANCE_ORDER[self.type_info.data["machine"].is_pc]:
            if name in board:
                self.add_property(board[name])
            else:
                self.add_child(name, Container(registry, "container"))


class TopologyNode(Object):
    """A socket, die, core or thread of the topology tree."""

    def __init__(self, registry: TypeRegistry, type_name: str) -> None:
        super().__init__(registry, type_name)
        self.ids: dict[str, int] = {}


class VAPIC(Device):
    """QEMU's kvmvapic (TPR patching for old Windows guests); inert, kept for QOM path parity.

    QEMU creates it when the first CPU's APIC is realized, which is why the
    second boot CPU is ``/machine/unattached/device[2]``.
    """

    hotpluggable = False
    fixed_bus = "main-system-bus"


class FwCfgObject(Device):
    """``/machine/fw_cfg`` (pc, q35): QEMU's type and properties; the registers are qmpd.devices.fw_cfg's."""

    hotpluggable = False
    fixed_bus = "main-system-bus"


def _fixed(name: str, kind: str, value: object) -> PropertyDef:
    """A static property fixed at realize (fw_cfg is realized with the machine)."""
    return PropertyDef(
        name, kind, getter=lambda obj: value, setter=lambda obj, v: None, default=value, has_default=True, static=True
    )


#: fw_cfg's own static property, then fw_cfg_io's (QEMU 7.2's values).
FW_CFG_PROPERTIES = (_fixed("acpi-mr-restore", "bool", True),)
FW_CFG_IO_PROPERTIES = (_fixed("x-file-slots", "uint16", FILE_SLOTS), _fixed("dma_enabled", "bool", True))


def _setting(name: str) -> Any:
    def get(obj: Object) -> Any:
        assert isinstance(obj, MachineObject)
        return obj.settings[name]

    return get


def _ids(*names: str, kind: str = "int32") -> tuple[PropertyDef, ...]:
    def getter(name: str) -> Any:
        def get(obj: Object) -> Any:
            assert isinstance(obj, TopologyNode)
            return obj.ids[name]

        return get

    return tuple(PropertyDef(name, kind, getter=getter(name)) for name in names)


def _machine_properties(level: str) -> tuple[PropertyDef, ...]:
    return tuple(
        PropertyDef(prop.name, prop.qapi_type, getter=_setting(prop.name), description=prop.description)
        for prop in MACHINE_PROPERTIES
        if prop.level == level
    )


@cache
def type_registry() -> TypeRegistry:
    """Every QOM type qmpd has (built once; types are static data)."""
    registry = TypeRegistry()
    register_base_types(registry)
    registry.register(TypeInfo("machine", "object", abstract=True, properties=_machine_properties("machine")))
    registry.register(TypeInfo("x86-machine", "machine", abstract=True, properties=_machine_properties("x86")))
    registry.register(
        TypeInfo(
            "generic-pc-machine",
            "x86-machine",
            abstract=True,
            interfaces=("hotplug-handler",),
            properties=_machine_properties("pc"),
        )
    )
    for machine_type in MACHINE_TYPES:
        registry.register(
            TypeInfo(
                machine_type.qom_type,
                machine_type.qom_parent,
                factory=MachineObject,
                data={"machine": machine_type},
            )
        )
    registry.register(TypeInfo("sys-bus-device", "device", abstract=True))
    register_chipset_types(registry)
    registry.register(TypeInfo("kvmvapic", "sys-bus-device", factory=VAPIC, user_creatable=False))
    registry.register(
        TypeInfo("fw_cfg", "sys-bus-device", abstract=True, user_creatable=False, properties=FW_CFG_PROPERTIES)
    )
    # The MMIO flavour other boards use: listed as QEMU lists it, never created by qmpd.
    mem_properties = (FW_CFG_IO_PROPERTIES[0], _fixed("data_width", "uint32", 0xFFFFFFFF), FW_CFG_IO_PROPERTIES[1])
    registry.register(
        TypeInfo("fw_cfg_mem", "fw_cfg", factory=FwCfgObject, user_creatable=False, properties=mem_properties)
    )
    registry.register(
        TypeInfo("fw_cfg_io", "fw_cfg", factory=FwCfgObject, user_creatable=False, properties=FW_CFG_IO_PROPERTIES)
    )
    register_apic_types(registry)
    register_cpu_types(registry)
    register_host_types(registry)
    register_guest_policy_type(registry)
    registry.register(TypeInfo("cpu-topology-node", "object", abstract=True))
    registry.register(
        TypeInfo("cpu-topology-socket", "cpu-topology-node", factory=TopologyNode, properties=_ids("socket-id"))
    )
    registry.register(
        TypeInfo("cpu-topology-die", "cpu-topology-node", factory=TopologyNode, properties=_ids("socket-id", "die-id"))
    )
    registry.register(
        TypeInfo(
            "cpu-topology-core",
            "cpu-topology-node",
            factory=TopologyNode,
            properties=_ids("socket-id", "die-id", "core-id"),
        )
    )
    registry.register(
        TypeInfo(
            "cpu-topology-thread",
            "cpu-topology-node",
            factory=TopologyNode,
            properties=(*_ids("socket-id", "die-id", "core-id", "thread-id"), *_ids("apic-id", kind="uint32")),
        )
    )
    return registry


class HostObject(Object):
    """An accelerator, memory backend or secret: a type libvirt asks about or passes, with QEMU's properties,
    kept as set and never used; the one in use is the RAM backend a PC makes at start (``/objects/pc.ram``)."""

    def __init__(self, registry: TypeRegistry, type_name: str) -> None:
        super().__init__(registry, type_name)
        #: Property values, by name (unset ones cannot be read).
        self.values: dict[str, Any] = {}
        #: Set once -object/object-add has configured it: its properties are fixed from then on.
        self.complete = False


def _host_getter(name: str) -> Any:
    def get(obj: Object) -> Any:
        assert isinstance(obj, HostObject)
        if name not in obj.values:
            raise GenericError(f"Property '{obj.type_name}.{name}' is not readable")
        return obj.values[name]

    return get


def _host_setter(name: str) -> Any:
    def put(obj: Object, value: Any) -> None:
        assert isinstance(obj, HostObject)
        if obj.complete:
            raise GenericError(f"Property '{obj.type_name}.{name}' is not writable")
        obj.values[name] = value

    return put


#: QEMU 7.2's ``secret_common`` and ``secret`` (qom-list-properties order); libvirt passes a secret with every domain.
_SECRET_COMMON_PROPERTIES = (
    ("iv", "string"),
    ("keyid", "string"),
    ("loaded", "bool"),
    ("format", "QCryptoSecretFormat"),
)
_SECRET_PROPERTIES = (("file", "string"), ("data", "string"))


def _host_property(name: str, kind: str) -> PropertyDef:
    return PropertyDef(name, kind, getter=_host_getter(name), setter=_host_setter(name))


def ram_backend(size: int, settings: dict[str, Any]) -> HostObject:
    """The ``memory-backend-ram`` QEMU makes for a PC's RAM, with the values QEMU 7.2 shows for it."""
    backend = new_object("memory-backend-ram")
    assert isinstance(backend, HostObject)
    backend.values.update(
        {
            "share": False,
            "size": size,
            "dump": settings.get("dump-guest-core", True),
            "prealloc-threads": 1,
            "x-use-canonical-path-for-ramblock-id": False,
            "policy": "default",
            "prealloc": False,
            "reserve": True,
            "host-nodes": [],
            "merge": settings.get("mem-merge", True),
        }
    )
    backend.complete = True
    return backend


def register_host_types(registry: TypeRegistry) -> None:
    """tcg-accel, the memory backends and secret, as QEMU 7.2 declares them (qmpd has no kvm-accel)."""
    registry.register(TypeInfo("user-creatable", "interface", abstract=True))
    for name, info in host_tables()["types"].items():
        properties = tuple(
            PropertyDef(
                prop["name"],
                prop["type"],
                getter=None if prop["type"].startswith(("link<", "child<")) else _host_getter(prop["name"]),
                setter=None if prop["type"].startswith(("link<", "child<")) else _host_setter(prop["name"]),
                description=prop.get("description"),
            )
            for prop in info["properties"]
            if prop["name"] != "type"
        )
        abstract = bool(info["abstract"])
        factory = None if abstract else HostObject
        interfaces = ("user-creatable",) if name == "memory-backend" else ()
        registry.register(
            TypeInfo(
                name, info["parent"], abstract=abstract, factory=factory, properties=properties, interfaces=interfaces
            )
        )
    registry.register(
        TypeInfo(
            "secret_common",
            "object",
            abstract=True,
            interfaces=("user-creatable",),
            properties=tuple(_host_property(name, kind) for name, kind in _SECRET_COMMON_PROPERTIES),
        )
    )
    registry.register(
        TypeInfo(
            "secret",
            "secret_common",
            factory=HostObject,
            properties=tuple(_host_property(name, kind) for name, kind in _SECRET_PROPERTIES),
        )
    )


def new_object(type_name: str) -> Object:
    """Instantiate a concrete QOM type."""
    registry = type_registry()
    info = registry.get(type_name)
    assert info is not None and info.factory is not None, type_name
    return info.factory(registry, type_name)


class QOMTree:
    """The root and the well-known containers of one machine."""

    def __init__(self, machine_type: MachineType, settings: dict[str, Any]) -> None:
        registry = type_registry()
        self.root = Container(registry, "container")
        self.objects = self.root.add_child("objects", Container(registry, "container"))
        machine = new_object(machine_type.qom_type)
        assert isinstance(machine, MachineObject)
        machine.settings.update(settings)
        self.machine = machine
        self.root.add_child("machine", machine)
        backend = str(settings.get("memory-backend", ""))
        #: The RAM backend QEMU makes for a PC (its memory-backend): in use, so object-del refuses it.
        self.ram_backend: HostObject | None = None
        if backend.startswith("/objects/"):
            size = int(settings.get("memory", {}).get("size", 0))
            self.ram_backend = ram_backend(size, settings)
            self.objects.add_child(backend[len("/objects/") :], self.ram_backend)
        self.chardevs = self.root.add_child("chardevs", Container(registry, "container"))
        self.unattached = machine.add_child("unattached", Container(registry, "container"))
        if machine_type.is_pc:  # QEMU's pc and q35 create it with the machine; machine none has none
            fw_cfg = machine.add_child("fw_cfg", new_object("fw_cfg_io"))
            assert isinstance(fw_cfg, FwCfgObject)
            fw_cfg.realized = True
        peripheral, peripheral_anon = machine.child("peripheral"), machine.child("peripheral-anon")
        assert peripheral is not None and peripheral_anon is not None
        self.peripheral, self.peripheral_anon = peripheral, peripheral_anon
        #: QEMU's static unattached_count: shared by every unattached device.
        self.unattached_count = 0
        #: QEMU's static anon_count: advanced by every device_add that reaches qdev_set_id.
        self.anon_count = 0
        self.thread_nodes: dict[int, TopologyNode] = {}

    def next_anon(self) -> int:
        """The next anonymous device number (QEMU's anon_count++)."""
        number = self.anon_count
        self.anon_count += 1
        return number

    def attach_unattached(self, obj: Object) -> str:
        """Place an object without parent at /machine/unattached/device[N]."""
        name = f"device[{self.unattached_count}]"
        self.unattached_count += 1
        self.unattached.add_child(name, obj)
        return name

    def attach_chipset(self, devices: list[tuple[str, ChipsetDevice | None]]) -> None:
        """QEMU's chipset devices after the boot CPUs: qmpd's objects at their ``device[N]``, the numbers of
        the others reserved; the PM function is the machine's ``acpi-device``."""
        for type_name, device in devices:
            if device is None:
                self.unattached_count += 1
                continue
            self.attach_unattached(device)
            if type_name in ("PIIX4_PM", "ICH9-LPC"):
                self.machine.add_link("acpi-device", "hotplug-handler", device)

    def attach_peripherals(self, devices: list[tuple[str | None, ChipsetDevice]]) -> None:
        """The command line's devices: at /machine/peripheral/ID, or anonymous (advancing anon_count)."""
        for device_id, device in devices:
            if device_id is not None:
                self.peripheral.add_child(device_id, device)
            else:
                self.peripheral_anon.add_child(f"device[{self.next_anon()}]", device)

    def build_topology(self, topology: Topology, handler: HotplugHandler) -> None:
        """``/machine/topology/socket[S]/die[D]/core[C]/thread[T]`` with a ``cpu`` link per thread.

        Setting a link plugs or unplugs through ``handler``.
        """
        registry = type_registry()
        container = self.machine.add_child("topology", Container(registry, "container"))
        nodes: dict[tuple[int, ...], Object] = {}
        for slot in topology.slots:
            path: tuple[int, ...] = ()
            parent = container
            for level, value in (("socket", slot.socket_id), ("die", slot.die_id), ("core", slot.core_id)):
                path = (*path, value)
                node = nodes.get(path)
                if node is None:
                    node = self._node(f"cpu-topology-{level}", slot, len(path))
                    parent.add_child(f"{level}[{value}]", node)
                    nodes[path] = node
                parent = node
            thread = self._node("cpu-topology-thread", slot, 4)
            thread.ids["apic-id"] = slot.apic_id
            thread.add_link("cpu", "x86_64-cpu", setter=lambda node, value: self._set_thread_cpu(handler, node, value))
            parent.add_child(f"thread[{slot.thread_id}]", thread)
            self.thread_nodes[slot.cpu_index] = thread

    def _set_thread_cpu(self, handler: HotplugHandler, node: TopologyNode, value: object) -> None:
        """qom-set .../thread[T] cpu <path>: plug that unrealized CPU here; ``""`` asks for an unplug."""
        if not isinstance(value, str):
            raise GenericError("Invalid parameter type for 'cpu', expected: string")
        current = node.link_target("cpu")
        if value == "":
            if isinstance(current, X86CPU):
                request_unplug(handler, current, current.canonical_path())
            return
        target, ambiguous = resolve_path(self.root, value)
        if target is None:
            if ambiguous:
                raise GenericError(f"Path '{value}' is ambiguous")
            raise DeviceNotFound(f"Device '{value}' not found")
        if not isinstance(target, X86CPU):
            raise GenericError("Invalid parameter type for 'cpu', expected: x86_64-cpu")
        if target is current:
            return
        if target.realized:
            raise GenericError(f"CPU '{value}' is already plugged")
        before = target.settings()
        target.values["apic-id"] = node.ids["apic-id"]
        try:
            handler.pre_plug(target)
            handler.plug(target)
        except BaseException:  # the CPU stays in /objects exactly as it was, free to be fixed and plugged
            target.restore(before)
            raise

    @staticmethod
    def _node(type_name: str, slot: Slot, depth: int) -> TopologyNode:
        node = new_object(type_name)
        assert isinstance(node, TopologyNode)
        values = [
            ("socket-id", slot.socket_id),
            ("die-id", slot.die_id),
            ("core-id", slot.core_id),
            ("thread-id", slot.thread_id),
        ]
        node.ids.update(dict(values[:depth]))
        return node
