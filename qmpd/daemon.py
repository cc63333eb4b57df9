"""The running daemon: event loop, machine, monitors, signals, orderly exit.

qmpd.main has already parsed the command line, opened the listening sockets
and started greeting clients; here the schema and the machine are built, the
greeted connections are taken over, the ``-daemonize`` parent is released,
and the guest starts unless ``-S``.  SIGTERM, SIGINT and SIGHUP send SHUTDOWN
(reason ``host-signal``) to every session, close the sockets, remove the
socket files and exit 0; a migration under way is cancelled and its ``exec:``
command killed first, so the exit takes seconds at most.  With ``--state-dir``
the machine is saved first, and restored at the next start; a state that cannot
be restored is renamed aside (``qmpd.state.rejected-<UTC time>``), logged, and
the machine starts fresh.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from qmpd import __version__
from qmpd.cli import PROG
from qmpd.commands.base import context_factory
from qmpd.config import Config, LogFormat
from qmpd.dispatch import Dispatcher
from qmpd.errors import QMPError
from qmpd.events import EventBus
from qmpd.fdstore import FdSets, SessionFds
from qmpd.handler_index import registry_for
from qmpd.log import get_logger, hold, release, setup_logging
from qmpd.machine.machine import Machine
from qmpd.machine.runstate import RunState, ShutdownCause
from qmpd.machine.spec import MachineSpec
from qmpd.migration import STATE_FILE
from qmpd.migration.migrator import Migrator
from qmpd.migration.stream import CHUNK, save_atomically
from qmpd.protocol.early import EarlyGreeter
from qmpd.protocol.listeners import Listener
from qmpd.protocol.session import Channel, Session, SessionState
from qmpd.protocol.transport import MonitorEndpoint, SessionFactory, SessionLimit
from qmpd.qapi.schema import Schema
from qmpd.qobject.ghash import iteration_order
from qmpd.version import greeting

if TYPE_CHECKING:  # aiohttp and prometheus-client cost more than the rest of start-up: loaded with --http only
    from qmpd.http.server import HttpFront

log = get_logger(__name__)


#: How long SIGTERM waits for an aborted migration to end before saving --state-dir's state.
MIGRATION_EXIT_TIMEOUT = 5.0
#: Start-up's log lines are written this long after ready (qmpd.log.hold): the first clients'
#: commands (libvirt's probe or its connect sequence) do not wait for structlog's import.
LOG_RELEASE_DELAY = 0.2


class StartupError(Exception):
    """The daemon could not start (the text says why; the process exits 1)."""


class Daemon:
    """One machine, its monitors, and the process around them."""

    def __init__(
        self,
        config: Config,
        spec: MachineSpec,
        listeners: list[Listener],
        greeter: EarlyGreeter,
        *,
        ready_fd: int | None = None,
        early_signals: list[int] | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self._early_signals = early_signals if early_signals is not None else []
        self._listeners = listeners
        self._greeter = greeter
        self._ready_fd = ready_fd
        self._exit = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        self.endpoints: list[MonitorEndpoint] = []
        self.machine: Machine | None = None
        #: The machine's migration (migrate, -incoming, --state-dir's restore), handed to every command context.
        self.migrator: Migrator | None = None
        self._saving = False
        self._tasks: set[asyncio.Future[None]] = set()
        #: Every QMP session made (weakly held: closed ones go with their connection).
        self.sessions: weakref.WeakSet[Session] = weakref.WeakSet()
        #: QEMU's fd sets (add-fd), shared by every session; QEMU 7.2 closes removed ones only while running.
        self.fdsets = FdSets(running=lambda: self.machine is not None and self.machine.running)
        self._status = 0

    # DaemonControl -----------------------------------------------------------------

    def request_exit(self) -> None:
        """Stop taking requests and leave the main loop (after pending replies)."""
        if self._dispatcher is not None:
            self._dispatcher.closing = True
        self._exit.set()

    def chardevs(self) -> list[dict[str, Any]]:
        """Monitors and debug-console chardevs in QEMU's order: its /chardevs hash table, filled in
        creation order, iterated and listed in reverse."""
        entries: dict[str, dict[str, Any]] = {}
        used = {dict(device.props).get("chardev") for device in self.config.machine.devices}
        for chardev_id, char in self.config.machine.chardevs:
            filename = "stdio" if char.kind == "stdio" else char.kind
            entries[chardev_id] = {"frontend-open": chardev_id in used, "filename": filename, "label": chardev_id}
        for endpoint in self.endpoints:
            label = endpoint.config.chardev_id
            entries[label] = {"frontend-open": True, "filename": endpoint.chardev_filename, "label": label}
        created = [label for label in self.config.server.chardev_labels if label in entries]
        created += [label for label in entries if label not in created]
        return [entries[label] for label in reversed(iteration_order(created))]

    def _guest_exit(self, status: int) -> None:
        """The guest ends the process with this status: isa-debug-exit (no SHUTDOWN, as QEMU), or a guest
        shutdown or panic that powers off (after its SHUTDOWN)."""
        log.info("qmpd.guest_exit", status=status)
        self._status = status
        self.request_exit()

    # --------------------------------------------------------------------------------

    def _session_factory(self, dispatcher: Dispatcher, events: EventBus) -> SessionFactory:
        hello = greeting()

        def make(channel: Channel, name: str) -> Session:
            session = Session(dispatcher, events, channel, name=name, greeting=hello, fds=SessionFds(self.fdsets))
            self.sessions.add(session)
            return session

        return make

    def sessions_open(self) -> int:
        """QMP sessions (any transport) not yet closed."""
        return sum(1 for session in self.sessions if session.state is not SessionState.CLOSED)

    async def _start_http(self, dispatcher: Dispatcher, events: EventBus, factory: SessionFactory) -> HttpFront | None:
        """The --http front, or None; a port that cannot be bound ends start-up as QEMU's bad -qmp does."""
        if self.config.server.http is None:
            return None
        assert self.machine is not None
        from qmpd.http.server import HttpFront

        host, port = self.config.server.http
        front = HttpFront(
            host=host,
            port=port,
            token=self.config.server.http_token,
            machine=self.machine,
            dispatcher=dispatcher,
            events=events,
            make_session=factory,
            sessions_open=self.sessions_open,
            accepting=lambda: not self._exit.is_set(),
            max_sessions=self.config.server.max_sessions,
            allow_origins=self.config.server.http_allow_origins,
        )
        try:
            await front.start()
        except OSError as exc:
            await front.close()
            raise StartupError(f"--http {host}:{port}: {exc.strerror or exc}") from None
        return front

    def _on_signal(self, signum: int) -> None:
        if self.config.server.log_format is LogFormat.CONSOLE:
            sys.stderr.write(f"{PROG}: terminating on signal {signum}\n")
        else:
            log.warning("qmpd.terminating", signal=signum)
        if self.migrator is not None:
            self.migrator.abort()
        state_dir = self.config.server.state_dir
        if state_dir is not None and self.machine is not None and not self._saving:
            self._saving = True
            task = asyncio.ensure_future(self._save_then_exit(state_dir))
            task.add_done_callback(lambda _: None)
            self._tasks.add(task)
            return
        if self.machine is not None and not self._exit.is_set():
            self.machine.shutdown(ShutdownCause.HOST_SIGNAL)
        self.request_exit()

    async def _save_then_exit(self, state_dir: str) -> None:
        """--state-dir: pause, save the machine atomically, then exit as on any signal."""
        machine, migrator = self.machine, self.migrator
        assert machine is not None and migrator is not None
        path = os.path.join(state_dir, STATE_FILE)
        try:
            await migrator.wait_idle(MIGRATION_EXIT_TIMEOUT)
            if machine.runstate is not RunState.INMIGRATE:
                before = machine.runstate
                await machine.stop_for_migration()
                from qmpd.migration.state import capture

                meta = await capture(machine)
                meta["runstate"] = before.value
                ram = machine.ram
                size = await asyncio.get_running_loop().run_in_executor(
                    None, save_atomically, path, meta, ram.view(), ram.touched_chunks(CHUNK)
                )
                log.info("qmpd.state_saved", path=path, bytes=size)
        except Exception as exc:  # the previous state file stays as it was
            log.error("qmpd.state_save_failed", path=path, error=str(exc))
            self._status = 1
        if not self._exit.is_set():
            machine.shutdown(ShutdownCause.HOST_SIGNAL)
        self.request_exit()

    def _watch_state_restore(self) -> None:
        """--state-dir: once the saved state has loaded (or failed to), act on the outcome."""
        state_dir = self.config.server.state_dir
        path = None if state_dir is None else os.path.join(state_dir, STATE_FILE)
        if path is None or self.config.machine.incoming != f"file:{path}":
            return
        task = asyncio.ensure_future(self._after_state_restore(path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_state_restore(self, path: str) -> None:
        """A state that failed to restore is renamed aside (kept for a post-mortem, never loaded
        again) and the machine starts fresh, as a service should rather than exit in a loop."""
        machine, migrator = self.machine, self.migrator
        assert machine is not None and migrator is not None
        await migrator.wait_idle(None)
        if migrator.status != "failed" or machine.runstate is not RunState.INMIGRATE:
            return
        aside = f"{path}.rejected-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        try:
            os.replace(path, aside)
        except OSError as exc:
            aside = f"(not moved: {exc.strerror or exc})"
        if migrator.ram_loaded:  # its RAM was loaded before the failure: not a fresh machine
            log.error("qmpd.state_rejected", path=path, moved_to=aside, error=migrator.error, starting="no")
            return
        log.error("qmpd.state_rejected", path=path, moved_to=aside, error=migrator.error, starting="fresh")
        machine.set_runstate(RunState.PRELAUNCH)
        if machine.autostart:
            machine.vm_start()

    async def run(self) -> int:
        """Run until quit or a signal; return the exit status."""
        loop = asyncio.get_running_loop()
        schema = Schema.load()
        events = EventBus(schema)
        try:
            self.machine = Machine(self.config.machine, events, self.spec)
        except QMPError as exc:  # a boot CPU that -cpu's properties keep from plugging (QEMU exits too)
            raise StartupError(str(exc)) from None
        self.machine.on_exit = self._guest_exit
        self.migrator = Migrator(self.machine, self.config.machine.incoming)
        registry, checked = registry_for(schema)
        make_context = context_factory(self.machine, schema, events, self, self.migrator)
        dispatcher = Dispatcher(schema, registry, make_context, checked=checked)
        dispatcher.log_commands = self.config.server.log_level in ("debug", "info")
        self._dispatcher = dispatcher
        factory = self._session_factory(dispatcher, events)
        greeted = self._greeter.stop()
        try:
            front = await self._start_http(dispatcher, events, factory)
        except StartupError:
            self.machine.close()
            raise
        limit = SessionLimit(self.config.server.max_sessions, self.sessions_open)
        for listener in self._listeners:
            endpoint = MonitorEndpoint(listener, factory, greeted=greeted.get(id(listener)), limit=limit)
            self.endpoints.append(endpoint)
            log.info("qmp.listening", monitor=listener.config.chardev_id, address=endpoint.address)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_signal, signum)
        for early in self._early_signals:
            self._on_signal(early)
        tasks = [loop.create_task(endpoint.serve()) for endpoint in self.endpoints]
        self._report_ready()
        loop.call_later(LOG_RELEASE_DELAY, self._release_log)
        # Everything built so far lives as long as the daemon: keep it out of the
        # collector's way, and collect the young generation less often (fewer pauses).
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        gc.enable()  # qmpd.main kept it off during start-up
        log.info("qmpd.started", version=__version__, machine=self.config.machine.machine_type, pid=os.getpid())
        try:
            for endpoint in self.endpoints:
                if endpoint.config.wait:
                    sys.stderr.write(f"{PROG}: waiting for connection on: disconnected:{endpoint.address},server=on\n")
                    await self._wait_either(endpoint.first_client.wait())
            if not self._exit.is_set():
                self.machine.power_on()
                self.migrator.start_incoming()
                self._watch_state_restore()
            await self._exit.wait()
        finally:
            if front is not None:
                from qmpd.http.server import wait_closed

                await wait_closed(front)
            for endpoint in self.endpoints:
                endpoint.close()
            await asyncio.gather(*(endpoint.wait_closed() for endpoint in self.endpoints))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.machine.close()
            self.fdsets.close()
            log.info("qmpd.exited", status=self._status)
        return self._status

    async def _wait_either(self, waiter: Coroutine[Any, Any, Any]) -> None:
        done = asyncio.ensure_future(waiter)
        stop = asyncio.ensure_future(self._exit.wait())
        await asyncio.wait({done, stop}, return_when=asyncio.FIRST_COMPLETED)
        for future in (done, stop):
            future.cancel()

    def _release_log(self) -> None:
        """Write start-up's held log lines, or try again later (out of file descriptors now)."""
        if not release():
            asyncio.get_running_loop().call_later(LOG_RELEASE_DELAY, self._release_log)

    def _report_ready(self) -> None:
        """Tell the waiting ``-daemonize`` parent that start-up succeeded."""
        if self._ready_fd is None:
            return
        os.chdir("/")
        os.write(self._ready_fd, b"\0")
        os.close(self._ready_fd)
        self._ready_fd = None


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and installed (lower per-wakeup cost), else asyncio's."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop
    return None


def run_daemon(
    config: Config,
    spec: MachineSpec,
    listeners: list[Listener],
    greeter: EarlyGreeter,
    ready_fd: int | None,
    early_signals: list[int],
) -> int:
    """Run the daemon on already-open listeners until quit or a signal; return the exit status.

    ``early_signals`` is filled by the start-up code with signals that arrived
    before the event loop existed; they are acted on as soon as it does.
    """
    setup_logging(config.server.log_format, config.server.log_level, config.server.log_file)
    hold()
    daemon = Daemon(config, spec, listeners, greeter, ready_fd=ready_fd, early_signals=early_signals)
    with asyncio.Runner(loop_factory=_loop_factory(config.server.event_loop)) as runner:
        try:
            return runner.run(daemon.run())
        except StartupError as exc:
            release(load=False)
            sys.stderr.write(f"{PROG}: {exc}\n")
            return 1
        finally:
            release(load=False)
