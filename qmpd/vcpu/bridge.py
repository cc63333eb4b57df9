"""The one crossing from vCPU threads into the event loop.

vCPU threads (and the devices their hooks call) never touch asyncio objects;
they post a callable here and the loop runs it at its next turn
(``call_soon_threadsafe``).  Calls from the loop thread itself run at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class LoopBridge:
    """Hand work from any thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the running loop (called from the loop thread)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the loop thread."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            function(*args)
            return
        self._loop.call_soon_threadsafe(function, *args)
