"""Every QOM type both list, against QEMU 7.2: its parent and abstractness (qom-list-types), and every
property qom-list-properties and device-list-properties report for it (name, type, description, default).

The types come from QEMU's own qom-list-types; a type only QEMU has is a difference only in a family
qmpd implements (the x86 CPU models), a type only qmpd has always is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.differential.sweep import Differences, Pair, started

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with started(tmp_path_factory.mktemp("types"), ["-S", "-machine", "none", "-nodefaults"]) as both:
        yield both


def _types(reply: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in reply["return"]}


def _is_a(types: dict[str, dict[str, Any]], name: str, ancestor: str) -> bool:
    entry: dict[str, Any] | None = types.get(name)
    while entry is not None:
        if entry["name"] == ancestor:
            return True
        entry = types.get(entry.get("parent", ""))
    return False


def test_every_type_and_its_parent(pair: Pair) -> None:
    sweep = Differences("qom-list-types")
    qemu, qmpd = (_types(reply) for reply in pair.ask("qom-list-types", {"abstract": True}))
    for name in sorted(set(qemu) | set(qmpd)):
        if name in qemu and name in qmpd:
            sweep.count("types")
            if qemu[name] != qmpd[name]:
                sweep.differ("type", name, qemu[name], qmpd[name])
        elif name in qmpd:
            sweep.differ("type", name, None, qmpd[name])
        elif _is_a(qemu, name, "x86_64-cpu"):
            sweep.differ("type", name, qemu[name], None)
    for implements in ("device", "cpu", "x86_64-cpu", "machine", "memory-backend"):
        for abstract in (False, True):
            arguments = {"implements": implements, "abstract": abstract}
            theirs, ours = (_types(reply) for reply in pair.ask("qom-list-types", arguments))
            sweep.count("filtered listings")
            for name in sorted(set(theirs) ^ set(ours)):
                if name in qemu and name in qmpd:  # both have the type but list it differently
                    sweep.differ("type", name, theirs.get(name), ours.get(name))
    sweep.check()


def _by_name(reply: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry for entry in reply["return"]}


def test_every_property_of_every_type(pair: Pair) -> None:
    sweep = Differences("qom-list-properties/device-list-properties")
    qemu, qmpd = (_types(reply) for reply in pair.ask("qom-list-types", {"abstract": True}))
    for typename in sorted(set(qemu) & set(qmpd)):
        sweep.count("types")
        for command in ("qom-list-properties", "device-list-properties"):
            theirs, ours = pair.ask(command, {"typename": typename})
            if "error" in theirs or "error" in ours:
                if theirs != ours:
                    sweep.differ("property", f"{typename}.({command})", theirs, ours)
                continue
            want, got = _by_name(theirs), _by_name(ours)
            sweep.count("properties", len(want))
            for name in sorted(set(want) | set(got)):
                if want.get(name) != got.get(name):
                    sweep.differ("property", f"{typename}.{name}", want.get(name), got.get(name))
    sweep.check()
