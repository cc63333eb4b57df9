"""Entry point: the start-up steps that must happen before the daemon is imported.

Order, as QEMU's where it matters: parse the whole command line (errors exit
1 before anything is created); fork for ``-daemonize``; open every monitor's
listening socket; write the pidfile; start greeting clients; and only then
import and run the event-loop daemon (qmpd.daemon), which takes over the
sockets.  This module imports nothing heavy, so a client that connects right
after spawning gets its greeting within a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import signal
import sys
from collections.abc import Sequence

from qmpd.cli import PROG, parse_or_exit
from qmpd.machine.spec import SpecError, build_spec
from qmpd.protocol.early import EarlyGreeter
from qmpd.protocol.listeners import Listener, TransportError, open_listener
from qmpd.qobject.writer import encode
from qmpd.version import greeting


class StartupError(Exception):
    """Start-up failed; the text is printed after the program name."""


class PidFile:
    """QEMU's pidfile: created 0600, locked for the daemon's life, removed at exit."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def write(self) -> None:
        """Create, lock and fill the file, or raise StartupError with QEMU's text."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StartupError(f"cannot create PID file: Could not create '{self.path}': {exc.strerror}") from exc
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"cannot create PID file: Cannot lock pid file: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def remove(self) -> None:
        """Delete the file and drop the lock."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


def daemonize() -> int:
    """Fork twice as QEMU does; the original process waits for the grandchild's word.

    Returns the write end of the readiness pipe in the grandchild (the parent
    and the intermediate child never return).  The grandchild's stdio is
    /dev/null at once: whoever started us (libvirt) reads the parent's output
    and expects silence.
    """
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        message = b""
        while chunk := os.read(read_fd, 4096):
            message += chunk
        if message == b"\0":
            os._exit(0)
        sys.stderr.write(message.decode(errors="replace") or f"{PROG}: daemon failed to start\n")
        os._exit(1)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return write_fd


class _EarlySignals:
    """Remember termination signals that arrive before the event loop can handle them.

    Clients may connect (and send SIGTERM's cause) before the daemon is fully
    imported; the default action would kill the process without its orderly
    exit, leaving the socket files and the pidfile behind.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: object) -> None:
        self.received.append(signum)


def _fail(message: str, ready_fd: int | None) -> int:
    text = f"{PROG}: {message}\n"
    if ready_fd is not None:
        os.write(ready_fd, text.encode())
        os.close(ready_fd)
    else:
        sys.stderr.write(text)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``qmpd``, ``python -m qmpd``).

    The cycle collector waits until the daemon is ready (Daemon.run freezes what start-up built,
    then enables it): start-up makes ~50,000 lasting objects and ~1,600 cyclic garbage ones, and
    collecting while it does took 7 % of its CPU time.
    """
    gc.disable()
    try:
        return _start(argv)
    finally:
        gc.enable()


def _start(argv: Sequence[str] | None) -> int:
    config = parse_or_exit(sys.argv[1:] if argv is None else argv)
    try:
        spec = build_spec(config.machine)
    except SpecError as exc:
        for warning in exc.warnings:
            sys.stderr.write(f"{PROG}: {warning}\n")
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
    for warning in spec.warnings:
        sys.stderr.write(f"{PROG}: warning: {warning}\n")
    for warning in spec.located_warnings:
        sys.stderr.write(f"{PROG}: {warning}\n")
    ready_fd = daemonize() if config.server.daemonize else None
    listeners: list[Listener] = []
    pidfile = PidFile(config.server.pidfile) if config.server.pidfile else None
    try:
        for monitor in config.server.monitors:
            try:
                listeners.append(open_listener(monitor, config.server.socket_mode))
            except TransportError as exc:
                raise StartupError(f"-qmp {monitor.describe()}: {exc}") from exc
        if pidfile is not None:
            pidfile.write()
    except StartupError as exc:
        for listener in listeners:
            listener.close()
        return _fail(str(exc), ready_fd)
    early_signals = _EarlySignals()
    greeter = EarlyGreeter(listeners, encode(greeting()))
    greeter.start()

    # structlog imports rich when it is installed (import-linter brings it into a development
    # environment; 0.1 s of start-up), and qmpd never uses it: its log lines render tracebacks plainly.
    # Likewise greenlet (playwright's, for the tests; ~3-6 ms): structlog's thread-local module tries
    # it, and qmpd runs no greenlets.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    sys.modules.setdefault("greenlet", None)  # type: ignore[arg-type]
    from qmpd.daemon import run_daemon  # the heavy part: event loop, schema, machine

    try:
        return run_daemon(config, spec, listeners, greeter, ready_fd, early_signals.received)
    finally:
        if pidfile is not None:
            pidfile.remove()
