"""What the QOM sweeps share: one QEMU and one qmpd with the same argv, asked the same questions, and a
record of every difference, each either excused by README's table (deliberate.py) or a bug.

A sweep generates its questions from QEMU's answers (the types it lists, the models it has, the paths it
crawls), never from a hand-written list, and prints how much it compared, so a sweep that silently
compares nothing shows in the log.
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


@dataclass
class Pair:
    """A negotiated QMP client on QEMU and one on qmpd, started with the same argv."""

    qemu: RawClient
    qmpd: RawClient

    def ask(self, name: str, arguments: dict[str, Any] | None = None) -> tuple[Reply, Reply]:
        """The same command to both: (QEMU's reply, qmpd's reply)."""
        return self.qemu.execute(name, arguments), self.qmpd.execute(name, arguments)


@contextmanager
def started(tmp_path: Path, argv: Sequence[str]) -> Iterator[Pair]:
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
        yield Pair(clients[0], clients[1])
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()


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
