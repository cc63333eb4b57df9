"""Sweep: every command and event qmpd implements has QEMU 7.2's resolved ``query-qmp-schema`` signature.

The lists come from the two servers themselves (pc and q35, one QEMU and one qmpd each): every command
and event in qmpd's introspection is resolved through its type table (members, types, optionality, enum
values, features, allow-oob, union tags and branches) and compared with QEMU's.  The only exceptions are
the `command:`/`event:` keys of README's "Deliberate differences from QEMU 7.2" table.  The sweep also
prints what QEMU has that qmpd lacks, and requires every command libvirt sends at start and reconnect.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.differential.deliberate import deliberate
from tests.differential.sweep import UUID, Pair, started_pair, value_differences
from tests.helpers import RawClient, resolved_signature, start_qemu, start_qmpd
from tests.libvirt_probe import LIBVIRT_COMMANDS

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module", params=["pc", "q35"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """QEMU and qmpd for one machine type, shared by this module's tests."""
    machine: str = request.param
    with started_pair(machine, tmp_path_factory.mktemp(f"schema-{machine}")) as both:
        yield both


@pytest.fixture(scope="module")
def schemas(pair: Pair) -> tuple[Any, Any]:
    """QEMU's and qmpd's query-qmp-schema answers."""
    qemu, qmpd = pair.ask("query-qmp-schema")
    return qemu["return"], qmpd["return"]


def _entities(schema: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in schema if entry["meta-type"] in ("command", "event")}


def _reached(schema: list[dict[str, Any]], names: list[str]) -> set[str]:
    """The non-builtin types the signatures of ``names`` use (what 'types compared' counts)."""
    table = {entry["name"]: entry for entry in schema}
    seen: set[str] = set()
    pending = [table[name][key] for name in names for key in ("arg-type", "ret-type") if key in table[name]]
    while pending:
        name = pending.pop()
        entry = table[name]
        if name in seen or entry["meta-type"] == "builtin":
            continue
        seen.add(name)
        pending += [entry[key] for key in ("element-type",) if key in entry]
        if entry["meta-type"] in ("object", "alternate"):
            pending += [member["type"] for member in entry["members"]]
        pending += [variant["type"] for variant in entry.get("variants", ())]
    return seen


def test_every_signature_is_qemus(schemas: tuple[Any, Any]) -> None:
    theirs, ours = schemas
    qemu, qmpd = _entities(theirs), _entities(ours)
    bugs: list[str] = []
    excused: list[str] = []
    compared = [name for name in qmpd if name in qemu]
    for name, entity in qmpd.items():
        kind = entity["meta-type"]
        if name not in qemu:
            found = [f"{name}: not in QEMU 7.2"]
        else:
            found = value_differences(resolved_signature(ours, name), resolved_signature(theirs, name), name)
        if not found:
            continue
        (excused if deliberate(kind, name) else bugs).extend(found)
    commands = sum(1 for name in compared if qemu[name]["meta-type"] == "command")
    print(
        f"\nschema sweep: {commands} commands, {len(compared) - commands} events, "
        f"{len(_reached(theirs, compared))} QEMU types compared; {len(excused)} deliberate differences"
    )
    for line in excused:
        print("  deliberate:", line)
    assert not bugs, "\n".join(bugs)


def test_what_qemu_has_and_qmpd_lacks(schemas: tuple[Any, Any]) -> None:
    theirs, ours = schemas
    qemu, qmpd = _entities(theirs), _entities(ours)
    for kind in ("command", "event"):
        lacking = sorted(name for name, entity in qemu.items() if entity["meta-type"] == kind and name not in qmpd)
        print(f"\nQEMU 7.2 {kind}s qmpd lacks ({len(lacking)}): {' '.join(lacking)}")
    needed = [name for name in LIBVIRT_COMMANDS if name in qemu]
    assert len(needed) > 20
    missing = [name for name in needed if name not in qmpd and not deliberate("command", name)]
    assert not missing, f"libvirt 9.0 sends these at start or reconnect: {missing}"


#: Commands clients send that qmpd once lacked, with good and bad arguments.
ADDED: list[tuple[str, dict[str, Any]]] = [
    ("query-uuid", {}),
    ("query-uuid", {"x": 1}),
    ("query-current-machine", {}),
    ("query-current-machine", {"x": 1}),
    ("system_wakeup", {}),
    ("query-balloon", {}),
    ("balloon", {"value": 1 << 30}),
    ("balloon", {"value": "x"}),
    ("balloon", {}),
    # object-add's arguments are QEMU's ObjectOptions union: its errors before any object is made.
    ("object-add", {"qom-type": "foo", "id": "a"}),
    ("object-add", {"id": "a"}),
    ("object-add", {"qom-type": "memory-backend-ram", "id": "m"}),
    ("object-add", {"qom-type": "memory-backend-ram", "id": "m", "size": "x"}),
    ("object-add", {"qom-type": "memory-backend-ram", "id": "m", "size": 1, "bogus": 1}),
    ("object-add", {"qom-type": "iothread", "id": "i", "poll-max-ns": "x"}),
    ("object-add", {"qom-type": "authz-simple", "id": "z"}),
    ("object-add", {"qom-type": "authz-list", "id": "z", "policy": "maybe"}),
]


def test_added_commands_answer_as_qemu(pair: Pair) -> None:
    for command, arguments in ADDED:
        qemu, qmpd = pair.ask(command, arguments)
        assert qmpd == qemu, (command, arguments)
    assert pair.qmpd.execute("query-uuid") == {"return": {"UUID": UUID.lower()}}


@pytest.mark.parametrize("argv", [["-M", "pc", "-no-acpi"], ["-M", "q35", "-no-acpi"], ["-M", "none"]])
def test_wakeup_support_and_default_uuid(tmp_path: Path, argv: list[str]) -> None:
    answers = []
    for name, start in (("qemu", start_qemu), ("qmpd", start_qmpd)):
        server = start([*argv, "-S", "-nodefaults"], tmp_path, name)
        try:
            with RawClient(server.socket_path, timeout=30) as client:
                client.negotiate()
                commands = ("query-current-machine", "query-uuid", "system_wakeup")
                answers.append([client.execute(command) for command in commands])
        finally:
            server.stop()
    assert answers[1] == answers[0]
