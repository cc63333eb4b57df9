"""Shared fixtures: servers under test and the QEMU oracle."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import QEMU_BINARY, Server, start_qemu, start_qmpd

#: CI sets this so that a missing QEMU fails the differential tests instead of skipping them.
REQUIRE_QEMU = os.environ.get("QMPD_REQUIRE_QEMU") == "1"


@pytest.fixture
def qmpd(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start qmpd with an argv (a QMP Unix socket is added); stopped at teardown."""
    servers: list[Server] = []

    def launch(*argv: str, name: str = "qmpd") -> Server:
        server = start_qmpd(list(argv), tmp_path, name)
        servers.append(server)
        return server

    yield launch
    for server in servers:
        server.stop()


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start qemu-system-x86_64 with the same kind of argv (the oracle)."""
    if QEMU_BINARY is None:
        if REQUIRE_QEMU:
            pytest.fail("qemu-system-x86_64 is required (QMPD_REQUIRE_QEMU=1)")
        pytest.skip("qemu-system-x86_64 is not installed")
    servers: list[Server] = []

    def launch(*argv: str, name: str = "qemu") -> Server:
        server = start_qemu(list(argv), tmp_path, name)
        servers.append(server)
        return server

    yield launch
    for server in servers:
        server.stop()
