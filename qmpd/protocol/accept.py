"""Accepting connections so that running out of file descriptors is a pause, not an end.

``loop.sock_accept`` raises when the process is at its fd limit (``EMFILE``), and
an accept loop that lets that escape stops for good: the listener never greets
a client again, silently.  Here a lack of resources pauses the loop for a moment
and logs why (at most once per interval); a peer that vanished between the
kernel's handshake and the accept is skipped.  Only an error that means the
listener itself is unusable ends the loop.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time

from qmpd.log import get_logger

log = get_logger(__name__)

#: Seconds an accept loop pauses when the process or system is out of fds or buffers.
ACCEPT_RETRY_DELAY = 0.5
#: Seconds between two log lines of the same kind from one listener.
LOG_INTERVAL = 10.0

#: The process or the system lacks a resource: waiting lets other connections close.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: This one connection failed (the peer reset it, or a firewall refused it): take the next.
_CONNECTION_FAILED = frozenset({errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM, errno.EINTR})


class ThrottledLog:
    """A warning logged at most once per ``interval``, saying how many were held back meanwhile."""

    def __init__(self, event: str, interval: float = LOG_INTERVAL, **context: object) -> None:
        self._event = event
        self._interval = interval
        self._context = context
        self._last = -interval
        self._suppressed = 0

    def warning(self, **fields: object) -> None:
        """Log now, or count the occurrence if the last line is too recent."""
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        log.warning(self._event, suppressed=self._suppressed, **self._context, **fields)
        self._last = now
        self._suppressed = 0


class Acceptor:
    """Accepts connections on one listening socket, surviving fd exhaustion."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._exhausted = ThrottledLog("accept.out_of_resources", listener=name, retry_in=ACCEPT_RETRY_DELAY)

    async def accept(self) -> socket.socket:
        """The next client's socket (non-blocking); pauses while fds or buffers are short.

        Raises OSError only for an unusable listener (closed, not listening).
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._exhausted.warning(error=exc.strerror)
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                elif exc.errno not in _CONNECTION_FAILED:
                    raise
                continue
            conn.setblocking(False)
            return conn
