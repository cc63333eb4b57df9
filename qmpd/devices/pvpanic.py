"""pvpanic (ISA, port 0x505): the guest reports a panic or a loaded crash kernel, as QEMU's device.

Reading the port gives the events the device supports; writing bit 0 is a
panic (GUEST_PANICKED and -action panic), bit 1 a crash kernel loaded
(GUEST_CRASHLOADED).  A panic wins when both are written.
"""

from __future__ import annotations

from collections.abc import Callable

PANICKED = 1
CRASH_LOADED = 2


class PVPanic:
    """The device; the callbacks run on a vCPU thread (the board posts them to the loop)."""

    def __init__(self, on_panic: Callable[[], None], on_crashloaded: Callable[[], None], events: int = 3) -> None:
        self._on_panic = on_panic
        self._on_crashloaded = on_crashloaded
        self._events = events

    def io_read(self, offset: int, size: int) -> int:
        return self._events

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= self._events
        if value & PANICKED:
            self._on_panic()
        elif value & CRASH_LOADED:
            self._on_crashloaded()
