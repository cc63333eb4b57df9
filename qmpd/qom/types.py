"""QOM types as data: a name, a parent, whether it is abstract, the interfaces it implements.

This mirrors ``TypeInfo`` in QEMU's include/qom/object.h: behaviour lives in
the Python class that builds instances (``factory``), but identity and
ancestry are plain data, which is what ``qom-list-types`` and
``device-list-properties`` report.
"""

# Annotations are not postponed here: its record is made at every start (tests/unit/test_startup_imports.py).

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from qmpd.qom.properties import PropertyDef

if TYPE_CHECKING:
    from qmpd.qom.object import Object


class TypeInfo:
    """One QOM type."""

    __slots__ = ("abstract", "data", "factory", "interfaces", "name", "parent", "properties", "user_creatable")

    def __init__(
        self,
        name: str,
        parent: str | None,
        abstract: bool = False,
        interfaces: tuple[str, ...] = (),
        factory: Callable[..., "Object"] | None = None,
        properties: tuple[PropertyDef, ...] = (),
        user_creatable: bool = True,
        data: Mapping[str, Any] = MappingProxyType({}),
    ) -> None:
        self.name = name
        self.parent = parent
        self.abstract = abstract
        self.interfaces = interfaces
        #: Builds an instance (None for abstract types and interfaces).
        self.factory = factory
        #: Class properties this type adds (in the order qom-list shows them).
        self.properties = properties
        #: QEMU's DeviceClass.user_creatable: whether device_add may create it.
        self.user_creatable = user_creatable
        #: Free-form class data (e.g. the CPU model a CPU type stands for).
        self.data = data


class TypeRegistry:
    """Every QOM type qmpd knows, in registration order."""

    def __init__(self) -> None:
        self._types: dict[str, TypeInfo] = {}
        #: class_properties per type, by name (types never change once registered).
        self._class_props: dict[str, dict[str, PropertyDef]] = {}

    def register(self, info: TypeInfo) -> TypeInfo:
        """Add a type; its parent must already be known."""
        if info.name in self._types:
            raise ValueError(f"type {info.name} registered twice")
        if info.parent is not None and info.parent not in self._types:
            raise ValueError(f"type {info.name}: unknown parent {info.parent}")
        self._types[info.name] = info
        self._class_props.clear()
        return info

    def get(self, name: str) -> TypeInfo | None:
        """The type called ``name``, if any."""
        return self._types.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[TypeInfo]:
        return iter(self._types.values())

    def ancestry(self, name: str) -> list[TypeInfo]:
        """The type and its ancestors, most derived first."""
        chain = []
        info = self._types.get(name)
        while info is not None:
            chain.append(info)
            info = self._types.get(info.parent) if info.parent else None
        return chain

    def is_a(self, name: str, target: str) -> bool:
        """True when ``name`` is ``target``, derives from it, or implements it as an interface."""
        for info in self.ancestry(name):
            if info.name == target:
                return True
            for interface in info.interfaces:
                if any(i.name == target for i in self.ancestry(interface)):
                    return True
        return False

    def list_types(self, implements: str | None, abstract: bool) -> list[TypeInfo]:
        """``qom-list-types``: concrete types (and abstract ones when asked) that implement ``implements``."""
        if implements is not None and implements not in self._types:
            return []
        return [
            info
            for info in self._types.values()
            if (abstract or not info.abstract) and (implements is None or self.is_a(info.name, implements))
        ]

    def class_properties(self, name: str) -> list[PropertyDef]:
        """Class properties of a type, base classes first (QEMU's iteration order)."""
        return list(self._class_property_index(name).values())

    def class_property(self, type_name: str, name: str) -> PropertyDef | None:
        """One class property of a type, by name."""
        return self._class_property_index(type_name).get(name)

    def _class_property_index(self, name: str) -> dict[str, PropertyDef]:
        index = self._class_props.get(name)
        if index is None:
            index = {}
            for info in reversed(self.ancestry(name)):
                for prop in info.properties:
                    index.setdefault(prop.name, prop)
            self._class_props[name] = index
        return index
