"""The one crossing from vCPU threads into the event loop: bound, ordered, loud when there is no loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from qmpd.vcpu.bridge import LoopBridge


def _in_thread(work: Callable[[], None]) -> None:
    """Run ``work`` in another thread and wait for it (the loop does not run meanwhile)."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_post_before_bind_fails_loudly() -> None:
    bridge = LoopBridge()
    ran: list[int] = []
    with pytest.raises(RuntimeError, match=r"before bind\(\)"):
        bridge.post(ran.append, 1)
    assert ran == [], "never run on the posting thread"


def test_bind_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="needs a running event loop"):
        LoopBridge().bind()


async def test_a_post_from_the_loop_thread_runs_at_once() -> None:
    bridge = LoopBridge()
    bridge.bind()
    ran: list[int] = []
    bridge.post(ran.append, 1)
    assert ran == [1]


async def test_a_post_from_another_thread_runs_at_the_loops_next_turn() -> None:
    bridge = LoopBridge()
    bridge.bind()
    ran: list[str] = []
    _in_thread(lambda: bridge.post(lambda: ran.append(threading.current_thread().name)))
    assert ran == []
    await asyncio.sleep(0)
    assert ran == [threading.current_thread().name]


async def test_the_loop_bridge_is_bounded_and_lets_go_on_close() -> None:
    bridge = LoopBridge(max_pending=100)
    bridge.bind()
    ran: list[int] = []
    posted: list[int] = []

    def poster() -> None:
        for number in range(150):
            bridge.post(ran.append, number)
            posted.append(number)

    thread = threading.Thread(target=poster)
    thread.start()
    time.sleep(0.5)  # the loop is blocked: nobody drains
    assert len(posted) == 100, "the 101st post waits for the loop"
    await asyncio.sleep(0.3)
    thread.join(timeout=5)
    await asyncio.sleep(0.1)
    assert ran == list(range(150)), "nothing lost, in order"

    # With nobody draining, a full bridge slows a poster to one post per MAX_WAIT, never forever.
    def flood() -> None:
        for number in range(102):
            bridge.post(ran.append, number)

    started = time.monotonic()
    _in_thread(flood)
    assert 1.5 < time.monotonic() - started < 5, "two posts waited their second each"
    bridge.close()
    started = time.monotonic()
    _in_thread(lambda: bridge.post(ran.append, -1))
    assert time.monotonic() - started < 0.1, "after close() posts are dropped at once"
    await asyncio.sleep(0.1)
    assert -1 not in ran
