"""Sweep: every ``query-*`` command qmpd has that needs no arguments answers as QEMU 7.2 does.

The commands come from qmpd's own ``query-qmp-schema`` (pc and q35, one QEMU and one qmpd each, the
same argv).  Replies are compared after masking what must differ (a thread id, each server's own
socket path, the version's package string).  Lists of what exists (machines, commands, command-line
options) may be shorter on qmpd, but each entry qmpd lists must be QEMU's, in QEMU's order.  The only
exceptions are the ``reply:`` keys of README's deliberate-differences table, ``reply:COMMAND`` plus the
path of the difference (``reply:query-machines[pc-i440fx-7.2].cpu-max``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.differential.deliberate import deliberate
from tests.differential.sweep import Pair, started_pair, value_differences

pytestmark = pytest.mark.qemu

#: Lists of what exists, by the member that names an entry: qmpd lists fewer than QEMU.
LISTINGS = {"query-machines": "name", "query-commands": "name", "query-command-line-options": "option"}
#: Compared by the CPU model sweep (the QOM half), and the schema by test_schema_sweep.py.
ELSEWHERE = {"query-cpu-definitions", "query-qmp-schema"}


@pytest.fixture(scope="module", params=["pc", "q35"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    machine: str = request.param
    with started_pair(machine, tmp_path_factory.mktemp(f"query-{machine}")) as both:
        yield both


def _masked(reply: dict[str, Any], socket_path: str, package: str) -> Any:
    text = json.dumps(reply).replace(socket_path, "SOCKET").replace(package, "PACKAGE")
    value = json.loads(text)
    for entry in value.get("return", []) if isinstance(value.get("return"), list) else []:
        if isinstance(entry, dict) and "thread-id" in entry:
            entry["thread-id"] = "THREAD"
    return value


def _listing(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> list[str]:
    """Differences of a listing: entries QEMU lacks, order, and each entry qmpd lists."""
    known = {entry[key]: index for index, entry in enumerate(theirs)}
    found = [f"[{entry[key]}]: only in qmpd" for entry in ours if entry[key] not in known]
    order = [known[entry[key]] for entry in ours if entry[key] in known]
    if order != sorted(order):
        found.append(": entries not in QEMU's order")
    for entry in ours:
        if entry[key] in known:
            found += value_differences(entry, theirs[known[entry[key]]], f"[{entry[key]}]")
    return found


def test_every_query_answers_as_qemu(pair: Pair) -> None:
    schema = pair.qmpd.execute("query-qmp-schema")["return"]
    types = {entry["name"]: entry for entry in schema}
    names = [
        entry["name"]
        for entry in schema
        if entry["meta-type"] == "command"
        and entry["name"].startswith("query-")
        and entry["name"] not in ELSEWHERE
        and all("default" in member for member in types[entry["arg-type"]]["members"])
    ]
    masks = []
    for client in (pair.qemu, pair.qmpd):
        chardevs = client.execute("query-chardev")["return"]
        path = next(c["filename"] for c in chardevs if c["filename"].startswith("unix:")).split(":")[1].split(",")[0]
        masks.append((path, client.execute("query-version")["return"]["package"]))
    bugs: list[str] = []
    excused: list[str] = []
    for name in names:
        theirs = _masked(pair.qemu.execute(name), *masks[0])
        ours = _masked(pair.qmpd.execute(name), *masks[1])
        if name in LISTINGS and "return" in ours and "return" in theirs:
            found = [name + line for line in _listing(ours["return"], theirs["return"], LISTINGS[name])]
        else:
            found = [name + line.removeprefix("return") for line in value_differences(ours, theirs)]
        for line in found:
            key = line.partition(":")[0]
            (excused if deliberate("reply", key) else bugs).append(line)
    print(f"\nquery sweep ({pair.machine}): {len(names)} commands; {len(excused)} deliberate differences")
    for line in excused:
        print("  deliberate:", line[:160])
    assert len(names) > 25
    assert not bugs, "\n".join(bugs)
