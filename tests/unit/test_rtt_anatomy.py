"""bench/rtt_anatomy.py: how perf's lines are read and where a round trip is cut.

The tool itself needs perf and root; its parsing and cutting are plain functions, checked here
on lines in the format `perf script -F tid,cpu,time,event,trace` prints.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def anatomy() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        return importlib.import_module("rtt_anatomy")
    finally:
        sys.path.remove(str(REPO / "bench"))


SERVER, IO_THREAD, CLIENT, OTHER = 200, 201, 100, 300


def event(anatomy: ModuleType, at_us: float, tid: int, name: str, detail: str = "") -> object:
    return anatomy.Event(10.0 + at_us / 1e6, tid, 0, name, detail)


def test_perf_script_line_is_read(anatomy: ModuleType) -> None:
    line = "   2880 [001]  1494.900375: syscalls:sys_exit_read: 0x1a"
    match = anatomy.LINE.match(line)
    assert match is not None
    assert match.groups() == ("2880", "001", "1494.900375", "syscalls:sys_exit_read", "0x1a")


def test_returned_reads_hex_and_errors(anatomy: ModuleType) -> None:
    assert anatomy.returned(anatomy.Event(0.0, 1, 0, "syscalls:sys_exit_read", "0x4c")) == 76
    assert anatomy.returned(anatomy.Event(0.0, 1, 0, "syscalls:sys_exit_read", "0xfffffffffffffff5")) == -1
    assert anatomy.returned(anatomy.Event(0.0, 1, 0, "irq_vectors:local_timer_entry", "vector=236")) == -1


def test_round_trip_is_cut_at_the_request_read_and_the_reply_write(anatomy: ModuleType) -> None:
    reply = 76
    events = [
        event(anatomy, 5, CLIENT, "syscalls:sys_exit_sendmsg", hex(26)),  # the client's own send
        event(anatomy, 20, SERVER, "syscalls:sys_exit_read", "0xfffffffffffffff5"),  # EAGAIN: not it
        event(anatomy, 25, IO_THREAD, "syscalls:sys_exit_read", hex(26)),  # the request
        event(anatomy, 30, SERVER, "irq_vectors:local_timer_entry", "vector=236"),
        event(anatomy, 35, SERVER, "syscalls:sys_exit_write", hex(8)),  # an event notifier: not it
        event(anatomy, 45, OTHER, "syscalls:sys_exit_write", hex(reply)),  # another process
        event(anatomy, 50, IO_THREAD, "syscalls:sys_exit_sendmsg", hex(reply)),  # the reply
    ]
    rounds = [(10.0, 10.0 + 60e-6)]
    cut = anatomy.split(rounds, events, {SERVER, IO_THREAD}, CLIENT, reply)
    assert [round(t * 1e6) for t in cut.totals] == [60]
    assert [round(t * 1e6) for t in cut.to_server] == [25]
    assert [round(t * 1e6) for t in cut.server] == [25]
    assert [round(t * 1e6) for t in cut.to_client] == [10]
    assert cut.ticked == [True]
    assert cut.client_ticked == [False]


def test_round_trip_without_the_reply_write_is_left_out(anatomy: ModuleType) -> None:
    events = [
        event(anatomy, 5, SERVER, "syscalls:sys_exit_read", hex(26)),
        event(anatomy, 30, CLIENT, "irq_vectors:local_timer_entry", "vector=236"),
    ]
    rounds = [(10.0, 10.0 + 40e-6)]
    cut = anatomy.split(rounds, events, {SERVER}, CLIENT, 76)
    assert cut.totals == []
