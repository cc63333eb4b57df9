"""State saved by its owner, as QEMU's VMState: each device and vCPU describes, checks and loads its own fields.

An owner has a section of the saved machine, named ``state_name`` and versioned by ``state_version``:

- ``save_state()`` returns the section as plain JSON data (the machine is paused);
- ``check_state(state, version)`` reads a saved section of that version, changing nothing, and returns
  it checked, or raises one StateError that names the wrong field;
- ``load_state(checked)`` applies a checked section (it cannot fail on a checked value).

So a device renames its fields in one place, and the migration package (which writes the stream,
checks every section before anything is applied and rolls back) never names another object's
fields.  This module sits low: devices, vCPUs and the migration package import it; it imports
nothing of theirs.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from qmpd.errors import GenericError

U8, U16, U32, U64, U128 = (1 << 8) - 1, (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1, (1 << 128) - 1

Checked = TypeVar("Checked")


class StateError(GenericError):
    """A saved state does not fit this machine (the text names the field)."""


class StateOwner(Protocol[Checked]):
    """A device or vCPU that saves, checks and loads its own section of a saved machine."""

    #: The section's name in the saved machine.
    state_name: str
    #: The newest section layout this owner writes and reads (it reads every older one too).
    state_version: int

    def save_state(self) -> dict[str, Any]: ...

    def check_state(self, state: Any, version: int) -> Checked: ...

    def load_state(self, checked: Checked) -> None: ...


def invalid(where: str, problem: str) -> StateError:
    """The one wording of a wrong field."""
    return StateError(f"invalid machine description: '{where}': {problem}")


def check_version(name: str, version: Any, newest: int) -> int:
    """A section's saved version, if this qmpd reads it."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise invalid(f"state_versions.{name}", "expected a positive integer")
    if version > newest:
        raise StateError(f"the saved '{name}' state has version {version}; this qmpd reads up to version {newest}")
    return version


# -- typed field readers (``where`` is the path of the object the field is in) ----------------------


def _name(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def fields(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(where, "expected an object")
    return value


def items(within: dict[str, Any], key: str, most: int, where: str = "") -> list[Any]:
    value = within.get(key)
    if not isinstance(value, list) or len(value) > most:
        raise invalid(_name(where, key), f"expected a list of at most {most}")
    return value


def string(within: dict[str, Any], key: str, where: str = "") -> str:
    value = within.get(key)
    if not isinstance(value, str):
        raise invalid(_name(where, key), "expected a string")
    return value


def optional_string(within: dict[str, Any], key: str, where: str = "") -> str | None:
    value = within.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(_name(where, key), "expected a string or null")
    return value


def boolean(within: dict[str, Any], key: str, where: str = "") -> bool:
    value = within.get(key)
    if not isinstance(value, bool):
        raise invalid(_name(where, key), "expected a boolean")
    return value


def integer(within: dict[str, Any], key: str, most: int, where: str = "") -> int:
    return checked_integer(within.get(key), most, _name(where, key))


def optional_integer(within: dict[str, Any], key: str, most: int, where: str = "") -> int | None:
    value = within.get(key)
    return None if value is None else checked_integer(value, most, _name(where, key))


def checked_integer(value: Any, most: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise invalid(name, f"expected an integer in 0..{most}")
    return value


def integers(value: Any, length: int, most: int, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != length:
        raise invalid(name, f"expected {length} integers")
    return tuple(checked_integer(item, most, name) for item in value)
