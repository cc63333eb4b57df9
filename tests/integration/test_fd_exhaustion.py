"""Running out of file descriptors, idle and slow HTTP clients, and the session bound.

Each test drives a real qmpd over real sockets: a monitor must keep greeting
clients whatever the HTTP front's clients do, and come back on its own once
the process has fds again.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import select
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import RawClient, Server, free_port, qmpd_command, start, wait_until

NO_GUEST = ("-machine", "none", "-S")
#: Idle connections opened to the HTTP front: more than the fd room left to the process.
HOGS = 40
#: Seconds the monitor's client waits while qmpd has no fd to accept it with.
ACCEPT_FAILING = 1.0
#: A soft and hard fd limit well under what HOGS_BEYOND_LIMIT connections need.
SMALL_FD_LIMIT = 64
HOGS_BEYOND_LIMIT = 100
#: qmpd.http.server.IDLE_TIMEOUT, as a client sees it.
IDLE_TIMEOUT = 5.0


def _fds_in_use(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def _ready(server: Server) -> None:
    """Wait until the daemon (not only the early greeter) serves the monitor."""
    with RawClient(server.socket_path) as client:
        client.negotiate()
        assert client.execute("query-status")["return"]["status"] == "prelaunch"


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed (or reset) the connection; never blocks."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def _get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        status: int = response.status
        return status


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


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_a_monitor_greets_again_once_fds_free_up(launch: Callable[..., tuple[Server, int]], event_loop: str) -> None:
    server, port = launch("--event-loop", event_loop)
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
    # Said, not silent (start-up's lines are written once structlog can be loaded: qmpd.log.release).
    wait_until(lambda: "accept.out_of_resources" in server.stderr(), timeout=5)
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
            wait_until(lambda: "qmp.session_deferred" in server.stderr(), timeout=5)
            first.close()
            assert "QMP" in waiting.message(timeout=5)
            waiting.send(b'{"execute": "qmp_capabilities"}')
            assert waiting.message(timeout=5) == {"return": {}}


def test_idle_http_clients_cannot_take_the_fds_a_monitor_needs(tmp_path: Path) -> None:
    port = free_port()
    prlimit = ["prlimit", f"--nofile={SMALL_FD_LIMIT}", *qmpd_command()]
    server = start(prlimit, [*NO_GUEST, "--http", f"127.0.0.1:{port}"], tmp_path)
    try:
        _ready(server)
        with ExitStack() as hogs:
            held = _connect_many(port, HOGS_BEYOND_LIMIT, hogs)
            # The monitor still greets while every HTTP connection qmpd allows is taken.
            with RawClient(server.socket_path, timeout=5) as client:
                client.negotiate()
            wait_until(lambda: "max_connections=" in server.stderr(), timeout=5)
            found = re.search(r"max_connections=(\d+)", server.stderr())
            assert found is not None
            bound = int(found.group(1))
            assert bound == SMALL_FD_LIMIT // 2  # at most half the soft fd limit
            # Connections beyond the bound are closed at once; the rest stay until the idle timeout.
            wait_until(lambda: sum(map(_closed_by_server, held)) >= HOGS_BEYOND_LIMIT - bound, timeout=3)
            assert sum(not _closed_by_server(sock) for sock in held) == bound
            wait_until(lambda: "http.connection_refused" in server.stderr(), timeout=5)
        wait_until(lambda: _fds_in_use(server) < SMALL_FD_LIMIT // 2, timeout=5)
        assert _get(port, "/readyz") == 200
    finally:
        server.stop()


async def _trickle_until_closed(port: int, deadline: float) -> float:
    """Send a request line, then one header byte a second; return the seconds until the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    try:
        while time.monotonic() - began < deadline:
            try:
                if await asyncio.wait_for(reader.read(1024), timeout=1.0) == b"":
                    return time.monotonic() - began
            except TimeoutError:
                writer.write(b"a")
                await writer.drain()
    except ConnectionError:
        return time.monotonic() - began
    finally:
        writer.close()
    return float("inf")


async def _idle_until_closed(port: int, deadline: float) -> float:
    """Connect and send nothing; return the seconds until the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    try:
        await asyncio.wait_for(reader.read(1024), timeout=deadline)
    except TimeoutError:
        return float("inf")
    finally:
        writer.close()
    return time.monotonic() - began


async def _qmp_over_websocket_after(port: int, idle: float) -> dict[str, object]:
    """A WebSocket QMP session left idle for ``idle`` seconds must still answer."""
    async with aiohttp.ClientSession() as client, client.ws_connect(f"http://127.0.0.1:{port}/qmp") as ws:
        await ws.receive_str(timeout=5)
        await asyncio.sleep(idle)
        await ws.send_str('{"execute": "qmp_capabilities"}')
        reply: dict[str, object] = await ws.receive_json(timeout=5)
        return reply


def test_slow_and_idle_http_clients_are_closed_but_websockets_stay(launch: Callable[..., tuple[Server, int]]) -> None:
    _, port = launch()

    async def together() -> tuple[float, float, dict[str, object]]:
        deadline = IDLE_TIMEOUT + 4
        return await asyncio.gather(
            _trickle_until_closed(port, deadline),
            _idle_until_closed(port, deadline),
            _qmp_over_websocket_after(port, IDLE_TIMEOUT + 1),
        )

    slow, idle, reply = asyncio.run(together())
    assert IDLE_TIMEOUT - 0.5 <= slow <= IDLE_TIMEOUT + 2
    assert IDLE_TIMEOUT - 0.5 <= idle <= IDLE_TIMEOUT + 2
    assert reply == {"return": {}}
