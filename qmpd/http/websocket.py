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
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web
from aiohttp.http import WebSocketWriter
from aiohttp.web_request import BaseRequest

from qmpd.log import get_logger
from qmpd.protocol.session import Channel, Session

log = get_logger(__name__)

SessionFactory = Callable[[Channel, str], Session]

#: Largest frame a client may send (QMP's own limits apply inside it).
MAX_FRAME = 8 << 20

#: Bit of a frame's second byte that says the payload is masked.
MASK_BIT = 0x80
#: Why a connection was dropped on an unmasked client frame.
UNMASKED = "unmasked client frame (RFC 6455 section 5.1)"

_connections = itertools.count(1)


class MaskedFramesOnly:
    """aiohttp's frame parser behind a check that every client frame is masked.

    RFC 6455 section 5.1: the server must close the connection on a frame that is not masked.
    aiohttp (3.x, no setting for it) reads unmasked frames as valid.  This walks the frame headers
    of the bytes as they arrive (payload bytes are skipped, not copied), hands the parser every
    byte before a bad header, then fails the connection the way the parser fails it on its own
    protocol errors: WebSocketError(1002) for the reader, end of input for the transport.
    """

    def __init__(self, parser: Any, queue: Any) -> None:
        self._parser = parser
        self._queue = queue
        #: The start of a frame header that the last read cut short.
        self._partial_header = b""
        self._payload_left = 0
        self._failed = False

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        if type(data) is not bytes:
            data = bytes(data)
        unmasked_at = self._find_unmasked(data)
        if unmasked_at is None:
            result: tuple[bool, bytes] = self._parser.feed_data(data)
            return result
        self._failed = True
        log.warning("qmp.websocket.unmasked_frame")
        if unmasked_at:
            self._parser.feed_data(data[:unmasked_at])
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, UNMASKED))
        return True, b""

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def _find_unmasked(self, data: bytes) -> int | None:
        """Offset in ``data`` of the first unmasked frame (0 if its header began earlier), or None.

        Headers are read in place; only one cut short by a read is kept (at most 13 bytes)."""
        carried = len(self._partial_header)
        buffer = self._partial_header + data if carried else data
        position, end = 0, len(buffer)
        while position < end:
            if self._payload_left:
                step = min(self._payload_left, end - position)
                self._payload_left -= step
                position += step
                continue
            if end - position >= 2 and not buffer[position + 1] & MASK_BIT:
                return max(position - carried, 0)
            size = _header_size(buffer, position)
            if end - position < size:
                break
            self._payload_left = _payload_length(buffer, position)
            position += size
        self._partial_header = buffer[position:]
        return None


def _header_size(buffer: bytes, start: int) -> int:
    """Bytes in the masked frame header at ``start``, as far as the bytes there tell (RFC 6455 section 5.2)."""
    if len(buffer) - start < 2:
        return 2
    length = buffer[start + 1] & 0x7F
    return 8 if length == 126 else 14 if length == 127 else 6


def _payload_length(buffer: bytes, start: int) -> int:
    length = buffer[start + 1] & 0x7F
    if length < 126:
        return length
    return int.from_bytes(buffer[start + 2 : start + (4 if length == 126 else 10)], "big")


class CheckedWebSocketResponse(web.WebSocketResponse):
    """A server WebSocket that closes on unmasked client frames (see MaskedFramesOnly).

    aiohttp installs its parser in ``_post_start`` and feeds it, at once, any bytes the client sent
    right behind its upgrade request.  Those bytes are held back and go through the check too."""

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        handler = request.protocol
        early, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        checked = MaskedFramesOnly(handler._payload_parser, self._reader)
        handler._payload_parser = checked
        if early and checked.feed_data(early)[0]:
            handler.close()


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
    ws = CheckedWebSocketResponse(max_msg_size=MAX_FRAME, autoping=True)
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
