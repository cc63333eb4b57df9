"""What the differential sweeps share: one QEMU and one qmpd with the same argv, asked the same questions,
and every difference either excused by README's table (deliberate.py) or a bug.

A sweep generates its questions from QEMU's answers (the types it lists, the models it has, the paths it
crawls, the commands its schema has), never from a hand-written list, and prints how much it compared, so a
sweep that silently compares nothing shows in the log.  ``value_differences`` reports a difference as a path
into the compared value, so a failure names the member that differs rather than printing two large documents.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_QEMU
from tests.differential.deliberate import deliberate
from tests.helpers import QEMU_BINARY, RawClient, Server, start_qemu, start_qmpd

Reply = dict[str, Any]


def need_qemu() -> None:
    """Skip (or, on CI, fail) a module-scoped fixture that needs QEMU before the autouse check runs."""
    if QEMU_BINARY is None:
        if REQUIRE_QEMU:
            pytest.fail("qemu-system-x86_64 is required (QMPD_REQUIRE_QEMU=1)")
        pytest.skip("qemu-system-x86_64 is not installed")


#: The UUID both servers get (`-uuid`), so that query-uuid and friends can be compared.
UUID = "4f1c3a9e-5b2d-4c8e-9a7f-0e6d2b1c3a4f"


def argv(machine: str) -> list[str]:
    """The argv both servers run under: a paused machine with no default devices."""
    return ["-S", "-nodefaults", "-display", "none", "-machine", f"{machine},accel=tcg", "-uuid", UUID]


@dataclass
class Pair:
    """A negotiated QMP client on QEMU and one on qmpd, started with the same argv."""

    qemu: RawClient
    qmpd: RawClient
    #: The machine type both run, when the sweep runs one per machine type.
    machine: str = ""

    def ask(self, name: str, arguments: dict[str, Any] | None = None) -> tuple[Reply, Reply]:
        """The same command to both: (QEMU's reply, qmpd's reply)."""
        return self.qemu.execute(name, arguments), self.qmpd.execute(name, arguments)


@contextmanager
def started(tmp_path: Path, argv: Sequence[str], machine: str = "") -> Iterator[Pair]:
    """QEMU and qmpd with ``argv`` (started side by side), a client on each; both stopped on exit."""
    need_qemu()
    servers: list[Server] = []
    clients: list[RawClient] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            # QEMU is started with -nographic (tests/helpers.py): so is qmpd, whose machine then reads graphics=off.
            futures = [
                pool.submit(start_qemu, argv, tmp_path, "qemu"),
                pool.submit(start_qmpd, [*argv, "-nographic"], tmp_path, "qmpd"),
            ]
            for future in futures:
                servers.append(future.result())
        for server in servers:
            client = RawClient(server.socket_path, timeout=60)
            clients.append(client)
            client.negotiate()
        yield Pair(clients[0], clients[1], machine)
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()


@contextmanager
def started_pair(machine: str, tmp: Path) -> Iterator[Pair]:
    """Both servers for ``machine`` under ``argv(machine)``, stopped when the block ends."""
    with started(tmp, argv(machine), machine) as pair:
        yield pair


@dataclass
class Differences:
    """Every difference one sweep found, split into excused (with the row that excuses it) and bugs."""

    sweep: str
    compared: Counter[str] = field(default_factory=Counter)
    excused: Counter[str] = field(default_factory=Counter)
    bugs: list[str] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        """Note that ``n`` more items of kind ``what`` were compared."""
        self.compared[what] += n

    def differ(self, kind: str, key: str, qemu: Any, qmpd: Any) -> None:
        """A difference under sweep key ``kind:key``: excused by the table, or recorded as a bug."""
        row = deliberate(kind, key)
        if row is not None:
            self.excused[row.what] += 1
            return
        self.bugs.append(f"{kind}:{key}: QEMU {_short(qemu)}, qmpd {_short(qmpd)}")

    def check(self) -> None:
        """Print the counts; fail with every bug when there is one."""
        counts = ", ".join(f"{n} {what}" for what, n in sorted(self.compared.items()))
        excused = sum(self.excused.values())
        print(f"\n{self.sweep}: compared {counts}; {excused} differences excused by README, {len(self.bugs)} not")
        assert sum(self.compared.values()) > 0, f"{self.sweep} compared nothing"
        assert not self.bugs, f"{len(self.bugs)} differences from QEMU 7.2:\n" + "\n".join(self.bugs)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 300 else text[:297] + "..."


def value_differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Every place where ``ours`` (qmpd) differs from ``theirs`` (QEMU), as ``path: what`` lines.

    Lists of named entries (members, enum values, variants) are compared by name first, so that one
    missing member is reported once instead of shifting every later one.
    """
    if type(ours) is not type(theirs):
        return [f"{path}: qmpd {_brief(ours)}, QEMU {_brief(theirs)}"]
    if isinstance(ours, dict):
        found: list[str] = []
        for key in [*ours, *(key for key in theirs if key not in ours)]:
            where = f"{path}.{key}" if path else key
            if key not in ours:
                found.append(f"{where}: missing in qmpd (QEMU {_brief(theirs[key])})")
            elif key not in theirs:
                found.append(f"{where}: only in qmpd ({_brief(ours[key])})")
            else:
                found += value_differences(ours[key], theirs[key], where)
        return found
    if isinstance(ours, list):
        key = _list_key(ours, theirs)
        if key is None:
            if len(ours) != len(theirs):
                return [f"{path}: qmpd {_brief(ours)}, QEMU {_brief(theirs)}"]
            pairs = enumerate(zip(ours, theirs, strict=True))
            return [line for index, (one, other) in pairs for line in value_differences(one, other, f"{path}[{index}]")]
        names_ours = [entry[key] for entry in ours]
        names_theirs = [entry[key] for entry in theirs]
        found = []
        if names_ours != names_theirs:
            found.append(f"{path}: {key}s qmpd {names_ours}, QEMU {names_theirs}")
        by_name = {entry[key]: entry for entry in theirs}
        for entry in ours:
            if entry[key] in by_name:
                found += value_differences(entry, by_name[entry[key]], f"{path}[{entry[key]}]")
        return found
    return [] if ours == theirs else [f"{path}: qmpd {_brief(ours)}, QEMU {_brief(theirs)}"]


def _list_key(ours: list[Any], theirs: list[Any]) -> str | None:
    for key in ("name", "case"):
        entries = [*ours, *theirs]
        if entries and all(isinstance(entry, dict) and key in entry for entry in entries):
            return key
    return None


def _brief(value: Any, limit: int = 160) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
