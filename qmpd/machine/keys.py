"""send-key's key events on their way to the keyboard, as QEMU's input queue (ui/input.c) times them.

``send-key`` presses its keys in order and releases them in reverse order, with
a delay (``hold-time`` ms, 10 when absent or 0) after each event.  The first
event goes to the keyboard at once; the rest wait in a queue that a timer
drains, so a second ``send-key`` lines up behind the first.  As on QEMU, the
queue holds at most 1024 entries (an event counts as two, as QEMU queues an
event and a sync), more are dropped; a guest that is not running gets no key
events (the monitor's events are dropped) and no delays are queued; the
delay is the unsigned 32-bit value QEMU takes from ``hold-time``.  QEMU's delays
run on the virtual clock: here a delay that ends while the guest is paused
waits until it runs again.  Everything runs on the event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

#: QEMU's queue_limit (ui/input.c): entries waiting in the key queue.
QUEUE_LIMIT = 1024
#: QEMU's kbd_default_delay_ms: the delay when hold-time is absent or 0.
DEFAULT_DELAY_MS = 10

#: A key event (QKeyCode, down) or a delay in milliseconds.
_Entry = tuple[str, bool] | int


class KeyInjector:
    """The machine's key queue."""

    def __init__(self, deliver: Callable[[str, bool], None], running: Callable[[], bool]) -> None:
        self._deliver = deliver
        self._running = running
        self._queue: deque[_Entry] = deque()
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        #: A delay ended while the guest was paused: the queue goes on when it runs again.
        self._stalled = False

    @property
    def waiting(self) -> int:
        """Entries in the queue (QEMU's queue_count)."""
        return self._count

    def send_keys(self, qcodes: list[str], hold_time: int | None) -> None:
        """QEMU's qmp_send_key: press in order, release in reverse, a delay after each event."""
        delay = (hold_time or 0) & 0xFFFFFFFF or DEFAULT_DELAY_MS
        for qcode in qcodes:
            self._event(qcode, True)
            self._delay(delay)
        for qcode in reversed(qcodes):
            self._event(qcode, False)
            self._delay(delay)

    def _event(self, qcode: str, down: bool) -> None:
        qcode = "print" if qcode == "sysrq" else qcode  # QEMU normalises its old sysrq key
        if not self._queue:
            self._send(qcode, down)
        elif self._count < QUEUE_LIMIT:
            self._queue.append((qcode, down))
            self._count += 2

    def _delay(self, milliseconds: int) -> None:
        if not self._running() or self._count >= QUEUE_LIMIT:
            return
        start = not self._queue
        self._queue.append(milliseconds)
        self._count += 1
        if start:
            self._arm(milliseconds)

    def _send(self, qcode: str, down: bool) -> None:
        if self._running():
            self._deliver(qcode, down)

    def _arm(self, milliseconds: int) -> None:
        self._timer = asyncio.get_running_loop().call_later(milliseconds / 1000, self._expired)

    def _expired(self) -> None:
        """The delay at the head ended: send the events up to the next delay, and wait for that."""
        self._timer = None
        if not self._running():
            self._stalled = True
            return
        self._queue.popleft()
        self._count -= 1
        while self._queue:
            entry = self._queue[0]
            if isinstance(entry, int):
                self._arm(entry)
                return
            self._queue.popleft()
            self._count -= 2
            self._send(*entry)

    def resumed(self) -> None:
        """The guest runs again: a queue stalled by the pause goes on."""
        if self._stalled:
            self._stalled = False
            self._expired()

    def close(self) -> None:
        """Forget every waiting event (the machine is going away)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._count = 0
