"""Files and big outputs never hold the event loop: other sessions keep answering during memory dumps and long x/xp.

QEMU runs memsave, pmemsave and x/xp under its big lock, so every monitor waits;
qmpd writes dumps and builds long HMP text in a worker thread and lends the
lock out meanwhile (qmpd.dispatch), so another session's query-status is
answered before the long command replies.  Files go only to regular files
(a FIFO must not block ``open``), and a NUL in a file name names the file QEMU
would write (``C0 80``, modified UTF-8) instead of failing inside qmpd.
"""

from __future__ import annotations

import json
import os
import select
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, free_port, hmp, start_qmpd

OK: dict[str, Any] = {"return": {}}
STATUS: dict[str, Any] = {"return": {"status": "prelaunch", "singlestep": False, "running": False}}
UNBALANCED = "')' expected\r\nTry \"help xp\" for more information\r\n"
NOT_REGULAR = "Could not open '{}': qmpd writes memory dumps only to regular files"
#: Bound on every reply a test waits for, however slow the machine.
REPLY_TIMEOUT = 20.0


class Monitors:
    """A paused qmpd with two QMP monitors (A runs the long command, B checks it is not held up) and HTTP."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.dumps = tmp_path / "dumps"
        self.dumps.mkdir()
        b_socket = str(tmp_path / "b.sock")
        self.http_port = free_port()
        argv = ["-machine", "pc", "-S", "--dump-dir", str(self.dumps), *extra]
        argv += ["-qmp", f"unix:{b_socket},server=on,wait=off", "--http", f"127.0.0.1:{self.http_port}"]
        self.server: Server = start_qmpd(argv, tmp_path)
        self.a = RawClient(self.server.socket_path, timeout=REPLY_TIMEOUT)
        self.a.negotiate()
        self.b = RawClient(b_socket, timeout=REPLY_TIMEOUT)
        self.b.negotiate()

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.server.stop()

    def send_a(self, name: str, arguments: dict[str, Any]) -> None:
        self.a.send(json.dumps({"execute": name, "arguments": arguments}).encode())

    def a_has_replied(self) -> bool:
        """Whether A's reply has started to arrive (without reading it)."""
        return bool(self.a.buffer) or bool(select.select([self.a.sock], [], [], 0)[0])

    def healthz(self) -> int:
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status

    def hwm_mib(self) -> int:
        return _status_mib(self.server.process.pid, "VmHWM")

    def rss_mib(self) -> int:
        return _status_mib(self.server.process.pid, "VmRSS")


def _status_mib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


@pytest.fixture
def monitors(tmp_path: Path) -> Iterator[Monitors]:
    running = Monitors(tmp_path, "-m", "256M")
    yield running
    running.close()


def test_a_fifo_in_the_dump_directory_is_refused_at_once(monitors: Monitors) -> None:
    fifo = monitors.dumps / "fifo"
    os.mkfifo(fifo)
    for name in ("pmemsave", "memsave"):
        monitors.send_a(name, {"val": 0, "size": 16, "filename": "fifo"})
        # Before: open() blocked the event loop until some reader opened the FIFO.
        assert monitors.a.message(timeout=5) == {"error": {"class": "GenericError", "desc": NOT_REGULAR.format("fifo")}}
    assert monitors.b.execute("query-status") == STATUS
    assert monitors.healthz() == 200
    # With a reader waiting, the FIFO is still refused, and nothing is written into it.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        reply = monitors.a.execute("pmemsave", {"val": 0, "size": 16, "filename": "fifo"})
        assert reply == {"error": {"class": "GenericError", "desc": NOT_REGULAR.format("fifo")}}
        assert hmp(monitors.a, "pmemsave 0 16 fifo") == f"Error: {NOT_REGULAR.format('fifo')}\r\n"
        assert os.read(reader, 16) == b""  # the writers came and went without a byte
    finally:
        os.close(reader)


def test_a_nul_in_a_file_name_names_the_file_qemu_would_write(monitors: Monitors) -> None:
    # QEMU 7.2 answers {"return": {}} and creates "a\xc0\x80b": its strings are modified UTF-8.
    assert monitors.a.execute("pmemsave", {"val": 0, "size": 16, "filename": "a\0b"}) == OK
    assert monitors.a.execute("memsave", {"val": 0, "size": 16, "filename": "c\0d"}) == OK
    assert hmp(monitors.a, 'pmemsave 0 16 "e\0f"') == ""
    names = sorted(os.listdir(os.fsencode(monitors.dumps)))
    assert names == [b"a\xc0\x80b", b"c\xc0\x80d", b"e\xc0\x80f"]
    assert all((monitors.dumps / os.fsdecode(name)).read_bytes() == bytes(16) for name in names)


def test_a_big_pmemsave_lets_other_sessions_answer_and_streams(monitors: Monitors) -> None:
    size = 256 << 20
    assert monitors.a.execute("pmemsave", {"val": 0, "size": size, "filename": "warm.bin"}) == OK  # RAM now resident
    (monitors.dumps / "warm.bin").unlink()
    rss_before = monitors.rss_mib()
    monitors.send_a("pmemsave", {"val": 0, "size": size, "filename": "big.bin"})
    time.sleep(0.02)
    started = time.monotonic()
    assert monitors.b.execute("query-status") == STATUS
    b_latency = time.monotonic() - started
    a_done_first = monitors.a_has_replied()
    assert monitors.a.message(timeout=REPLY_TIMEOUT) == OK
    # Before: B waited for the whole dump (the loop wrote it), so A's reply came first.
    assert not a_done_first, f"query-status took {b_latency:.3f} s, after the dump"
    assert (monitors.dumps / "big.bin").stat().st_size == size
    # Before: the dump sat in memory several times over (+4x its size); now one 1 MiB chunk at a time.
    assert monitors.hwm_mib() - rss_before < 64


def test_a_long_xp_lets_other_sessions_answer(monitors: Monitors) -> None:
    count = 400_000
    monitors.send_a("human-monitor-command", {"command-line": f"xp /{count}xg 0"})
    time.sleep(0.05)
    assert monitors.b.execute("query-status") == STATUS
    a_done_first = monitors.a_has_replied()
    reply = monitors.a.message(timeout=REPLY_TIMEOUT)
    text = reply["return"]
    assert text.count("\r\n") == count // 2
    assert text.endswith(f"{(count - 2) * 8:016x}: 0x0000000000000000 0x0000000000000000\r\n")
    # Before: the text was built on the event loop, so B waited until A's reply was out.
    assert not a_done_first


@pytest.mark.parametrize("depth", [20_000, 100_000])
def test_deep_hmp_expressions_are_evaluated(monitors: Monitors, depth: int) -> None:
    # QEMU 7.2 answers 20,000 levels and dies of a stack overflow at 100,000; before, qmpd said "Internal error".
    expected = "0000000000000010: 0x0000000000000000\r\n"
    assert hmp(monitors.a, "xp /1xg " + "(" * depth + "16" + ")" * depth) == expected
    assert hmp(monitors.a, "xp /1xg " + "-" * (2 * depth) + "16") == expected
    assert hmp(monitors.a, "xp /1xg " + "(" * depth + "16") == UNBALANCED


def test_a_session_that_leaves_during_a_dump_gives_the_lock_back(monitors: Monitors) -> None:
    monitors.send_a("pmemsave", {"val": 0, "size": 256 << 20, "filename": "left.bin"})
    time.sleep(0.05)
    monitors.a.close()  # its command task is cancelled while the worker writes
    # The big lock is neither lost nor released twice: locked commands still run one by one.
    for _ in range(3):
        assert hmp(monitors.b, "info status") == "VM status: paused (prelaunch)\r\n"
        assert monitors.b.execute("pmemsave", {"val": 0, "size": 4096, "filename": "after.bin"}) == OK
    assert monitors.b.execute("query-status") == STATUS
