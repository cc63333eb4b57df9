"""File descriptors passed over Unix monitors (SCM_RIGHTS), as libvirt passes them for save and dump.

Each test drives a real qmpd over a real socket with ``socket.send_fds``; descriptor counts are
read from /proc/PID/fd, so a descriptor qmpd forgets to close fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from qmpd.fdstore import MAX_NAMED_FDS
from tests.helpers import RawClient, Server, free_port, qmpd_command, read_u64s, start, start_qmpd, wait_until

OK: dict[str, Any] = {"return": {}}
NO_FD = {"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}
MIGRATION_ARGV = ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,maxcpus=2", "-m", "128"]
#: What libvirt writes before QEMU's stream in a save file (its own header and the domain XML).
LIBVIRT_HEADER = b"LibvirtQemudSave" + b"\0" * 48 + b"<domain type='qemu'>...</domain>\n" * 10


def _error(desc: str) -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": desc}}


def _fds_open(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def _send(client: RawClient, name: str, arguments: dict[str, Any] | None = None, fds: Sequence[int] = ()) -> Any:
    """One command whose bytes carry ``fds``; its reply."""
    request: dict[str, Any] = {"execute": name}
    if arguments is not None:
        request["arguments"] = arguments
    socket.send_fds(client.sock, [json.dumps(request).encode()], list(fds))
    while True:
        message = client.message(timeout=30)
        if "event" not in message:
            return message
        client.events.append(message)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    running = start_qmpd(["-machine", "none", "-S", "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"], tmp_path)
    running.extra["port"] = port
    yield running
    running.stop()


def test_getfd_closefd_and_their_errors_as_qemu(server: Server, pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    with RawClient(server.socket_path) as client:
        client.negotiate()
        baseline = _fds_open(server)
        assert _send(client, "getfd", {"fdname": "a"}) == NO_FD
        assert _send(client, "getfd", {"fdname": "a"}, [read_end]) == OK
        assert _fds_open(server) == baseline + 1
        assert _send(client, "getfd", {"fdname": "a"}, [write_end]) == OK, "replaces (and closes) the first"
        assert _fds_open(server) == baseline + 1
        assert _send(client, "getfd", {"fdname": "1a"}, [read_end]) == _error(
            "Parameter 'fdname' expects a name not starting with a digit"
        )
        assert _fds_open(server) == baseline + 1, "a refused descriptor is closed"
        assert _send(client, "closefd", {"fdname": "nosuch"}) == _error("File descriptor named 'nosuch' not found")
        assert _send(client, "closefd", {"fdname": "a"}) == OK
        assert _send(client, "closefd", {"fdname": "a"}) == _error("File descriptor named 'a' not found")
        assert _fds_open(server) == baseline
        # Two descriptors in one message: getfd keeps the first and closes the other.
        assert _send(client, "getfd", {"fdname": "two"}, [read_end, write_end]) == OK
        assert _fds_open(server) == baseline + 1
        # Descriptors sent with another command wait for the next getfd; a newer message replaces them.
        assert _send(client, "query-status", None, [read_end])["return"]["status"] == "prelaunch"
        assert _send(client, "query-status", None, [write_end])["return"]["status"] == "prelaunch"
        assert _fds_open(server) == baseline + 2
        assert _send(client, "getfd", {"fdname": "later"}) == OK
        assert _send(client, "getfd", {"fdname": "again"}) == NO_FD
        assert _fds_open(server) == baseline + 2
        assert _send(client, "dump-guest-memory", {"paging": False, "protocol": "fd:nosuch"}) == _error(
            "File descriptor named 'nosuch' has not been found"
        )
    wait_until(lambda: _fds_open(server) == baseline - 1, timeout=5)  # and the client's socket


def test_fd_sets_as_qemu(server: Server, pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    with RawClient(server.socket_path) as client:
        client.negotiate()
        baseline = _fds_open(server)
        assert _send(client, "add-fd") == NO_FD
        first = _send(client, "add-fd", {}, [read_end])["return"]
        assert first["fdset-id"] == 0
        second = _send(client, "add-fd", {"opaque": "hello"}, [write_end])["return"]
        assert second["fdset-id"] == 1
        third = _send(client, "add-fd", {"fdset-id": 1, "opaque": "x"}, [read_end])["return"]
        seventh = _send(client, "add-fd", {"fdset-id": 7}, [read_end])["return"]
        assert _send(client, "add-fd", {"fdset-id": -1}, [read_end]) == _error(
            "Parameter 'fdset-id' expects a non-negative value"
        )
        assert _fds_open(server) == baseline + 4
        fdsets = [
            {"fdset-id": 7, "fds": [{"fd": seventh["fd"]}]},
            {"fdset-id": 1, "fds": [{"fd": second["fd"], "opaque": "hello"}, {"fd": third["fd"], "opaque": "x"}]},
            {"fdset-id": 0, "fds": [{"fd": first["fd"]}]},
        ]
        assert _send(client, "query-fdsets") == {"return": fdsets}
        assert _send(client, "remove-fd", {"fdset-id": 1, "fd": 999}) == _error(
            "File descriptor named 'fdset-id:1, fd:999' not found"
        )
        assert _send(client, "remove-fd", {"fdset-id": 99}) == _error("File descriptor named 'fdset-id:99' not found")
        # QEMU 7.2 closes removed descriptors only while the guest runs: under -S they stay listed.
        assert _send(client, "remove-fd", {"fdset-id": 7}) == OK
        assert _send(client, "query-fdsets") == {"return": fdsets}
        assert _send(client, "cont") == OK
        assert _send(client, "remove-fd", {"fdset-id": 1, "fd": second["fd"]}) == OK
        assert _send(client, "query-fdsets") == {
            "return": [
                {"fdset-id": 1, "fds": [{"fd": third["fd"], "opaque": "x"}]},
                {"fdset-id": 0, "fds": [{"fd": first["fd"]}]},
            ]
        }
        assert _fds_open(server) == baseline + 2
        assert _send(client, "add-fd", {}, [write_end])["return"]["fdset-id"] == 2, "the lowest free id"
    # The last monitor session ended while the guest runs: QEMU closes every fd set.
    wait_until(lambda: _fds_open(server) == baseline - 1, timeout=5)
    with RawClient(server.socket_path) as client:
        client.negotiate()
        assert client.execute("query-fdsets") == {"return": []}


def test_names_are_per_session_and_bounded_and_tcp_carries_none(server: Server, pipe: tuple[int, int]) -> None:
    read_end, _ = pipe
    with RawClient(server.socket_path) as client, RawClient(("127.0.0.1", server.extra["port"])) as tcp:
        client.negotiate()
        tcp.negotiate()
        baseline = _fds_open(server)
        assert _send(client, "getfd", {"fdname": "mine"}, [read_end]) == OK
        assert tcp.execute("closefd", {"fdname": "mine"}) == _error("File descriptor named 'mine' not found")
        assert tcp.execute("getfd", {"fdname": "x"}) == NO_FD
        for index in range(1, MAX_NAMED_FDS):
            assert _send(client, "getfd", {"fdname": f"n{index}"}, [read_end]) == OK
        assert _fds_open(server) == baseline + MAX_NAMED_FDS
        assert _send(client, "getfd", {"fdname": "one-more"}, [read_end]) == _error(
            f"qmpd holds at most {MAX_NAMED_FDS} named file descriptors per monitor session (closefd frees one)"
        )
        assert _send(client, "getfd", {"fdname": "n1"}, [read_end]) == OK, "replacing a name needs no room"
        assert _fds_open(server) == baseline + MAX_NAMED_FDS
        # Far more descriptors in one message than a session takes: the kernel closes the rest.
        many = [os.dup(read_end) for _ in range(100)]
        try:
            assert _send(client, "query-status", None, many)["return"]["running"] is False
        finally:
            for fd in many:
                os.close(fd)
        assert _fds_open(server) <= baseline + MAX_NAMED_FDS + 16
    wait_until(lambda: _fds_open(server) == baseline - 2, timeout=5)  # and both clients' sockets


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils is not installed")
def test_dump_to_a_passed_descriptor(tmp_path: Path) -> None:
    server = start_qmpd(["-machine", "pc", "-m", "32", "-S"], tmp_path)
    core = tmp_path / "core.elf"
    try:
        with RawClient(server.socket_path) as client, open(core, "wb") as out:
            client.negotiate()
            assert _send(client, "getfd", {"fdname": "dump"}, [out.fileno()]) == OK
            assert _send(client, "dump-guest-memory", {"paging": False, "protocol": "fd:dump"}) == OK
            assert client.execute("query-dump")["return"]["status"] == "completed"
            assert _send(client, "closefd", {"fdname": "dump"}) == _error("File descriptor named 'dump' not found")
        header = subprocess.run(["readelf", "-h", "-l", str(core)], capture_output=True, text=True, check=True).stdout
        assert "CORE (Core file)" in header and "LOAD" in header and "NOTE" in header
    finally:
        server.stop()


def _read_all(fd: int, out: Path) -> threading.Thread:
    """Append what comes through ``fd`` to ``out`` until EOF, in a thread (the test's end of the pipe)."""

    def copy() -> None:
        with open(fd, "rb", closefd=True) as source, open(out, "ab") as sink:
            shutil.copyfileobj(source, sink)

    thread = threading.Thread(target=copy)
    thread.start()
    return thread


def _counters(client: RawClient) -> list[int]:
    return read_u64s(client, 0x200000, 1)


def test_migrate_to_a_pipe_after_a_header_then_incoming_from_an_inherited_fd(tmp_path: Path) -> None:
    """libvirt's save: getfd "migrate", migrate fd:migrate into a pipe it reads after writing its own
    header; restore: the file, positioned past that header, inherited by the target as fd N."""
    saved = tmp_path / "domain.save"
    saved.write_bytes(LIBVIRT_HEADER)
    source = start_qmpd(MIGRATION_ARGV, tmp_path, "source")
    servers = [source]
    try:
        with RawClient(source.socket_path) as client:
            client.negotiate()
            wait_until(lambda: _counters(client)[0] > 0, timeout=30)
            read_end, write_end = os.pipe()
            reader = _read_all(read_end, saved)
            try:
                assert _send(client, "getfd", {"fdname": "migrate"}, [write_end]) == OK
            finally:
                os.close(write_end)  # qmpd holds the only write end now: EOF comes when it closes it
            reply = _send(client, "migrate", {"detach": True, "resume": False, "uri": "fd:migrate"})
            assert reply == OK
            wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed", timeout=30)
            before = _counters(client)
            reader.join(timeout=30)
            assert not reader.is_alive()
        assert saved.read_bytes().startswith(LIBVIRT_HEADER)
        with open(saved, "rb") as state:
            state.seek(len(LIBVIRT_HEADER))
            fd = state.fileno()
            target = start(qmpd_command(), [*MIGRATION_ARGV, "-incoming", "defer"], tmp_path, "target", pass_fds=[fd])
            servers.append(target)
        with RawClient(target.socket_path) as client:
            client.negotiate()
            assert client.execute("query-status")["return"]["status"] == "inmigrate"
            assert client.execute("migrate-incoming", {"uri": f"fd:{fd}"}) == OK
            wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed", timeout=30)
            assert client.execute("query-status")["return"]["status"] == "running"
            wait_until(lambda: _counters(client)[0] > before[0], timeout=30)
            assert _counters(client)[0] < before[0] + 10**9, "the guest went on from the saved counter"
        assert not os.path.exists(f"/proc/{target.process.pid}/fd/{fd}"), "the inherited fd is closed after loading"
    finally:
        for running in servers:
            running.stop()


def test_a_failed_fd_migration_closes_the_descriptor(tmp_path: Path, pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    server = start_qmpd(["-machine", "pc", "-m", "32", "-S"], tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            baseline = _fds_open(server)
            assert client.execute("migrate", {"uri": "fd:nosuch"}) == _error(
                "File descriptor named 'nosuch' has not been found"
            )
            assert _send(client, "getfd", {"fdname": "m"}, [write_end]) == OK
            os.close(read_end)  # nobody reads: the write fails with EPIPE
            assert client.execute("migrate", {"uri": "fd:m"}) == OK
            wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "failed", timeout=30)
            assert _fds_open(server) == baseline, "the taken descriptor is closed"
    finally:
        server.stop()
