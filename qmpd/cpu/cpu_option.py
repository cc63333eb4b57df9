"""``-cpu MODEL[,feat=on|off][,+feat][,-feat][,prop=value]`` as QEMU parses it.

``prop=value`` items become global properties of the model's type (so CPUs
hot-plugged later get them too); the legacy ``+feat``/``-feat`` lists are
applied after them, minus last.  Mixing both forms for one feature gets
QEMU's "Ambiguous CPU model string" warnings.  Values are text, converted
as QEMU's string visitor converts them.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

from functools import cache
from typing import Any

from qmpd.cpu.models import (
    CPUModel,
    PropertyInfo,
    cpu_models,
    cpu_properties,
    feature_aliases,
    find_model,
    value_error,
)
from qmpd.inttypes import INT_RANGES, is_unsigned, parse_c_integer
from qmpd.qemuopts import parse_bool
from qmpd.qom.enums import enum_error


class CPUOptionError(ValueError):
    """A -cpu value QEMU rejects; the text is QEMU's."""


class CPUOption:
    """A parsed -cpu option."""

    __slots__ = ("globals", "minus", "model", "plus", "warnings")

    def __init__(
        self,
        model: CPUModel,
        globals: tuple[tuple[str, str], ...],
        plus: frozenset[str],
        minus: frozenset[str],
        warnings: tuple[str, ...],
    ) -> None:
        self.model = model
        #: Global properties in order: (property name, value text).
        self.globals = globals
        self.plus = plus
        self.minus = minus
        self.warnings = warnings


def property_types() -> dict[str, str]:
    """Property name -> QOM type for every x86 CPU property."""
    return {p.name: p.type for p in cpu_properties()}


def parse_value(type_name: str, name: str, text: str) -> Any:
    """A property value given as text (-cpu, HMP qom-set), QEMU's string input visitor rules."""
    if type_name == "bool":
        return parse_bool(name, text, CPUOptionError)
    if type_name in INT_RANGES:
        unsigned = is_unsigned(type_name)
        value = parse_c_integer(text, unsigned=unsigned)
        if value is None:
            raise CPUOptionError(f"Parameter '{name}' expects {'uint64' if unsigned else 'int64'}")
        low, high = INT_RANGES[type_name]
        if not low <= value <= high:
            raise CPUOptionError(f"Parameter '{name}' expects {type_name}_t")
        return value
    refused = enum_error(type_name, name, text)
    if refused is not None:
        raise CPUOptionError(refused)
    return text


def parse_cpu_option(text: str) -> CPUOption:
    """Parse -cpu; raise CPUOptionError with QEMU's text."""
    name, _, rest = text.partition(",")
    model = find_model(name) if not name.endswith("-x86_64-cpu") else None
    if model is None:
        raise CPUOptionError(f"unable to find CPU model '{name}'")
    typename = f"{name}-x86_64-cpu"
    aliases = feature_aliases()
    globals_: list[tuple[str, str]] = []
    plus: set[str] = set()
    minus: set[str] = set()
    plus_raw: dict[str, str] = {}
    minus_raw: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        if item[0] in "+-":
            feature = item[1:]
            if feature not in aliases:
                raise CPUOptionError(f"Property '{typename}.{feature}' not found")
            (plus if item[0] == "+" else minus).add(aliases[feature])
            (plus_raw if item[0] == "+" else minus_raw)[aliases[feature]] = item
            continue
        key, sep, value = item.partition("=")
        if not sep:
            value = "on"
        globals_.append((key.replace("_", "-"), value))  # QEMU's feat2prop
    warnings = []
    ambiguous = False
    for key, value in globals_:
        canonical = aliases.get(key)
        if canonical is None:
            continue
        for raw in (plus_raw, minus_raw):
            if canonical in raw:
                warnings.append(f'Ambiguous CPU model string. Don\'t mix both "{raw[canonical]}" and "{key}={value}"')
                ambiguous = True
    if ambiguous:
        warnings.append("Compatibility of ambiguous CPU model strings won't be kept on future QEMU versions")
    given = {key for key, _ in globals_}
    for key, value in globals_:
        try:
            _check_global(typename, key, value, given)
        except CPUOptionError as exc:
            raise CPUOptionError(f"can't apply global {typename}.{key}={value}: {exc}") from None
    return CPUOption(model, tuple(globals_), frozenset(plus), frozenset(minus), tuple(warnings))


def _check_global(typename: str, key: str, value: str, given: set[str]) -> None:
    """What QEMU's object_property_parse would refuse when it applies ``key=value`` to a new CPU."""
    info = _property_infos().get(key)
    if info is None:
        raise CPUOptionError(f"Property '{typename}.{key}' not found")
    if not info.writable:
        raise CPUOptionError(f"Property '{typename}.{key}' is not writable")
    parsed = parse_value(info.type, key, value)
    refused = value_error(key, parsed)
    if refused is not None:
        raise CPUOptionError(refused)
    if key == "realized" and parsed:
        raise CPUOptionError(_early_realize_error(given))


def _early_realize_error(given: set[str]) -> str:
    """A global realized=on realizes each CPU as it is made, before the board gives it an APIC ID.

    QEMU's pre-plug check then refuses it (the first topology id not set, in the usual case);
    qmpd refuses it in every case, since the board could not set the APIC ID afterwards anyway.
    """
    if "apic-id" not in given:
        for name in ("socket-id", "core-id", "thread-id"):
            if name not in given:
                return f"CPU {name} is not set"
    return "a CPU cannot be realized before the board chooses its slot"


@cache
def _property_infos() -> dict[str, PropertyInfo]:
    return {p.name: p for p in cpu_properties()}


def cpu_help() -> str:
    """``-cpu help``, in QEMU's layout."""
    lines = ["Available CPUs:"]
    for model in sorted(cpu_models().values(), key=lambda m: m.name.lower()):
        if model.versioned:
            lines.append(f"x86 {model.name:<22}(alias configured by machine type)")
            lines.append(f"x86 {model.versioned:<22}")
        else:
            lines.append(f"x86 {model.name:<22}")
    return "\n".join(lines) + "\n"
