"""QMP over WebSocket: one QMP session per connection, one JSON message per text frame.

The session is the same Session the Unix and TCP monitors use; this module only carries its bytes.
Frames are fed to the session's byte-stream reader as they come, so a frame holding half a message
or several messages behaves exactly as the same bytes on a socket would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable

import structlog
from aiohttp import WSMsgType, web

from qmpd.protocol.session import Channel, Session

log = structlog.get_logger(__name__)

SessionFactory = Callable[[Channel, str], Session]

#: Largest frame a client may send (QMP's own limits apply inside it).
MAX_FRAME = 8 << 20

_connections = itertools.count(1)


class WebSocketChannel:
    """A Session's Channel over an aiohttp WebSocket: replies and events become text frames."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._queue: deque[str] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        #: Cleared while the session asks for no more input (its in-band queue is full).
        self.readable = asyncio.Event()
        self.readable.set()

    # Channel ---------------------------------------------------------------------------

    def send(self, line: bytes) -> None:
        if self._closing:
            return
        text = line.decode("ascii").rstrip("\r\n")
        self._queue.append(text)
        self._queued_bytes += len(text)
        self._wakeup.set()

    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()

    def buffered(self) -> int:
        return self._queued_bytes

    # -----------------------------------------------------------------------------------

    async def write_loop(self) -> None:
        """Send queued messages in order; after close(), flush and close the WebSocket."""
        while True:
            while self._queue:
                text = self._queue.popleft()
                self._queued_bytes -= len(text)
                await self._ws.send_str(text)
            if self._closing:
                await self._ws.close()
                return
            self._wakeup.clear()
            await self._wakeup.wait()


async def serve_qmp(
    request: web.Request, make_session: SessionFactory, open_sockets: set[web.WebSocketResponse]
) -> web.WebSocketResponse:
    """``GET /qmp`` upgraded to a WebSocket: greeting, negotiation, commands and events as on a socket."""
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, autoping=True)
    await ws.prepare(request)
    open_sockets.add(ws)
    channel = WebSocketChannel(ws)
    name = f"websocket#{next(_connections)}"
    session = make_session(channel, name)
    session.allows_host_commands = False
    writer = asyncio.ensure_future(channel.write_loop())
    log.info("qmp.websocket.open", session=name, peer=request.remote)
    session.start()
    try:
        while not ws.closed:
            await channel.readable.wait()
            message = await ws.receive()
            if message.type is WSMsgType.TEXT:
                session.feed(message.data.encode("utf-8", "surrogatepass"))
            elif message.type is WSMsgType.BINARY:
                session.feed(message.data)
            elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
    finally:
        session.close()
        channel.close()
        try:
            await asyncio.wait_for(writer, timeout=5)
        except (TimeoutError, ConnectionError):
            writer.cancel()
        open_sockets.discard(ws)
        log.info("qmp.websocket.closed", session=name)
    return ws
