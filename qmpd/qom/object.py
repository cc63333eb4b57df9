"""QOM objects and the tree they form.

Objects are placed in the tree by ``child<T>`` properties (one parent each);
``link<T>`` properties point anywhere.  The canonical path is computed by
walking parents, never stored.  Path lookup follows QEMU's
object_resolve_path: absolute paths walk child and link properties (empty
components are skipped, so ``//machine`` works); a relative path matches
any object whose path ends with its components, and is ambiguous when more
than one does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from qmpd.errors import DeviceNotFound, GenericError
from qmpd.qom.properties import PropertyDef, visit_value
from qmpd.qom.types import TypeInfo, TypeRegistry


class Object:
    """An instance of a QOM type (QOM's Object; QEMU's QObject is a JSON value, see qmpd/qobject/)."""

    def __init__(self, registry: TypeRegistry, type_name: str) -> None:
        info = registry.get(type_name)
        if info is None:
            raise ValueError(f"unknown QOM type {type_name}")
        self.registry = registry
        self.type_name = type_name
        #: The object holding the child<> property that owns this one.
        self.parent: Object | None = None
        #: The name of that property.
        self.name_in_parent: str | None = None
        self._instance_props: dict[str, PropertyDef] = {}
        self._children: dict[str, Object] = {}
        self._links: dict[str, Object | None] = {}

    @property
    def type_info(self) -> TypeInfo:
        """This object's type."""
        info = self.registry.get(self.type_name)
        assert info is not None
        return info

    # -- properties -----------------------------------------------------------------

    def properties(self) -> list[PropertyDef]:
        """Every property, class ones first (base classes first), then instance ones."""
        return self.registry.class_properties(self.type_name) + list(self._instance_props.values())

    def find_property(self, name: str) -> PropertyDef | None:
        """The property called ``name``, or None."""
        prop = self._instance_props.get(name)
        if prop is not None:
            return prop
        return self.registry.class_property(self.type_name, name)

    def _property_or_error(self, name: str) -> PropertyDef:
        prop = self.find_property(name)
        if prop is None:
            raise GenericError(f"Property '{self.type_name}.{name}' not found")
        return prop

    def get_property(self, name: str) -> Any:
        """qom-get."""
        prop = self._property_or_error(name)
        if prop.is_child:
            return self._children[name].canonical_path()
        if prop.is_link and prop.getter is None:
            target = self._links.get(name)
            return target.canonical_path() if target is not None else ""
        if prop.get_error is not None:
            raise GenericError(prop.get_error.replace("{type}", self.type_name))
        if prop.getter is None:
            raise GenericError(f"Property '{self.type_name}.{name}' is not readable")
        return prop.getter(self)

    def set_property(self, name: str, value: Any) -> None:
        """qom-set (value already parsed from JSON)."""
        prop = self._property_or_error(name)
        if prop.setter is None or prop.is_child:
            raise GenericError(f"Property '{self.type_name}.{name}' is not writable")
        self.check_settable(prop)
        if not prop.is_link:
            value = visit_value(prop.type, name, value)
        prop.setter(self, value)

    def check_settable(self, prop: PropertyDef) -> None:
        """Hook for devices: static properties are frozen once realized."""

    def add_property(self, prop: PropertyDef) -> None:
        """Add an instance property (QEMU's object_property_add)."""
        if self.find_property(prop.name) is not None:
            raise ValueError(f"property {prop.name} already exists on {self.type_name}")
        self._instance_props[prop.name] = prop

    # -- the tree -------------------------------------------------------------------

    def add_child(self, name: str, child: Object) -> Object:
        """Make ``child`` this object's child ``name`` (a child<T> property)."""
        if child.parent is not None:
            raise ValueError(f"{child.type_name} already has a parent")
        self.add_property(PropertyDef(name, f"child<{child.type_name}>"))
        self._children[name] = child
        child.parent = self
        child.name_in_parent = name
        return child

    def remove_child(self, name: str) -> Object:
        """Unparent child ``name`` (QEMU's object_unparent)."""
        child = self._children.pop(name)
        del self._instance_props[name]
        child.parent = None
        child.name_in_parent = None
        return child

    def child(self, name: str) -> Object | None:
        """The child called ``name``."""
        return self._children.get(name)

    def child_count(self) -> int:
        """How many children this object has (without copying them, unlike :meth:`children`)."""
        return len(self._children)

    def children(self) -> Iterator[tuple[str, Object]]:
        """(name, child) pairs in property order."""
        return iter(list(self._children.items()))

    def add_link(self, name: str, target_type: str, target: Object | None = None, setter: Any = None) -> None:
        """A link<T> property stored on this object."""
        self.add_property(PropertyDef(name, f"link<{target_type}>", setter=setter))
        self._links[name] = target

    def link_target(self, name: str) -> Object | None:
        """Where link ``name`` points (None when unset)."""
        return self._links.get(name)

    def set_link_target(self, name: str, target: Object | None) -> None:
        """Point link ``name`` at ``target``."""
        self._links[name] = target

    def canonical_path(self) -> str:
        """The path from the root, computed by walking parents."""
        parts: list[str] = []
        node: Object | None = self
        while node is not None and node.parent is not None:
            assert node.name_in_parent is not None
            parts.append(node.name_in_parent)
            node = node.parent
        return "/" + "/".join(reversed(parts))

    def root(self) -> Object:
        """The root of this object's tree."""
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def walk(self) -> Iterator[Object]:
        """This object and all its descendants (through child<> properties)."""
        yield self
        for _, child in self.children():
            yield from child.walk()


class Container(Object):
    """QEMU's ``container``: an object that only holds children."""


def _component(node: Object, part: str) -> Object | None:
    child = node.child(part)
    if child is not None:
        return child
    prop = node.find_property(part)
    if prop is not None and prop.is_link:
        return node.link_target(part)
    return None


def _resolve_absolute(node: Object, parts: list[str]) -> Object | None:
    for part in parts:
        if part == "":
            continue
        found = _component(node, part)
        if found is None:
            return None
        node = found
    return node


def _resolve_partial(node: Object, parts: list[str]) -> tuple[Object | None, bool]:
    found = _resolve_absolute(node, parts)
    for _, child in node.children():
        match, ambiguous = _resolve_partial(child, parts)
        if ambiguous:
            return None, True
        if match is not None:
            if found is not None:
                return None, True
            found = match
    return found, False


def resolve_path(root: Object, path: str) -> tuple[Object | None, bool]:
    """(object, ambiguous) for ``path``, by QEMU's rules."""
    parts = path.split("/")
    if parts[0] == "" and path != "":
        return _resolve_absolute(root, parts[1:]), False
    return _resolve_partial(root, parts)


def resolve_at(node: Object, path: str) -> Object | None:
    """QEMU's object_resolve_path_at: ``path`` walked from ``node`` (no partial matching)."""
    return _resolve_absolute(node, path.split("/"))


def lookup(root: Object, path: str, *, report_ambiguity: bool = False) -> Object:
    """Resolve ``path`` or raise QEMU's error (qom-list reports ambiguity, qom-get/set do not)."""
    obj, ambiguous = resolve_path(root, path)
    if obj is None:
        if ambiguous and report_ambiguity:
            raise GenericError(f"Path '{path}' is ambiguous")
        raise DeviceNotFound(f"Device '{path}' not found")
    return obj


__all__ = ["Container", "Object", "lookup", "resolve_at", "resolve_path", "visit_value"]
