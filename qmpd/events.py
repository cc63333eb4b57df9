"""QMP events: built once, timestamped when emitted, sent to every negotiated session.

Events are emitted on the event loop only (:meth:`EventBus.emit`): what a
vCPU thread has to report crosses to the loop through the machine's
LoopBridge first.  Subscribers are sessions that finished capabilities
negotiation; each receives the same encoded line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from qmpd.log import get_logger
from qmpd.qapi.arguments import first_error
from qmpd.qapi.schema import EventSpec, Schema
from qmpd.qobject.writer import encode

log = get_logger(__name__)


class EventSink(Protocol):
    """Something that can take an encoded event line (a negotiated session)."""

    def send_event(self, line: bytes) -> None: ...


def timestamp_now() -> dict[str, int]:
    """``{"seconds", "microseconds"}`` of the wall clock, as QEMU stamps events."""
    micros = time.time_ns() // 1000
    return {"seconds": micros // 1_000_000, "microseconds": micros % 1_000_000}


class EventBus:
    """Fan-out of events to sessions; the only way events leave the machine."""

    def __init__(self, schema: Schema, *, strict: bool = False) -> None:
        self._schema = schema
        #: When set, an event whose data does not match its schema raises (tests).
        self.strict = strict
        self._sinks: list[EventSink] = []
        #: Observers called with (name, data) for every event (metrics, tests).
        self.observers: list[Callable[[str, Mapping[str, Any] | None], None]] = []

    def _problem(self, spec: EventSpec, data: dict[str, Any]) -> str | None:
        """What is wrong with ``data``, or None (a plain event is checked without jsonschema)."""
        if spec.plain:
            return first_error(self._schema, spec, data)
        errors = list(spec.validator.iter_errors(data))
        return str(errors[0].message) if errors else None

    def subscribe(self, sink: EventSink) -> None:
        """Start delivering events to ``sink``."""
        if sink not in self._sinks:
            self._sinks.append(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        """Stop delivering events to ``sink``."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Send event ``name`` now (call on the event loop)."""
        spec = self._schema.events[name]
        if data is not None or spec.members:
            problem = self._problem(spec, dict(data or {}))
            if problem is not None:
                if self.strict:
                    raise ValueError(f"event {name} does not match its schema: {problem}")
                log.error("event.invalid", name=name, problem=problem)
        message: dict[str, Any] = {"event": name}
        if spec.members:
            message["data"] = dict(data or {})
        message["timestamp"] = timestamp_now()
        line = encode(message)
        for observer in self.observers:
            observer(name, data)
        for sink in list(self._sinks):
            sink.send_event(line)
