"""Running out of file descriptors, idle and slow HTTP clients, and the session bound.

Each test drives a real qmpd over real sockets: a monitor must keep greeting
clients whatever the HTTP front's clients do, and come back on its own once
the process has fds again.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import RawClient, Server, free_port, wait_until

NO_GUEST = ("-machine", "none", "-S")
#: Idle connections opened to the HTTP front: more than the fd room left to the process.
HOGS = 40
#: Seconds the monitor's client waits while qmpd has no fd to accept it with.
ACCEPT_FAILING = 1.0


def _fds_in_use(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def _ready(server: Server) -> None:
    """Wait until the daemon (not only the early greeter) serves the monitor."""
    with RawClient(server.socket_path) as client:
        client.negotiate()
        assert client.execute("query-status")["return"]["status"] == "prelaunch"


def _connect_many(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    """Idle TCP connections; the kernel completes them even while qmpd cannot accept."""
    return [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5)) for _ in range(count)]


@pytest.fixture
def launch(qmpd: Callable[..., Server]) -> Iterator[Callable[..., tuple[Server, int]]]:
    """qmpd with an HTTP front on a free port; returns the server and the port."""

    def start(*argv: str) -> tuple[Server, int]:
        port = free_port()
        server = qmpd(*NO_GUEST, "--http", f"127.0.0.1:{port}", *argv)
        _ready(server)
        return server, port

    yield start


def test_a_monitor_greets_again_once_fds_free_up(launch: Callable[..., tuple[Server, int]]) -> None:
    server, port = launch()
    limit = _fds_in_use(server) + 2
    _, hard = resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (limit, hard))
    with ExitStack() as hogs:
        _connect_many(port, HOGS, hogs)
        wait_until(lambda: _fds_in_use(server) >= limit, timeout=5)
        client = RawClient(server.socket_path, timeout=5)
        # The monitor's accept fails with EMFILE now: before the fix, its accept loop ended there for good.
        time.sleep(ACCEPT_FAILING)
        hogs.close()  # the HTTP clients leave: fds free up
        assert "QMP" in client.message(timeout=5)
        client.send(b'{"execute": "qmp_capabilities"}')
        assert client.message(timeout=5) == {"return": {}}
        client.close()
    assert "accept.out_of_resources" in server.stderr()  # said, not silent
    assert server.process.poll() is None


def test_max_sessions_counts_every_monitor_and_holds_the_next_client(
    launch: Callable[..., tuple[Server, int]], tmp_path: Path
) -> None:
    second = str(tmp_path / "second.sock")
    server, _ = launch("--max-sessions", "1", "-qmp", f"unix:{second},server=on,wait=off")
    with RawClient(server.socket_path, timeout=5) as first:
        first.negotiate()
        with RawClient(second, timeout=5) as waiting:
            # One session is open in all: the second monitor's client is held, ungreeted.
            with pytest.raises(TimeoutError):
                waiting.line(timeout=1.0)
            assert "qmp.session_deferred" in server.stderr()
            first.close()
            assert "QMP" in waiting.message(timeout=5)
            waiting.send(b'{"execute": "qmp_capabilities"}')
            assert waiting.message(timeout=5) == {"return": {}}
