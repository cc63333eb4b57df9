"""Greeting clients while the daemon is still starting.

Python needs a few hundred milliseconds to import the daemon; QEMU greets a
client within tens.  Right after the listening sockets exist, a helper thread
accepts the first client of each monitor and sends it the greeting.  When the
event loop is up, the thread is stopped and joined, and the accepted sockets
are handed over: their sessions start with the greeting already sent, and any
command the client sent meanwhile is waiting, unread, in the socket.  The
thread touches only plain sockets; nothing of it outlives start-up.
"""

from __future__ import annotations

import os
import select
import socket
import threading

from qmpd.protocol.listeners import Listener


class EarlyGreeter:
    """Accept-and-greet the first client of each listener until stopped."""

    def __init__(self, listeners: list[Listener], greeting: bytes) -> None:
        self._listeners = [listener for listener in listeners if listener.sock is not None]
        self._greeting = greeting
        self._wake_read, self._wake_write = os.pipe()
        self._accepted: dict[int, socket.socket] = {}
        self._thread = threading.Thread(target=self._run, name="qmpd-early-greeter", daemon=True)

    def start(self) -> None:
        """Begin accepting in the background."""
        self._thread.start()

    def _run(self) -> None:
        waiting = {listener.sock.fileno(): index for index, listener in enumerate(self._listeners) if listener.sock}
        while waiting:
            ready, _, _ = select.select([self._wake_read, *waiting], [], [])
            if self._wake_read in ready:
                return
            for fd in ready:
                index = waiting.pop(fd)
                sock = self._listeners[index].sock
                assert sock is not None
                try:
                    conn, _ = sock.accept()
                    conn.sendall(self._greeting)
                except OSError:
                    waiting[fd] = index  # the client went away; keep waiting for another
                    continue
                self._accepted[id(self._listeners[index])] = conn

    def stop(self) -> dict[int, socket.socket]:
        """Stop the thread; return the greeted connections keyed by id(listener)."""
        os.write(self._wake_write, b"x")
        self._thread.join()
        os.close(self._wake_read)
        os.close(self._wake_write)
        return self._accepted
