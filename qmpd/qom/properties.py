"""QOM properties: a name, a type string, a getter, a setter, and QEMU's value rules.

Values given to ``qom-set`` are checked the way QEMU's QObject input visitor
checks them (strict JSON types, sized integers, "Parameter 'x' expects
uint32"), and properties that cannot be read or written fail with QEMU's
texts.  ``child<T>`` properties read as the child's canonical path;
``link<T>`` properties read as the target's path (or "" when unset).
"""

# Annotations are not postponed here: its record is made at every start (tests/unit/test_startup_imports.py).

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qmpd.errors import GenericError
from qmpd.inttypes import INT_RANGES, is_unsigned
from qmpd.qom.enums import ENUM_VALUES, enum_error

if TYPE_CHECKING:
    from qmpd.qom.object import Object

Getter = Callable[["Object"], Any]
Setter = Callable[["Object", Any], None]


def visit_value(kind: str, name: str, value: Any) -> Any:
    """Check ``value`` as QEMU's strict input visitor checks a property of type ``kind``."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise GenericError(f"Invalid parameter type for '{name}', expected: boolean")
        return value
    if kind in ("string", "str"):
        if not isinstance(value, str):
            raise GenericError(f"Invalid parameter type for '{name}', expected: string")
        return value
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        if is_unsigned(kind):
            if not isinstance(value, int) or isinstance(value, bool) or not -(1 << 63) <= value < 1 << 64:
                raise GenericError(f"Parameter '{name}' expects uint64")
            if value < 0:
                value += 1 << 64
        elif not isinstance(value, int) or isinstance(value, bool) or not -(1 << 63) <= value < 1 << 63:
            raise GenericError(f"Invalid parameter type for '{name}', expected: integer")
        if not low <= value <= high:
            raise GenericError(f"Parameter '{name}' expects {kind}_t")  # visit_type_uintN/intN's text
        return value
    if kind in ENUM_VALUES:
        if not isinstance(value, str):
            raise GenericError(f"Invalid parameter type for '{name}', expected: string")
        refused = enum_error(kind, name, value)
        if refused is not None:
            raise GenericError(refused)
    return value


class PropertyDef:
    """A property as a type declares it; instances share the definition."""

    __slots__ = (
        "alias_of",
        "default",
        "description",
        "get_error",
        "getter",
        "has_default",
        "instance",
        "name",
        "setter",
        "static",
        "type",
    )

    def __init__(
        self,
        name: str,
        type: str,
        getter: Getter | None = None,
        setter: Setter | None = None,
        description: str | None = None,
        default: Any = None,
        has_default: bool = False,
        static: bool = False,
        get_error: str | None = None,
        alias_of: str | None = None,
        instance: bool = False,
    ) -> None:
        self.name = name
        self.type = type
        self.getter = getter
        self.setter = setter
        self.description = description
        #: Shown by device-list-properties as ``default-value`` (static properties).
        self.default = default
        self.has_default = has_default
        #: A qdev static property: refused once the device is realized.
        self.static = static
        #: Error text for a getter that always fails (QEMU's "No crash occurred").
        self.get_error = get_error
        #: For alias properties: the property errors are reported under.
        self.alias_of = alias_of
        #: Added by each instance (QEMU's object_property_add in instance_init), not by the class: an abstract
        #: type's qom-list-properties, which lists class properties only, leaves it out.
        self.instance = instance

    @property
    def is_child(self) -> bool:
        """True for ``child<T>`` properties."""
        return self.type.startswith("child<")

    @property
    def is_link(self) -> bool:
        """True for ``link<T>`` properties."""
        return self.type.startswith("link<")

    def info(self, *, description: bool = False, default: bool = False) -> dict[str, Any]:
        """ObjectPropertyInfo: qom-list shows name and type, qom-list-properties adds the
        description, device-list-properties also the default value."""
        entry: dict[str, Any] = {"name": self.name, "type": self.type}
        if description and self.description is not None:
            entry["description"] = self.description
        if default and self.has_default:
            entry["default-value"] = self.default
        return entry
