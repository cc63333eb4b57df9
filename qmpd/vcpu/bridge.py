"""The one crossing from vCPU threads into the event loop.

vCPU threads (and the devices their hooks call) never touch asyncio objects;
they post a callable here and the loop runs it at its next turn
(``call_soon_threadsafe``).  Calls from the loop thread itself run at once.

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

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, max_pending: int = MAX_PENDING) -> None:
        self._loop = loop
        self._loop_thread: int | None = None
        self._slots = threading.BoundedSemaphore(max_pending)
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the running loop (called from the loop thread)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the loop thread."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
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
