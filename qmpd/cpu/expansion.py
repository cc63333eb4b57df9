"""query-cpu-definitions and query-cpu-model-expansion, answered from the CPU types.

``static`` expansion describes a model as ``base`` plus every feature flag
(and the identity properties); ``full`` lists every property of the model,
expanded as QEMU expands it before realize (levels computed).  Property
lists and their order come from QEMU's own expansions (the measured table).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from qmpd.cpu.models import (
    MSR_FEATURES,
    cpu_models,
    expansion_lists,
    feature_words,
    features,
    find_model,
    msr_feature_order,
)
from qmpd.cpu.tables import cached as cached_tables
from qmpd.cpu.x86cpu import X86CPU
from qmpd.errors import GenericError
from qmpd.qobject.writer import Encoded, encode_value
from qmpd.qom.types import TypeRegistry


def cpu_definitions() -> Encoded:
    """query-cpu-definitions' answer as QEMU writes it: it depends on the tables alone, so
    qmpd.cpu.tables holds it encoded (or it is encoded at its first use)."""
    made = cached_tables()
    return Encoded(made["definitions_text"] if made is not None else _definitions_text())


@cache
def _definitions_text() -> str:
    return encode_value(derive_definitions())


def derive_definitions() -> list[dict[str, Any]]:
    """CpuDefinitionInfo for every model, from the models: max, host and base first, then each model and
    its -v1 name."""
    out: list[dict[str, Any]] = []
    models = cpu_models()
    for model in sorted(
        models.values(),
        key=lambda m: (m.name not in ("max", "host", "base"), m.name != "max", m.name != "host", m.name),
    ):
        unavailable = sorted(model.unavailable, key=lambda name: _feature_order().get(name, 1 << 30))
        entry: dict[str, Any] = {
            "name": model.name,
            "typename": model.typename,
            "unavailable-features": unavailable,
            "static": model.static,
            "migration-safe": model.migration_safe,
            "deprecated": False,
        }
        if model.versioned:
            out.append({**entry, "name": model.versioned, "typename": f"{model.versioned}-x86_64-cpu"})
            entry["alias-of"] = model.versioned
        out.append(entry)
    return out


@cache
def _feature_order() -> dict[str, int]:
    words = {word: index for index, word in enumerate(reversed(feature_words()))}
    order = {name: words.get(f.word, 99) * 64 + f.bit for name, f in features().items()}
    return order | {name: msr_feature_order(name) for name in MSR_FEATURES}


def expand_model(registry: TypeRegistry, kind: str, name: str, props: Any) -> dict[str, Any]:
    """CpuModelExpansionInfo for ``name`` with ``props`` applied."""
    model = find_model(name) if not name.endswith("-x86_64-cpu") else None
    if model is None:
        raise GenericError(f"CPU model '{name}' not found")
    if props is not None and not isinstance(props, dict):
        raise GenericError("Invalid parameter type for 'props', expected: dict")
    info = registry.get(model.typename)
    assert info is not None and info.factory is not None
    cpu = info.factory(registry, model.typename)
    assert isinstance(cpu, X86CPU)
    for key, value in (props or {}).items():
        cpu.set_property(key, value)
    cpu.expand()
    static_names, full_names = expansion_lists()
    if kind == "static":
        values = {key: cpu.get_property(key) for key in static_names}
        return {"model": {"name": "base", "props": values}}
    if kind == "full":
        values = {key: cpu.get_property(key) for key in full_names}
        for ancestor in registry.ancestry(model.typename):  # the model's own class properties (max's, host's)
            if ancestor.name == "x86_64-cpu":
                break
            for prop in ancestor.properties:
                values[prop.name] = cpu.get_property(prop.name)
        return {"model": {"name": name, "props": values}}
    raise GenericError("Unsupported expansion type")
