"""The QOM types every tree needs (object, container, interface, device) and the Device base.

A device has QEMU's qdev behaviour: ``realized``, ``hotpluggable``,
``hotplugged``, a ``parent_bus`` link (always empty here: qmpd's devices sit
on no bus), an optional qdev id, and static properties that refuse changes
once it is realized, with QEMU's "Attempt to set property ... after it was
realized" text.
"""

from __future__ import annotations

from typing import Any

from qmpd.errors import GenericError
from qmpd.qom.object import Container, Object
from qmpd.qom.properties import PropertyDef
from qmpd.qom.types import TypeInfo, TypeRegistry


class Device(Object):
    """A QEMU device (qdev)."""

    #: Whether the type may be plugged at run time.
    hotpluggable = True
    #: The bus QEMU puts the device on when that bus cannot hot-plug (sys-bus devices:
    #: ``main-system-bus``); device_del names it, as QEMU checks the bus first.
    fixed_bus: str | None = None

    def __init__(self, registry: TypeRegistry, type_name: str) -> None:
        super().__init__(registry, type_name)
        self.realized = False
        self.hotplugged = False
        #: The qdev id (device_add id=...), if any.
        self.qdev_id: str | None = None
        #: Unrealized after it was realized: QEMU's device_del then says it is already being unplugged.
        self.pending_deleted_event = False

    def check_settable(self, prop: PropertyDef) -> None:
        if prop.static and self.realized:
            where = f"device '{self.qdev_id}'" if self.qdev_id is not None else "anonymous device"
            name = prop.alias_of or prop.name
            raise GenericError(
                f"Attempt to set property '{name}' on {where} (type '{self.type_name}') after it was realized"
            )

    def realize(self) -> None:
        """Bring the device to life (subclasses extend)."""
        self.realized = True

    def unrealize(self) -> None:
        """Take the device out of service (subclasses extend)."""
        self.realized = False

    def set_realized(self, value: bool) -> None:
        """The ``realized`` property."""
        if value and not self.realized:
            self.realize()
        elif not value and self.realized:
            self.unrealize()


def _set_realized(obj: Object, value: Any) -> None:
    assert isinstance(obj, Device)
    obj.set_realized(bool(value))


OBJECT_PROPERTIES = (PropertyDef("type", "string", getter=lambda obj: obj.type_name),)
DEVICE_PROPERTIES = (
    PropertyDef("parent_bus", "link<bus>"),
    PropertyDef("realized", "bool", getter=lambda obj: obj.realized, setter=_set_realized),  # type: ignore[attr-defined]
    PropertyDef("hotplugged", "bool", getter=lambda obj: obj.hotplugged),  # type: ignore[attr-defined]
    PropertyDef("hotpluggable", "bool", getter=lambda obj: obj.hotpluggable),  # type: ignore[attr-defined]
)
#: Properties device-list-properties leaves out (QEMU's qdev_device_list_properties exclusions).
DEVICE_LIST_EXCLUDED = {"type", "realized", "hotpluggable", "hotplugged", "parent_bus"}


def register_base_types(registry: TypeRegistry) -> None:
    """object, interface, container and device, as QEMU names them."""
    registry.register(TypeInfo("object", None, abstract=True, properties=OBJECT_PROPERTIES))
    registry.register(TypeInfo("interface", None, abstract=True))
    registry.register(TypeInfo("container", "object", factory=Container))
    registry.register(TypeInfo("device", "object", abstract=True, properties=DEVICE_PROPERTIES))
    for interface in ("hotplug-handler", "acpi-device-interface"):
        registry.register(TypeInfo(interface, "interface", abstract=True))
