"""The QOM type ``qmpd-guest-policy``: how the bundled firmware answers CPU hot-plug, set from QMP.

Made with ``-object``/``object-add``, changed with ``qom-set`` at any time, removed with
``object-del``; the machine turns every policy object into one table of per-slot policies that
qmpd's guest-policy device (qmpd.devices.guest_policy) serves to the firmware.  The guest acts
on it over the ACPI registers; qmpd fakes nothing.

Several policies may apply to the same slot: the most specific wins.  A policy with ``slots``
is more specific than one without; between two with ``slots``, the one naming fewer slots; between
two otherwise equal, the one created last.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from qmpd.devices.guest_policy import DEFAULT_POLICY, SlotPolicy
from qmpd.errors import GenericError
from qmpd.qom.enums import ENUM_VALUES
from qmpd.qom.object import Object
from qmpd.qom.properties import PropertyDef, visit_value
from qmpd.qom.types import TypeInfo, TypeRegistry

TYPE_NAME = "qmpd-guest-policy"
#: Bounds: the longest wait asked of the guest, the highest slot a list may name (qmpd's
#: largest machine has 1024), and how many policies may exist at once.
MAX_DELAY_MS = 60_000
MAX_SLOT = 1023
MAX_POLICIES = 64
_PLUG = ENUM_VALUES["QmpdGuestPlugAction"]
_UNPLUG = ENUM_VALUES["QmpdGuestUnplugAction"]
_EVENT = ENUM_VALUES["QmpdGuestEventAction"]
#: The properties' defaults (a slot no policy names behaves so).
POLICY_DEFAULTS = {
    "on-plug": "online",
    "on-unplug": "eject",
    "ost-status": 1,
    "delay-ms": 0,
    "on-event": "none",
    "slots": "",
}
#: One item of ``slots`` (compiled with the first use, in re's cache: most machines have no policy object).
_ITEM = r"([0-9]+)(?:-([0-9]+))?\Z"


def out_of_range(name: str, value: int, most: int) -> GenericError:
    """QEMU's text for a number a property refuses (QERR_PROPERTY_VALUE_OUT_OF_RANGE)."""
    return GenericError(f"Property '{TYPE_NAME}.{name}' doesn't take value {value} (minimum: 0, maximum: {most})")


def parse_slots(text: str) -> frozenset[int] | None:
    """``"1,3-5"`` -> {1, 3, 4, 5}; ``""`` -> None (every slot).  QEMU's list-visitor text when malformed."""
    if text == "":
        return None
    slots: set[int] = set()
    for item in text.split(","):
        match = re.match(_ITEM, item)
        if match is None:
            raise GenericError("Parameter 'slots' expects a uint64 value or range")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise GenericError("Parameter 'slots' expects a uint64 value or range")
        if high > MAX_SLOT:
            raise out_of_range("slots", high, MAX_SLOT)
        slots.update(range(low, high + 1))
    return frozenset(slots)


class GuestPolicy(Object):
    """One policy object; its properties are the firmware's behaviour for the slots it names."""

    def __init__(self, registry: TypeRegistry, type_name: str) -> None:
        super().__init__(registry, type_name)
        self.on_plug = "online"
        self.on_unplug = "eject"
        self.ost_status = 1
        self.delay_ms = 0
        self.on_event = "none"
        self.slots_text = ""
        self.slots: frozenset[int] | None = None
        #: Creation order (the machine's counter): the later of two equally specific policies wins.
        self.sequence = 0

    def values(self) -> dict[str, Any]:
        """The properties, as qom-get reads them."""
        return {
            "on-plug": self.on_plug,
            "on-unplug": self.on_unplug,
            "ost-status": self.ost_status,
            "delay-ms": self.delay_ms,
            "on-event": self.on_event,
            "slots": self.slots_text,
        }

    def slot_policy(self) -> SlotPolicy:
        """What the device reports for a slot this policy governs."""
        return SlotPolicy(
            _PLUG.index(self.on_plug),
            _UNPLUG.index(self.on_unplug),
            self.ost_status,
            self.delay_ms,
            _EVENT.index(self.on_event),
        )


def check_value(name: str, value: Any) -> Any:
    """``value`` for property ``name`` as qom-set would take it, or the error qom-set would give."""
    kind = {prop.name: prop.type for prop in _PROPERTIES}.get(name)
    if kind is None:
        raise GenericError(f"Property '{TYPE_NAME}.{name}' not found")
    value = visit_value(kind, name, value)
    if name == "delay-ms" and value > MAX_DELAY_MS:
        raise out_of_range(name, value, MAX_DELAY_MS)
    if name == "slots":
        parse_slots(value)
    return value


def _setter(name: str, attribute: str) -> Any:
    def set_value(obj: Object, value: Any) -> None:
        assert isinstance(obj, GuestPolicy)
        value = check_value(name, value)
        if name == "slots":
            obj.slots = parse_slots(value)
        setattr(obj, attribute, value)

    return set_value


def _getter(name: str) -> Any:
    def get_value(obj: Object) -> Any:
        assert isinstance(obj, GuestPolicy)
        return obj.values()[name]

    return get_value


def _property(name: str, kind: str, attribute: str, description: str) -> PropertyDef:
    return PropertyDef(name, kind, getter=_getter(name), setter=_setter(name, attribute), description=description)


_PROPERTIES = (
    _property(
        "on-plug", "QmpdGuestPlugAction", "on_plug", "online (default), ignore (no _OST), fail (_OST ost-status)"
    ),
    _property("on-unplug", "QmpdGuestUnplugAction", "on_unplug", "eject (default), ignore, refuse (_OST ost-status)"),
    _property("ost-status", "uint8", "ost_status", "_OST status for fail and refuse (default 1)"),
    _property("delay-ms", "uint32", "delay_ms", f"the guest waits this long before acting (0-{MAX_DELAY_MS})"),
    _property(
        "on-event", "QmpdGuestEventAction", "on_event", "none (default), panic, triple-fault, hang: the handling CPU"
    ),
    _property("slots", "string", "slots_text", "CPU slots it applies to, e.g. 1,3-5 (default: all)"),
)


def register_guest_policy_type(registry: TypeRegistry) -> None:
    """The user-creatable type."""
    registry.register(
        TypeInfo(TYPE_NAME, "object", interfaces=("user-creatable",), factory=GuestPolicy, properties=_PROPERTIES)
    )


def _ranked(policies: Iterable[GuestPolicy]) -> list[GuestPolicy]:
    """Most specific first: a slot list before no list, fewer slots first, then the newest."""
    return sorted(policies, key=lambda p: (p.slots is None, len(p.slots or ()), -p.sequence))


def effective_policies(policies: Iterable[GuestPolicy], slot_count: int) -> tuple[SlotPolicy, ...]:
    """Every slot's policy by the most-specific rule (the default where none applies)."""
    ranked = _ranked(policies)
    table = []
    for index in range(slot_count):
        chosen = next((p for p in ranked if p.slots is None or index in p.slots), None)
        table.append(chosen.slot_policy() if chosen is not None else DEFAULT_POLICY)
    return tuple(table)


def governing_policy(policies: Iterable[GuestPolicy], index: int) -> GuestPolicy | None:
    """The policy object that governs slot ``index`` (None: the default)."""
    return next((p for p in _ranked(policies) if p.slots is None or index in p.slots), None)
