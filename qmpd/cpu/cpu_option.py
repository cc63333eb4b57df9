"""``-cpu MODEL[,feat=on|off][,+feat][,-feat][,prop=value]`` as QEMU parses it.

``prop=value`` items become global properties of the model's type (so CPUs
hot-plugged later get them too); the legacy ``+feat``/``-feat`` lists are
applied after them, minus last.  Mixing both forms for one feature gets
QEMU's "Ambiguous CPU model string" warnings.  Values are text, converted
as QEMU's string visitor converts them.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

from typing import Any, NamedTuple

from qmpd.cpu.models import CPUModel, cpu_models, cpu_properties, feature_aliases, find_model
from qmpd.inttypes import INT_RANGES, is_unsigned


class CPUOptionError(ValueError):
    """A -cpu value QEMU rejects; the text is QEMU's."""


class CPUOption(NamedTuple):
    """A parsed -cpu option."""

    model: CPUModel
    #: Global properties in order: (property name, value text).
    globals: tuple[tuple[str, str], ...]
    plus: frozenset[str]
    minus: frozenset[str]
    warnings: tuple[str, ...]


_TRUE = {"on", "yes", "true", "y"}
_FALSE = {"off", "no", "false", "n"}


def property_types() -> dict[str, str]:
    """Property name -> QOM type for every x86 CPU property."""
    return {p.name: p.type for p in cpu_properties()}


def parse_value(type_name: str, name: str, text: str) -> Any:
    """A property value given as text (-cpu, device_add strings), QEMU's string visitor rules."""
    if type_name == "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise CPUOptionError(f"Parameter '{name}' expects 'on' or 'off'")
    if type_name in INT_RANGES:
        stripped = text.strip()
        try:
            value = int(stripped, 16) if stripped.lower().startswith(("0x", "-0x")) else int(stripped, 10)
        except ValueError:
            kind = "uint64" if is_unsigned(type_name) else "int64"
            raise CPUOptionError(f"Parameter '{name}' expects {kind}") from None
        low, high = INT_RANGES[type_name]
        if not low <= value <= high:
            raise CPUOptionError(f"Parameter '{name}' expects {type_name}")
        return value
    return text


def parse_cpu_option(text: str) -> CPUOption:
    """Parse -cpu; raise CPUOptionError with QEMU's text."""
    name, _, rest = text.partition(",")
    model = find_model(name) if not name.endswith("-x86_64-cpu") else None
    if model is None:
        raise CPUOptionError(f"unable to find CPU model '{name}'")
    typename = f"{name}-x86_64-cpu"
    types = property_types()
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
        globals_.append((key, value))
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
    for key, value in globals_:
        if key not in types:
            raise CPUOptionError(f"can't apply global {typename}.{key}={value}: Property '{typename}.{key}' not found")
        try:
            parsed = parse_value(types[key], key, value)
            _check_identity(key, parsed)
        except CPUOptionError as exc:
            raise CPUOptionError(f"can't apply global {typename}.{key}={value}: {exc}") from None
    return CPUOption(model, tuple(globals_), frozenset(plus), frozenset(minus), tuple(warnings))


def _check_identity(key: str, value: Any) -> None:
    ranges = {"family": (0, 0xFF + 0xF), "model": (0, 0xFF), "stepping": (0, 0xF), "tsc-frequency": (0, (1 << 63) - 1)}
    if key in ranges and not ranges[key][0] <= value <= ranges[key][1]:
        low, high = ranges[key]
        raise CPUOptionError(f"Property .{key} doesn't take value {value} (minimum: {low}, maximum: {high})")
    if key == "vendor" and len(value) != 12:
        raise CPUOptionError(f"Property '.vendor' doesn't take value '{value}'")


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
