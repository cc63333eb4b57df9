"""The one crossing from vCPU threads into the event loop.

vCPU threads (and the devices their hooks call) never touch asyncio objects;
they post a callable here and the loop runs it at its next turn
(``call_soon_threadsafe``).  A post made on the loop thread itself runs at
once: a device callback reached from a monitor command then takes effect
before the command's reply, as in QEMU where the big-lock holder calls it
directly, and the loop never waits for room in its own queue.

A post before ``bind`` raises: without a loop there is nowhere to run it, and
running it on the vCPU thread would let that thread touch loop-only state.

The crossing is bounded: at most MAX_PENDING posts wait for the loop; beyond that a posting vCPU
thread waits up to a second per post (a guest hammering a device register slows itself, not the
monitors, and the queue grows by at most one post per second per vCPU).  The wait is capped rather
than unbounded so that a loop blocked on a vCPU thread (its exit) can never deadlock with it.
After close() posts are dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

#: Posts that may wait for the loop at once, and how long a poster waits for room (seconds).
MAX_PENDING = 4096
MAX_WAIT = 1.0


class LoopBridge:
    """Hand work from any thread to the event loop."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._slots = threading.BoundedSemaphore(max_pending)
        self._closed = False

    def bind(self) -> None:
        """Attach to the running loop; call it on the loop's thread (where the machine is built)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("LoopBridge.bind() needs a running event loop: build the machine on its loop") from None
        self._loop_thread = threading.get_ident()

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the loop thread (at once when called there)."""
        if self._loop is None:
            raise RuntimeError(f"LoopBridge.post({function!r}) before bind(): no event loop to run it on")
        if threading.get_ident() == self._loop_thread:
            function(*args)
            return
        if self._closed:
            return
        held = self._slots.acquire(timeout=MAX_WAIT)
        try:
            self._loop.call_soon_threadsafe(self._run, function, args, held)
        except RuntimeError:  # the loop is closed
            if held:
                self._slots.release()

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...], held: bool) -> None:
        if held:
            self._slots.release()
        function(*args)

    def close(self) -> None:
        """Stop taking posts (the machine is going away); waiting posters give up."""
        self._closed = True
