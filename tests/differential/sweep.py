"""What the differential sweeps share: one QEMU and one qmpd per machine type, and a structural diff.

A sweep starts both servers once (the same argv), keeps one negotiated client on each for all its cases,
and reports every difference as a path into the compared value, so a failure names the member that
differs rather than printing two large JSON documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_QEMU
from tests.helpers import QEMU_BINARY, RawClient, Server, start_qemu, start_qmpd

#: The UUID both servers get (`-uuid`), so that query-uuid and friends can be compared.
UUID = "4f1c3a9e-5b2d-4c8e-9a7f-0e6d2b1c3a4f"


def argv(machine: str) -> list[str]:
    """The argv both servers run under: a paused machine with no default devices."""
    return ["-S", "-nodefaults", "-display", "none", "-machine", f"{machine},accel=tcg", "-uuid", UUID]


@dataclass
class Pair:
    """The oracle and qmpd, each with one negotiated client."""

    machine: str
    qemu: RawClient
    qmpd: RawClient

    def both(self, command: str, arguments: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """The replies of QEMU and qmpd to the same command."""
        return self.qemu.execute(command, arguments), self.qmpd.execute(command, arguments)


@contextmanager
def started_pair(machine: str, tmp: Path) -> Iterator[Pair]:
    """Both servers for ``machine``, stopped when the block ends (module fixtures come before the
    autouse QEMU check of conftest.py, so this checks too)."""
    if QEMU_BINARY is None:
        if REQUIRE_QEMU:
            pytest.fail("qemu-system-x86_64 is required (QMPD_REQUIRE_QEMU=1)")
        pytest.skip("qemu-system-x86_64 is not installed")
    servers: list[Server] = []
    clients: list[RawClient] = []
    try:
        for name, start in (("qemu", start_qemu), ("qmpd", start_qmpd)):
            server = start(argv(machine), tmp, f"{name}-{machine}")
            servers.append(server)
            client = RawClient(server.socket_path, timeout=30)
            clients.append(client)
            client.negotiate()
        yield Pair(machine, clients[0], clients[1])
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Every place where ``ours`` (qmpd) differs from ``theirs`` (QEMU), as ``path: what`` lines.

    Lists of named entries (members, enum values, variants) are compared by name first, so that one
    missing member is reported once instead of shifting every later one.
    """
    if type(ours) is not type(theirs):
        return [f"{path}: qmpd {_short(ours)}, QEMU {_short(theirs)}"]
    if isinstance(ours, dict):
        found: list[str] = []
        for key in [*ours, *(key for key in theirs if key not in ours)]:
            where = f"{path}.{key}" if path else key
            if key not in ours:
                found.append(f"{where}: missing in qmpd (QEMU {_short(theirs[key])})")
            elif key not in theirs:
                found.append(f"{where}: only in qmpd ({_short(ours[key])})")
            else:
                found += differences(ours[key], theirs[key], where)
        return found
    if isinstance(ours, list):
        key = _list_key(ours, theirs)
        if key is None:
            if len(ours) != len(theirs):
                return [f"{path}: qmpd {_short(ours)}, QEMU {_short(theirs)}"]
            pairs = enumerate(zip(ours, theirs, strict=True))
            return [line for index, (one, other) in pairs for line in differences(one, other, f"{path}[{index}]")]
        names_ours = [entry[key] for entry in ours]
        names_theirs = [entry[key] for entry in theirs]
        found = []
        if names_ours != names_theirs:
            found.append(f"{path}: {key}s qmpd {names_ours}, QEMU {names_theirs}")
        by_name = {entry[key]: entry for entry in theirs}
        for entry in ours:
            if entry[key] in by_name:
                found += differences(entry, by_name[entry[key]], f"{path}[{entry[key]}]")
        return found
    return [] if ours == theirs else [f"{path}: qmpd {_short(ours)}, QEMU {_short(theirs)}"]


def _list_key(ours: list[Any], theirs: list[Any]) -> str | None:
    for key in ("name", "case"):
        entries = [*ours, *theirs]
        if entries and all(isinstance(entry, dict) and key in entry for entry in entries):
            return key
    return None


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
