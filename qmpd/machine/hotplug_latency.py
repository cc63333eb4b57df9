"""How long the guest takes to complete the hot-plug operations asked of it, and how it answers (for /metrics).

A plug completes when the guest's _OST reports the inserted CPU online; an
unplug when the guest ejects the CPU.  Every request's first answer is also
classified, from what the guest reports through the ACPI block only:

- ``failed``: an _OST for an insert (source 1) with a status other than 0 (success);
- ``refused``: an _OST for an eject request (source 3) with a status other than 0 and 0x84
  (ejection in progress, what a guest reports before it ejects);
- ``late``: the first answer (an _OST, or the eject itself) came more than LATE_AFTER
  seconds after the request;
- ``ignored``: no answer ACK_DEADLINE seconds after the request.  It is counted when the
  pending requests are next looked at (a scrape of /metrics or a new request), so at most
  once per request, and a request answered later still counts ``late`` too.

Pending requests are one per CPU slot at most (a new request replaces the slot's).
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: An answer after this many seconds is late; none after ACK_DEADLINE (libvirt's unplug wait) is ignored.
LATE_AFTER = 1.0
ACK_DEADLINE = 5.0
#: _OST status "ejection in progress" (ACPI), which a guest sends before it ejects.
OST_EJECT_IN_PROGRESS = 0x84


class _Pending:
    """One request awaiting the guest (a plain class with slots: a dataclass took ~0.5 ms to create at every start)."""

    __slots__ = ("answered", "counted_ignored", "operation", "since")

    def __init__(self, operation: str, since: float) -> None:
        self.operation = operation
        self.since = since
        self.answered = False
        self.counted_ignored = False


class HotplugLatency:
    """Pending plug/unplug requests by cpu index, and the observers told of them."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        #: Called with "plug" or "unplug" when one is asked of the guest.
        self.on_requested: list[Callable[[str], None]] = []
        #: Called with the operation and the seconds the guest took to complete it.
        self.on_completed: list[Callable[[str, float], None]] = []
        #: Called with the operation and how the guest answered: failed, refused, late, ignored.
        self.on_answer: list[Callable[[str, str], None]] = []
        self._pending: dict[int, _Pending] = {}
        self._clock = clock

    def requested(self, index: int, operation: str) -> None:
        """The guest was asked to plug or unplug CPU ``index``."""
        self.sweep()
        self._pending[index] = _Pending(operation, self._clock())
        for observer in self.on_requested:
            observer(operation)

    def completed(self, index: int, operation: str) -> None:
        """The guest did it (ignored when nothing of that kind was pending)."""
        pending = self._pending.get(index)
        if pending is None or pending.operation != operation:
            return
        self._answered(pending)
        del self._pending[index]
        for observer in self.on_completed:
            observer(operation, self._clock() - pending.since)

    def ost(self, info: dict[str, object]) -> None:
        """The guest's _OST: an answer to the slot's request; source 1 with status 0 completes a plug."""
        try:
            index = int(str(info.get("slot")))
        except ValueError:
            return
        source, status = info.get("source"), info.get("status")
        pending = self._pending.get(index)
        expected = {"plug": 1, "unplug": 3}
        if pending is not None and expected[pending.operation] == source:
            self._answered(pending)
            if source == 1 and status != 0:
                self._tell(pending.operation, "failed")
            elif source == 3 and status not in (0, OST_EJECT_IN_PROGRESS):
                self._tell(pending.operation, "refused")
        if source == 1 and status == 0:
            self.completed(index, "plug")

    def sweep(self) -> None:
        """Count the requests left unanswered past ACK_DEADLINE (once each)."""
        now = self._clock()
        for pending in self._pending.values():
            if not pending.answered and not pending.counted_ignored and now - pending.since > ACK_DEADLINE:
                pending.counted_ignored = True
                self._tell(pending.operation, "ignored")

    def _answered(self, pending: _Pending) -> None:
        if pending.answered:
            return
        pending.answered = True
        if self._clock() - pending.since > LATE_AFTER:
            self._tell(pending.operation, "late")

    def _tell(self, operation: str, outcome: str) -> None:
        for observer in self.on_answer:
            observer(operation, outcome)
