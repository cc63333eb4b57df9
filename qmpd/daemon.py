"""The process: daemonize, pidfile, monitors, signals, and an orderly exit.

Start-up mirrors QEMU's order: parse everything, create the machine, open
every monitor, write the pidfile, then (``-daemonize``) let the parent exit
0, and finally start the guest unless ``-S``.  SIGTERM, SIGINT and SIGHUP
send SHUTDOWN (reason ``host-signal``) to every session, close the
sockets, remove socket files and pidfile, and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog

from qmpd import __version__
from qmpd.cli import PROG, parse_or_exit
from qmpd.commands import REGISTRY
from qmpd.config import Config, LogFormat
from qmpd.dispatch import Dispatcher
from qmpd.events import EventBus
from qmpd.log import setup_logging
from qmpd.machine.machine import Machine
from qmpd.machine.runstate import ShutdownCause
from qmpd.protocol.session import Channel, Session
from qmpd.protocol.transport import MonitorEndpoint, TransportError
from qmpd.qapi.schema import Schema
from qmpd.version import greeting

log = structlog.get_logger(__name__)


class StartupError(Exception):
    """Start-up failed; the text is printed after the program name."""


class PidFile:
    """QEMU's pidfile: created 0600, locked for the daemon's life, removed at exit."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def write(self) -> None:
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
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


class Daemon:
    """One machine, its monitors, and the process around them."""

    def __init__(self, config: Config, *, ready_fd: int | None = None) -> None:
        self.config = config
        self._ready_fd = ready_fd
        self._exit = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        self.endpoints: list[MonitorEndpoint] = []
        self.machine: Machine | None = None

    # DaemonControl -----------------------------------------------------------------

    def request_exit(self) -> None:
        """Stop taking requests and leave the main loop (after pending replies)."""
        if self._dispatcher is not None:
            self._dispatcher.closing = True
        self._exit.set()

    # --------------------------------------------------------------------------------

    def _session_factory(self, dispatcher: Dispatcher, events: EventBus) -> object:
        hello = greeting()

        def make(channel: Channel, name: str) -> Session:
            return Session(dispatcher, events, channel, name=name, greeting=hello)

        return make

    def _on_signal(self, signum: int) -> None:
        if self.config.server.log_format is LogFormat.CONSOLE:
            sys.stderr.write(f"{PROG}: terminating on signal {signum}\n")
        else:
            log.warning("qmpd.terminating", signal=signum)
        if self.machine is not None and not self._exit.is_set():
            self.machine.shutdown(ShutdownCause.HOST_SIGNAL)
        self.request_exit()

    async def run(self) -> int:
        """Run until quit or a signal; return the exit status."""
        loop = asyncio.get_running_loop()
        schema = Schema.load()
        events = EventBus(schema)
        events.bind_loop(loop)
        self.machine = Machine(self.config.machine, events)
        dispatcher = Dispatcher(schema, REGISTRY, self.machine, events, self)
        dispatcher.log_commands = self.config.server.log_level in ("debug", "info")
        self._dispatcher = dispatcher
        factory = self._session_factory(dispatcher, events)
        pidfile = PidFile(self.config.server.pidfile) if self.config.server.pidfile else None
        try:
            for monitor in self.config.server.monitors:
                endpoint = MonitorEndpoint(monitor, factory, socket_mode=self.config.server.socket_mode)  # type: ignore[arg-type]
                try:
                    endpoint.open()
                except TransportError as exc:
                    raise StartupError(f"-qmp {monitor.describe()}: {exc}") from exc
                self.endpoints.append(endpoint)
                log.info("qmp.listening", monitor=monitor.chardev_id, address=endpoint.address)
            if pidfile is not None:
                pidfile.write()
        except StartupError:
            for endpoint in self.endpoints:
                endpoint.close()
            raise
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_signal, signum)
        tasks = [loop.create_task(endpoint.serve()) for endpoint in self.endpoints]
        self._report_ready()
        # Everything built so far lives as long as the daemon: keep it out of the
        # collector's way, and collect the young generation less often (fewer pauses).
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        log.info("qmpd.started", version=__version__, machine=self.config.machine.machine_type, pid=os.getpid())
        try:
            for endpoint in self.endpoints:
                if endpoint.config.wait:
                    sys.stderr.write(f"{PROG}: waiting for connection on: disconnected:{endpoint.address},server=on\n")
                    await self._wait_either(endpoint.first_client.wait())
            if not self._exit.is_set():
                self.machine.power_on()
            await self._exit.wait()
        finally:
            for endpoint in self.endpoints:
                endpoint.close()
            await asyncio.gather(*(endpoint.wait_closed() for endpoint in self.endpoints))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if pidfile is not None:
                pidfile.remove()
            log.info("qmpd.exited")
        return 0

    async def _wait_either(self, waiter: Coroutine[Any, Any, Any]) -> None:
        done = asyncio.ensure_future(waiter)
        stop = asyncio.ensure_future(self._exit.wait())
        await asyncio.wait({done, stop}, return_when=asyncio.FIRST_COMPLETED)
        for future in (done, stop):
            future.cancel()

    def _report_ready(self) -> None:
        """Tell the waiting parent (``-daemonize``) that start-up succeeded; detach stdio."""
        if self._ready_fd is None:
            return
        os.chdir("/")
        os.write(self._ready_fd, b"\0")
        os.close(self._ready_fd)
        self._ready_fd = None


def _daemonize() -> int:
    """Fork twice as QEMU does; the original process waits for the grandchild's word.

    Returns the write end of the readiness pipe in the grandchild (the parent
    and the intermediate child never return).
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
    # The parent's stdio belongs to whoever started us (libvirt reads it and expects
    # silence); from here on errors travel through the pipe and logs go to --log-file.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return write_fd


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and installed (lower per-wakeup cost), else asyncio's."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``qmpd``, ``python -m qmpd``)."""
    config = parse_or_exit(sys.argv[1:] if argv is None else argv)
    ready_fd = _daemonize() if config.server.daemonize else None
    setup_logging(config.server.log_format, config.server.log_level, config.server.log_file)
    daemon = Daemon(config, ready_fd=ready_fd)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(config.server.event_loop)) as runner:
            return runner.run(daemon.run())
    except StartupError as exc:
        text = f"{PROG}: {exc}\n"
        if ready_fd is not None:
            os.write(ready_fd, text.encode())
            os.close(ready_fd)
        else:
            sys.stderr.write(text)
        return 1
