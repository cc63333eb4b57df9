"""One QMP conversation: greeting, negotiation, request queue, replies, events.

A session is transport-agnostic: bytes come in through :meth:`Session.feed`,
whole messages leave through a :class:`Channel` (a socket, stdio, a
WebSocket).  It follows QEMU's monitor rules (monitor/qmp.c):

- Input is a byte stream; parse errors are answered in order, without id.
- In-band requests run one at a time, in order.  Without the ``oob``
  capability at most one request is outstanding: input is not read until its
  reply is out.  With ``oob``, up to 8 requests wait while one runs, and
  ``exec-oob`` requests run as soon as they are read, overtaking the queue.
- Events reach the session only after negotiation; events raised by a
  command are written before that command's reply.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, Protocol

from qmpd.dispatch import Dispatcher, loggable
from qmpd.events import EventBus
from qmpd.fdstore import SessionFds
from qmpd.log import get_logger
from qmpd.qobject.parser import JSONParseError
from qmpd.qobject.streamer import JSONMessageStreamer, StreamItem
from qmpd.qobject.writer import encode

log = get_logger(__name__)

#: QEMU's QMP_REQ_QUEUE_LEN_MAX: in-band requests that may wait while one runs.
INBAND_QUEUE_MAX = 8
#: Reply bytes a client may leave unread before it is disconnected.
DEFAULT_MAX_OUTPUT = 16 << 20

_END = object()


class Channel(Protocol):
    """Where a session's messages go, and how it pushes back on input."""

    def send(self, line: bytes) -> None:
        """Write one complete message (JSON object + CRLF)."""

    def pause_reading(self) -> None:
        """Stop delivering input until resumed."""

    def resume_reading(self) -> None:
        """Deliver input again."""

    def close(self) -> None:
        """Flush what was sent, then close."""

    def buffered(self) -> int:
        """Bytes sent but not yet taken by the peer."""


class SessionState(enum.Enum):
    """Where a session is in its life."""

    NEGOTIATING = "negotiating"
    COMMAND = "command"
    CLOSED = "closed"


class Session:
    """A QMP session over one channel."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        events: EventBus,
        channel: Channel,
        *,
        name: str,
        greeting: dict[str, Any],
        max_output: int = DEFAULT_MAX_OUTPUT,
        streamer: JSONMessageStreamer | None = None,
        fds: SessionFds | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._events = events
        self._channel = channel
        #: Identifies the session in logs (monitor name and connection number).
        self.name = name
        #: Whether commands may run host programs (exec: migration).  Every monitor may, as in
        #: QEMU; the HTTP front clears it on its WebSocket sessions, which a browser page can open.
        self.allows_host_commands = True
        #: Descriptors the client passed (getfd, add-fd); closed with the session.
        self.fds = fds if fds is not None else SessionFds()
        self._greeting = greeting
        self._max_output = max_output
        self._streamer = streamer or JSONMessageStreamer()
        self.state = SessionState.NEGOTIATING
        self._capabilities: frozenset[str] = frozenset()
        self._oob = False
        self._inputs: deque[Iterator[StreamItem]] = deque()
        self._inband: deque[StreamItem] = deque()
        self._busy = False
        self._processing = False
        self._reading_paused = False
        self._task: asyncio.Task[None] | None = None
        self._log = log.bind(session=name)

    # -- what commands may see (SessionControl) ---------------------------------

    @property
    def negotiated(self) -> bool:
        """True once ``qmp_capabilities`` succeeded."""
        return self.state is SessionState.COMMAND

    @property
    def oob_enabled(self) -> bool:
        """True when the client enabled the ``oob`` capability."""
        return self._oob

    def negotiate(self, capabilities: Sequence[str]) -> None:
        """Enter command mode with ``capabilities`` (already checked as offered)."""
        self._capabilities = frozenset(capabilities)
        self._oob = "oob" in self._capabilities
        self.state = SessionState.COMMAND
        self._events.subscribe(self)
        self._log.debug("qmp.negotiated", capabilities=sorted(self._capabilities))

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        """Send the greeting."""
        self._send(encode(self._greeting))

    def feed(self, data: bytes) -> None:
        """Take input bytes from the transport."""
        if self.state is SessionState.CLOSED:
            return
        self._inputs.append(self._streamer.feed(data))
        self._process()

    def close(self) -> None:
        """The transport is gone (or we are closing it): stop everything."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self._events.unsubscribe(self)
        self.fds.close()
        self._inputs.clear()
        self._inband.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def send_event(self, line: bytes) -> None:
        """Deliver an encoded event (EventBus calls this once negotiated)."""
        if self.state is SessionState.COMMAND:
            self._send(line)

    # -- request processing --------------------------------------------------------

    def _room_for_input(self) -> bool:
        if self._oob:
            return len(self._inband) < INBAND_QUEUE_MAX
        return not self._inband and not self._busy

    def _process(self) -> None:
        """Run queued requests and read input while the queue rules allow."""
        if self._processing:
            return
        self._processing = True
        try:
            while self.state is not SessionState.CLOSED and not self._dispatcher.closing:
                if self._inband and not self._busy:
                    self._run_inband(self._inband.popleft())
                elif self._inputs and self._room_for_input():
                    item = next(self._inputs[0], _END)
                    if item is _END:
                        self._inputs.popleft()
                    else:
                        self._accept(item)  # type: ignore[arg-type]
                else:
                    break
        finally:
            self._processing = False
        self._update_flow_control()

    def _update_flow_control(self) -> None:
        if self.state is SessionState.CLOSED:
            return
        want = self._room_for_input() and not self._dispatcher.closing
        if want and self._reading_paused:
            self._reading_paused = False
            self._channel.resume_reading()
        elif not want and not self._reading_paused:
            self._reading_paused = True
            self._channel.pause_reading()

    def _accept(self, item: StreamItem) -> None:
        """Run an out-of-band request now; run an in-band one now if none waits or runs, else queue it."""
        if isinstance(item, dict) and "exec-oob" in item and "execute" not in item:
            self._run(item)
        elif self._inband or self._busy:
            self._inband.append(item)
        else:
            self._run_inband(item)  # what queueing it would lead to at once, minus the queue

    def _run_inband(self, item: StreamItem) -> None:
        if isinstance(item, JSONParseError):
            self._log.info("qmp.parse_error", desc=loggable(item.desc))
            self._send_reply(self._dispatcher.parse_error_reply(item.desc))
            return
        self._run(item)

    def _run(self, request: StreamItem) -> None:
        """Dispatch one request; this is the session's exception boundary."""
        try:
            outcome = self._dispatcher.dispatch(request, self)
        except Exception as exc:
            self._log.exception("qmp.dispatch_failed", exc_info=exc)
            outcome = self._dispatcher.internal_error_reply(request)
        if isinstance(outcome, dict):
            self._send_reply(outcome)
            return
        self._busy = True
        self._task = asyncio.get_running_loop().create_task(self._complete(outcome))

    async def _complete(self, outcome: Awaitable[dict[str, Any]]) -> None:
        try:
            reply = await outcome
        except asyncio.CancelledError:
            raise
        self._busy = False
        self._task = None
        self._send_reply(reply)
        self._process()

    def _send_reply(self, reply: dict[str, Any]) -> None:
        if self.state is SessionState.CLOSED:
            return
        try:
            line = encode(reply)
        except Exception as exc:
            self._log.exception("qmp.encode_failed", exc_info=exc)
            line = encode(self._dispatcher.internal_error_reply(reply))
        self._send(line)

    def _send(self, line: bytes) -> None:
        self._channel.send(line)
        if self._channel.buffered() > self._max_output:
            self._log.warning("qmp.client_not_reading", buffered=self._channel.buffered(), limit=self._max_output)
            self.close()
            self._channel.close()
