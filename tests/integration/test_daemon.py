"""The process: signals, pidfile, -daemonize, inherited fds, several monitors, one client per monitor."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import REPO, RawClient, Server, qmpd_command, wait_for_socket


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


def test_sigterm_sends_shutdown_removes_socket_and_exits_zero(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        server.process.send_signal(signal.SIGTERM)
        event = client.message(timeout=10)
        assert event["event"] == "SHUTDOWN"
        assert event["data"] == {"guest": False, "reason": "host-signal"}
    assert server.process.wait(timeout=10) == 0
    assert not os.path.exists(server.socket_path)
    assert "terminating on signal 15" in server.stderr()


def test_unix_socket_is_private_by_default(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o600


def test_pidfile_written_locked_and_removed(qmpd: Callable[..., Server], tmp_path: Path) -> None:
    pidfile = tmp_path / "qmpd.pid"
    server = qmpd("-machine", "none", "-S", "-pidfile", str(pidfile))
    assert pidfile.read_text() == f"{server.process.pid}\n"
    second = subprocess.run(
        [*qmpd_command(), "-machine", "none", "-pidfile", str(pidfile)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert second.returncode == 1
    assert "cannot create PID file: Cannot lock pid file" in second.stderr
    server.stop()
    assert not pidfile.exists()


def test_daemonize_parent_exits_zero_once_listening(tmp_path: Path) -> None:
    sock = tmp_path / "qmp.monitor"
    pidfile = tmp_path / "qmp.pid"
    argv = [
        *qmpd_command(),
        "-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg",
        "-qmp", f"unix:{sock},server=on,wait=off", "-pidfile", str(pidfile), "-daemonize",
    ]  # fmt: skip
    parent = subprocess.run(argv, capture_output=True, env=_env(), timeout=60)
    assert (parent.returncode, parent.stdout, parent.stderr) == (0, b"", b"")
    pid = int(pidfile.read_text())
    try:
        with RawClient(str(sock)) as client:
            client.negotiate()
            assert client.execute("query-status")["return"]["status"] == "prelaunch"
    finally:
        os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not pidfile.exists():
            break
        time.sleep(0.05)
    assert not pidfile.exists() and not sock.exists()


def test_daemonize_reports_startup_errors_through_the_parent(tmp_path: Path) -> None:
    argv = [*qmpd_command(), "-machine", "none", "-pidfile", "/nonexistent/dir/x.pid", "-daemonize"]
    parent = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=60)
    assert parent.returncode == 1
    assert (
        "cannot create PID file: Could not create '/nonexistent/dir/x.pid': No such file or directory" in parent.stderr
    )


def test_inherited_listening_fd_as_libvirt_passes_it(tmp_path: Path) -> None:
    path = str(tmp_path / "monitor.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    fd = listener.fileno()
    argv = [
        *qmpd_command(), "-machine", "none", "-S",
        "-chardev", f"socket,id=charmonitor,fd={fd},server=on,wait=off",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
    ]  # fmt: skip
    process = subprocess.Popen(argv, pass_fds=[fd], env=_env(), stderr=subprocess.PIPE)
    listener.close()
    try:
        with RawClient(path) as client:
            client.negotiate()
            assert client.execute("query-status", id="x") == {
                "return": {"status": "prelaunch", "singlestep": False, "running": False},
                "id": "x",
            }
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        process.stderr.close()


def test_every_monitor_gets_every_event(qmpd: Callable[..., Server], tmp_path: Path) -> None:
    other = str(tmp_path / "other.sock")
    server = qmpd("-machine", "none", "-S", "-qmp", f"unix:{other},server=on,wait=off")
    with RawClient(server.socket_path) as first, RawClient(other) as second:
        first.negotiate()
        second.negotiate()
        first.execute("cont")
        event_one = first.events[-1]
        event_two = second.message()
        assert event_one == event_two and event_one["event"] == "RESUME"


def test_a_second_client_waits_for_the_first(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    first = RawClient(server.socket_path)
    first.greeting()
    second = RawClient(server.socket_path, timeout=0.5)
    second.send(b'{"execute":"qmp_capabilities","id":"early"}')
    with pytest.raises(TimeoutError):
        second.line()
    first.close()
    second.sock.settimeout(10)
    assert "QMP" in second.message()
    assert second.message() == {"return": {}, "id": "early"}
    second.close()


def test_wait_on_holds_startup_until_a_client_connects(tmp_path: Path) -> None:
    sock = str(tmp_path / "wait.sock")
    argv = [*qmpd_command(), "-machine", "none", "-qmp", f"unix:{sock},server=on"]
    with open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(argv, env=_env(), stderr=stderr)
    try:
        wait_for_socket(sock, process)
        with RawClient(sock) as client:
            client.negotiate()
            assert client.execute("query-status")["return"]["status"] == "running"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert "waiting for connection on: disconnected:unix:" in (tmp_path / "stderr").read_text()


def test_client_vanishing_mid_command_leaves_the_daemon_serving(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        client.send(b'{"execute":"query-status","id":[1,2,')
    with RawClient(server.socket_path) as client:
        client.negotiate()
        client.send(b'{"execute":"cont"}' * 50)
    with RawClient(server.socket_path) as client:
        client.negotiate()
        assert client.execute("query-status")["return"]["status"] == "running"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-foo"], "qmpd: -foo: invalid option\n"),
        (["-machine", "nosuch"], "qmpd: unsupported machine type\nUse -machine help to list supported machines\n"),
        (
            ["-qmp", "unix:/nonexistent/dir/x.sock,server=on,wait=off"],
            "qmpd: -qmp unix:/nonexistent/dir/x.sock: Failed to bind",
        ),
    ],
)
def test_command_line_errors_exit_one(argv: list[str], message: str) -> None:
    result = subprocess.run([*qmpd_command(), *argv], capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(message)


def test_help_exits_zero() -> None:
    result = subprocess.run([*qmpd_command(), "-h"], capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 0 and "usage: qmpd" in result.stdout


@pytest.mark.slow
def test_qemu_limits_over_a_socket(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    with RawClient(server.socket_path, timeout=120) as client:
        client.negotiate()
        client.send(b'{"execute":"query-status","id":"' + b"w" * (65 << 20) + b'"}\n')
        assert client.message()["error"]["desc"] == "JSON token size limit exceeded"
        assert client.message()["error"]["desc"].startswith("JSON parse error, invalid keyword 'www")
        assert client.message()["error"]["desc"] == "JSON parse error, stray '\"}\n'"
        client.send(b'{"execute":"query-status","id":[' + b"1," * (1 << 20) + b"1]}")
        assert client.message()["error"]["desc"] == "JSON token count limit exceeded"
        client.send(b"\xff" + json.dumps({"execute": "query-status", "id": "alive"}).encode())
        lines = client.lines_until(b'"alive"')
        assert json.loads(lines[-1])["return"]["status"] == "prelaunch"
