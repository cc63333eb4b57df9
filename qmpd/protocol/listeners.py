"""Listening sockets for QMP monitors: Unix paths, TCP ports, inherited fds.

Plain sockets, no event loop: they are opened first thing at start-up, before
the heavier parts of the daemon are imported, so clients can connect (and be
greeted) while qmpd is still starting.  The HTTP front's listening sockets are
made here too, so that both fronts accept through qmpd.protocol.accept.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Iterator

from qmpd.config import MonitorConfig, MonitorKind


class TransportError(Exception):
    """A monitor endpoint could not be set up (the text is shown to the user)."""


class Listener:
    """An open listening socket (None for stdio) and the file to remove at exit."""

    __slots__ = ("config", "sock", "unlink_path")

    def __init__(self, config: MonitorConfig, sock: socket.socket | None, unlink_path: str | None = None) -> None:
        self.config = config
        self.sock = sock
        self.unlink_path = unlink_path

    @property
    def address(self) -> str:
        """Where clients connect (with the real port when 0 was asked)."""
        if self.sock is not None and self.config.kind is MonitorKind.TCP:
            host, port = self.sock.getsockname()[:2]
            return f"tcp:{host}:{port}"
        return self.config.describe()

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.unlink_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unlink_path)
            self.unlink_path = None


def open_listener(config: MonitorConfig, socket_mode: int = 0o600) -> Listener:
    """Create (or adopt) the listening socket; raise TransportError with QEMU-like text."""
    if config.kind is MonitorKind.UNIX:
        assert config.path is not None
        return Listener(config, _open_unix(config.path, socket_mode), config.path)
    if config.kind is MonitorKind.TCP:
        return Listener(config, _open_tcp(config))
    if config.kind is MonitorKind.FD:
        assert config.fd is not None
        return Listener(config, _adopt_fd(config.fd))
    return Listener(config, None)


def _open_unix(path: str, mode: int) -> socket.socket:
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
        with _creation_mode(mode):
            sock.bind(path)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise TransportError(f"Failed to bind socket to {path}: {exc.strerror}") from exc
    return sock


@contextlib.contextmanager
def _creation_mode(mode: int) -> Iterator[None]:
    """Files created inside get exactly ``mode``: the umask is set to its complement meanwhile.

    bind() creates the socket file; a chmod after it would leave the file as
    the umask made it (0777 under umask 0: anyone may connect) for a moment.
    The umask is per process, so this must run while no other thread can
    create files: listeners are opened in qmpd.main before any thread starts
    (the early greeter, the event loop's executor and the vCPUs come later),
    and the check below keeps it so.
    """
    if threading.active_count() != 1:
        raise RuntimeError("a Unix socket must be created before any other thread starts (the umask is per process)")
    previous = os.umask(0o777 & ~mode)
    try:
        yield
    finally:
        os.umask(previous)


def _open_tcp(config: MonitorConfig) -> socket.socket:
    host, port = config.host, config.port
    family = socket.AF_INET if config.ipv4 else socket.AF_INET6 if config.ipv6 else socket.AF_UNSPEC
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
            sock.listen(16)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    reason = last.strerror if last is not None else "no address"
    raise TransportError(f"Failed to bind socket: {reason}")


def _adopt_fd(fd: int) -> socket.socket:
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


def open_tcp_listeners(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to, as asyncio's create_server binds them.

    Raises OSError (its text names the address) when any of them cannot be bound.
    """
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: {(exc.strerror or str(exc)).lower()}",
                ) from None
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
