"""Every CPU model against QEMU 7.2: its query-cpu-definitions entry, its static and full
query-cpu-model-expansion, and qom-get of every property of a realized CPU of that model.

The models are QEMU's own list; the realized CPUs are boot CPUs (``-machine pc -cpu MODEL -S``), one
QEMU and one qmpd per model (a versioned name and its alias once), a few models at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.differential.sweep import Differences, Pair, started
from tests.helpers import REPO

pytestmark = pytest.mark.qemu
CPU0 = "/machine/unattached/device[0]"
#: Models realized side by side (each a QEMU and a qmpd).
PARALLEL = 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with started(tmp_path_factory.mktemp("models"), ["-S", "-machine", "none", "-nodefaults"]) as both:
        yield both


def _definitions(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in reply["return"]}


def _compare_props(sweep: Differences, model: str, want: dict[str, Any], got: dict[str, Any]) -> None:
    sweep.count("properties", len(want))
    for name in sorted(set(want) | set(got)):
        theirs, ours = want.get(name, KeyError), got.get(name, KeyError)
        if theirs == ours:
            continue
        if name in FEATURE_LISTS and isinstance(theirs, tuple) and isinstance(ours, tuple):
            _compare_features(sweep, model, name, theirs[1], ours[1])
        else:
            sweep.differ("model", f"{model}.{name}", want.get(name), got.get(name))


#: Properties whose value is a set of features: compared feature by feature (``model:NAME.FEATURE``).
FEATURE_LISTS = ("unavailable-features", "feature-words", "filtered-features")
_REGISTERS = {"EAX": 0, "EBX": 1, "ECX": 2, "EDX": 3}


def _bit_names() -> dict[tuple[int, int | None, str, int], str]:
    """CPUID bit -> feature name, from the property table qmpd measured on QEMU (tools/gen_cpu_tables.py)."""
    table = json.loads((REPO / "qmpd" / "cpu" / "data" / "x86_cpu_properties.json").read_text())
    names = {}
    for entry in table["properties"]:
        if "cpuid" in entry and "alias_of" not in entry:
            leaf, subleaf, register, bit = entry["cpuid"]
            names[(leaf, subleaf, register, bit)] = entry["name"]
    # XSAVE state components, by the feature that enables each (QEMU's x86_ext_save_areas).
    for bit, feature in ((0, "fpu"), (1, "sse"), (2, "avx"), (3, "mpx"), (4, "mpx"), (5, "avx512f"), (6, "avx512f")):
        names[(0xD, 0, "EAX", bit)] = feature
    for bit, feature in ((7, "avx512f"), (9, "pku"), (17, "amx-tile"), (18, "amx-tile")):
        names[(0xD, 0, "EAX", bit)] = feature
    return names


def _features(reply: dict[str, Any]) -> set[str]:
    """A reply of a feature list or of feature words, as feature names (unnamed bits as word[bit])."""
    value = reply.get("return")
    if not isinstance(value, list):
        return {json.dumps(reply)}
    if all(isinstance(item, str) for item in value):
        return set(value)
    names = _bit_names()
    out = set()
    for word in value:
        key = (word["cpuid-input-eax"], word.get("cpuid-input-ecx"), word["cpuid-register"])
        for bit in range(32):
            if word["features"] >> bit & 1:
                out.add(names.get((*key, bit), f"cpuid[{key[0]:#x},{key[1]},{key[2]}][{bit}]"))
    return out


def _compare_features(sweep: Differences, model: str, name: str, want: Any, got: Any) -> None:
    theirs, ours = _features(want), _features(got)
    for feature in sorted(theirs ^ ours):
        sweep.differ("model", f"{model}.{feature}", f"{name} has it: {feature in theirs}", feature in ours)


def _compare_definition(sweep: Differences, name: str, want: dict[str, Any], got: dict[str, Any]) -> None:
    for field in sorted(set(want) | set(got)):
        if field == "unavailable-features":
            theirs, ours = set(want.get(field, ())), set(got.get(field, ()))
            for feature in sorted(theirs ^ ours):
                sweep.differ("model", f"{name}.{feature}", feature in theirs, feature in ours)
            if theirs == ours and want[field] != got[field]:
                sweep.differ("model", f"{name}.{field}", want[field], got[field])
        elif want.get(field) != got.get(field):
            sweep.differ("model", f"{name}.{field}", want.get(field), got.get(field))


def test_definitions_and_expansions(pair: Pair) -> None:
    sweep = Differences("query-cpu-definitions/query-cpu-model-expansion")
    qemu, qmpd = (_definitions(reply) for reply in pair.ask("query-cpu-definitions"))
    for name in sorted(set(qemu) | set(qmpd)):
        if name not in qemu or name not in qmpd:
            sweep.differ("model", name, qemu.get(name), qmpd.get(name))
            continue
        sweep.count("models")
        _compare_definition(sweep, name, qemu[name], qmpd[name])
        for kind in ("static", "full"):
            theirs, ours = pair.ask("query-cpu-model-expansion", {"type": kind, "model": {"name": name}})
            if "error" in theirs or "error" in ours:
                if theirs != ours:
                    sweep.differ("model", f"{name}.({kind})", theirs, ours)
                continue
            if theirs["return"]["model"]["name"] != ours["return"]["model"]["name"]:
                sweep.differ("model", f"{name}.({kind} name)", theirs["return"], ours["return"])
            _compare_props(sweep, name, theirs["return"]["model"]["props"], ours["return"]["model"]["props"])
    sweep.check()


def _realized(tmp_path: Path, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every property of a boot CPU of ``model`` on QEMU and on qmpd: name -> (type, qom-get reply)."""
    argv = ["-S", "-machine", "pc", "-nodefaults", "-cpu", model]
    with started(tmp_path / model, argv) as both:
        out = []
        for client in (both.qemu, both.qmpd):
            listing = client.execute("qom-list", {"path": CPU0})["return"]
            values = {}
            for prop in listing:
                if not prop["type"].startswith("child<"):
                    reply = client.execute("qom-get", {"path": CPU0, "property": prop["name"]})
                    values[prop["name"]] = (prop["type"], reply)
            out.append(values)
        return out[0], out[1]


def test_every_property_of_a_realized_cpu_of_every_model(pair: Pair, tmp_path: Path) -> None:
    sweep = Differences("qom-get on a realized CPU of every model")
    qemu, qmpd = (_definitions(reply) for reply in pair.ask("query-cpu-definitions"))
    # A versioned name and its alias are one model: realize the alias. host and base cannot be realized.
    aliased = {entry["alias-of"] for entry in qemu.values() if "alias-of" in entry}
    models = sorted(name for name in set(qemu) & set(qmpd) if name not in aliased | {"host", "base"})
    for path in (tmp_path / name for name in models):
        path.mkdir()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda name: _realized(tmp_path, name), models))
    for name, (want, got) in zip(models, results, strict=True):
        sweep.count("models")
        _compare_props(sweep, name, want, got)
    sweep.check()
