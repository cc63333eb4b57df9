"""How long the guest takes to complete the hot-plug operations asked of it (for /metrics).

A plug completes when the guest's _OST reports the inserted CPU online; an
unplug when the guest ejects the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class HotplugLatency:
    """Pending plug/unplug requests by cpu index, and the observers told of them."""

    def __init__(self) -> None:
        #: Called with "plug" or "unplug" when one is asked of the guest.
        self.on_requested: list[Callable[[str], None]] = []
        #: Called with the operation and the seconds the guest took to complete it.
        self.on_completed: list[Callable[[str, float], None]] = []
        self._pending: dict[int, tuple[str, float]] = {}

    def requested(self, index: int, operation: str) -> None:
        """The guest was asked to plug or unplug CPU ``index``."""
        self._pending[index] = (operation, time.perf_counter())
        for observer in self.on_requested:
            observer(operation)

    def completed(self, index: int, operation: str) -> None:
        """The guest did it (ignored when nothing of that kind was pending)."""
        pending = self._pending.get(index)
        if pending is None or pending[0] != operation:
            return
        del self._pending[index]
        for observer in self.on_completed:
            observer(operation, time.perf_counter() - pending[1])

    def ost(self, info: dict[str, object]) -> None:
        """The guest's _OST: source 1 (insert) with status 0 means it put the plugged CPU online."""
        if info.get("source") == 1 and info.get("status") == 0:
            self.completed(int(str(info.get("slot"))), "plug")
