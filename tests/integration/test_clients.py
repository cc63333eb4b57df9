"""Real clients against a real qmpd over real sockets: qemu.qmp, qmp-shell, socat, the examples."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from qemu.qmp import EventListener, ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from tests.helpers import REPO, Server, free_port

EXAMPLES = REPO / "examples" / "clients"


async def test_qemu_qmp_client_over_unix_with_oob_and_events(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    client = QMPClient("test")
    await client.connect(server.socket_path)
    try:
        assert client.greeting is not None
        assert "oob" in client.greeting.QMP.capabilities
        version = await client.execute("query-version")
        assert version["qemu"]["major"] == 7 and version["qemu"]["minor"] == 2
        assert (await client.execute("query-status"))["status"] == "prelaunch"
        listener = EventListener()
        with client.listen(listener):
            await client.execute("cont")
            event = await asyncio.wait_for(listener.get(), timeout=5)
        assert event["event"] == "RESUME" and "timestamp" in event
        with pytest.raises(ExecuteError) as raised:
            await client.execute("no-such-command")
        assert raised.value.error_class == "CommandNotFound"
        with pytest.raises(ExecuteError) as oob_error:
            await client.execute("migrate-pause", oob=True)
        assert "postcopy-active" in str(oob_error.value)
    finally:
        await client.disconnect()


async def test_qemu_qmp_client_over_tcp(qmpd: Callable[..., Server]) -> None:
    port = free_port()
    qmpd("-machine", "none", "-S", "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off")
    client = QMPClient("tcp")
    await client.connect(("127.0.0.1", port))
    try:
        assert (await client.execute("query-target")) == {"arch": "x86_64"}
        text = await client.execute("human-monitor-command", {"command-line": "info status"})
        assert text == "VM status: paused (prelaunch)\r\n"
    finally:
        await client.disconnect()


def test_legacy_sync_client(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S", "-name", "legacy")
    monitor = QEMUMonitorProtocol(server.socket_path)
    monitor.connect(negotiate=True)
    try:
        assert monitor.cmd("query-name") == {"name": "legacy"}
        raw = monitor.cmd_obj({"execute": "query-status"})
        assert raw == {"return": {"status": "prelaunch", "singlestep": False, "running": False}}
    finally:
        monitor.close()
        # The legacy client creates this thread's event loop and never closes it.
        loop = asyncio.get_event_loop_policy().get_event_loop()
        loop.close()
        asyncio.set_event_loop(None)


def test_qmp_shell_session(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    shell = Path(sys.executable).with_name("qmp-shell")
    script = (EXAMPLES / "qmp-shell-session.txt").read_text()
    result = subprocess.run([str(shell), server.socket_path], input=script, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Connected to QEMU 7.2" in result.stdout
    assert '"status": "paused"' in result.stdout and '"package": "qmpd' in result.stdout


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_socat_one_liner(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    result = subprocess.run(["sh", str(EXAMPLES / "socat.sh"), server.socket_path], capture_output=True, timeout=30)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(b'{"QMP": {"version": ')
    assert lines[1:] == [
        b'{"return": {}}',
        b'{"return": {"status": "prelaunch", "singlestep": false, "running": false}}',
    ]


def test_qemu_qmp_example_script(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "qmp_client.py"), server.socket_path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "connected: QEMU 7.2.22 (qmpd 0.1.0)",
        "status: prelaunch",
        "event: RESUME",
        "event: STOP",
        "status: paused",
        "VM status: paused",
    ]
