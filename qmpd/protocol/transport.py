"""Byte transports for QMP sessions: Unix and TCP listeners, inherited fds, stdio.

A monitor endpoint serves one client at a time, as a QEMU socket chardev
does: a second client's connection is left in the listen backlog, unread,
until the first one closes; then it gets its greeting and its queued input
is processed.  Several monitors may exist at once; each gets every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import sys
from collections.abc import Callable
from typing import cast

import structlog

from qmpd.config import MonitorConfig, MonitorKind
from qmpd.protocol.session import Channel, Session

log = structlog.get_logger(__name__)

SessionFactory = Callable[[Channel, str], Session]


class TransportError(Exception):
    """A monitor endpoint could not be set up (the text is shown to the user)."""


#: Bytes read per receive call.  A preallocated buffer (BufferedProtocol) avoids the
#: allocate/shrink/free of a fresh 256 KiB object per read that asyncio does otherwise.
READ_BUFFER_SIZE = 64 << 10


class StreamChannel(asyncio.BufferedProtocol):
    """A session carried by an asyncio transport (socket or pipe pair)."""

    def __init__(self, make_session: SessionFactory, name: str) -> None:
        self._buffer = bytearray(READ_BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._make_session = make_session
        self._name = name
        self._transport: asyncio.Transport | None = None
        self._writer: asyncio.WriteTransport | None = None
        self.session: Session | None = None
        #: Resolved when the connection is gone.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's; they have the same methods.
        self._transport = cast(asyncio.Transport, transport)
        if self._writer is None:
            self._writer = cast(asyncio.WriteTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session = self._make_session(self, self._name)
        self.session.start()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        assert self.session is not None
        self.session.feed(bytes(self._view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        """Pipe transports (stdio) deliver data this way."""
        assert self.session is not None
        self.session.feed(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.session.close()
        if self._writer is not None and self._writer is not self._transport:
            self._writer.close()
        if not self.closed.done():
            self.closed.set_result(None)

    # Channel -----------------------------------------------------------------------

    def use_writer(self, writer: asyncio.WriteTransport) -> None:
        """Send output to a separate transport (stdio: read stdin, write stdout)."""
        self._writer = writer

    def send(self, line: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(line)

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def buffered(self) -> int:
        return self._writer.get_write_buffer_size() if self._writer is not None else 0


class MonitorEndpoint:
    """One QMP monitor: where clients connect, and the session loop behind it."""

    def __init__(self, config: MonitorConfig, make_session: SessionFactory, *, socket_mode: int = 0o600) -> None:
        self.config = config
        self._make_session = make_session
        self._socket_mode = socket_mode
        self._listener: socket.socket | None = None
        self._current: StreamChannel | None = None
        self._connections = 0
        #: Set once the first client has connected (for ``wait=on``).
        self.first_client = asyncio.Event()
        self._unlink_path: str | None = None

    @property
    def address(self) -> str:
        """Where clients connect (with the real port when 0 was asked)."""
        if self._listener is not None and self.config.kind is MonitorKind.TCP:
            host, port = self._listener.getsockname()[:2]
            return f"tcp:{host}:{port}"
        return self.config.describe()

    def open(self) -> None:
        """Create (or adopt) the listening socket; raise TransportError with QEMU-like text."""
        kind = self.config.kind
        if kind is MonitorKind.UNIX:
            self._listener = self._open_unix()
        elif kind is MonitorKind.TCP:
            self._listener = self._open_tcp()
        elif kind is MonitorKind.FD:
            self._listener = self._adopt_fd()
        if self._listener is not None:
            self._listener.setblocking(False)

    def _open_unix(self) -> socket.socket:
        path = self.config.path
        assert path is not None
        if len(os.fsencode(path)) >= 108:
            raise TransportError(f"UNIX socket path '{path}' is too long")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TransportError(f"Failed to unlink socket {path}: {exc.strerror}") from exc
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, self._socket_mode)
            sock.listen(1)
        except OSError as exc:
            sock.close()
            raise TransportError(f"Failed to bind socket to {path}: {exc.strerror}") from exc
        self._unlink_path = path
        return sock

    def _open_tcp(self) -> socket.socket:
        host, port = self.config.host, self.config.port
        family = socket.AF_INET if self.config.ipv4 else socket.AF_INET6 if self.config.ipv6 else socket.AF_UNSPEC
        try:
            infos = socket.getaddrinfo(host or None, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise TransportError(f"address resolution failed for {host}:{port}: {exc.strerror}") from exc
        last: OSError | None = None
        for fam, kind, proto, _, addr in infos:
            sock = socket.socket(fam, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(addr)
                sock.listen(1)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        reason = last.strerror if last is not None else "no address"
        raise TransportError(f"Failed to bind socket: {reason}")

    def _adopt_fd(self) -> socket.socket:
        fd = self.config.fd
        assert fd is not None
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            raise TransportError(f"File descriptor '{fd}' is not a socket") from exc
        if not stat.S_ISSOCK(mode):
            raise TransportError(f"File descriptor '{fd}' is not a socket")
        sock = socket.socket(fileno=fd)
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise TransportError(f"File descriptor '{fd}' is not a listening socket")
        return sock

    async def serve(self) -> None:
        """Accept clients one after another until cancelled."""
        loop = asyncio.get_running_loop()
        if self.config.kind is MonitorKind.STDIO:
            await self._serve_stdio()
            return
        assert self._listener is not None
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            self._connections += 1
            name = f"{self.config.chardev_id}#{self._connections}"
            log.info("qmp.connected", monitor=self.config.chardev_id, session=name)
            channel = StreamChannel(self._make_session, name)
            self._current = channel
            self.first_client.set()
            try:
                await loop.connect_accepted_socket(lambda channel=channel: channel, conn)  # type: ignore[misc]
                await channel.closed
            finally:
                self._current = None
                log.info("qmp.disconnected", monitor=self.config.chardev_id, session=name)

    async def _serve_stdio(self) -> None:
        loop = asyncio.get_running_loop()
        channel = StreamChannel(self._make_session, f"{self.config.chardev_id}#stdio")
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(os.dup(sys.stdout.fileno()), "wb"))
        channel.use_writer(writer)
        self._current = channel
        self.first_client.set()
        await loop.connect_read_pipe(lambda: channel, os.fdopen(os.dup(sys.stdin.fileno()), "rb"))
        await channel.closed

    def close(self) -> None:
        """Close the client (after its pending output) and the listener; remove the socket file."""
        if self._current is not None:
            self._current.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._unlink_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._unlink_path)
            self._unlink_path = None

    async def wait_closed(self) -> None:
        """Wait until the current client's output is flushed and its socket closed."""
        if self._current is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._current.closed), timeout=5)
