"""migrate / query-migrate / migrate_cancel / -incoming, with QEMU's states, events and run states.

Outgoing (``migrate uri=file:PATH`` or ``exec:CMD``): status setup -> active (MIGRATION_PASS 1), the
vCPUs stop (run state finish-migrate, STOP), the state is captured and written (MIGRATION_PASS 2),
status completed, run state postmigrate.  A file is written beside its final name and renamed into
place, so a cancelled or failed migration leaves no partial file.  Incoming (``-incoming file:PATH``,
``exec:CMD``, or ``defer`` + ``migrate-incoming``): the machine waits in ``inmigrate``; the whole
stream is read and checked before anything is applied, so a bad stream leaves the machine as it was
(still ``inmigrate``), with status failed and the cause in ``error-desc``; another ``migrate-incoming``
may then be tried.  MIGRATION events are sent when the ``events`` capability is on, as in QEMU.

Every way a migration can end is bounded: a file target is written to a fresh temporary beside it
(never through a link, never over a FIFO or device), an incoming stream is read only up to the size
its header declares and the target can hold, and ``abort`` (SIGTERM) kills an ``exec:`` command's
process group so that no thread stays blocked on its pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from qmpd.errors import GenericError
from qmpd.log import get_logger
from qmpd.machine.runstate import RunState
from qmpd.migration.stream import (
    CHUNK,
    RAMImage,
    StateFormatError,
    check_target,
    open_regular_file,
    read_bounded,
    write_atomically,
    write_state,
)

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

log = get_logger(__name__)

_SCHEMES = ("file:", "exec:", "fd:")
#: The target page size query-migrate reports (x86).
PAGE_SIZE = 4096
#: How long an exec: command may take to exit once its stream is read or written.
CHILD_EXIT_TIMEOUT = 5.0


def check_uri(uri: str) -> None:
    if not uri.startswith(_SCHEMES) or (len(uri.split(":", 1)[1]) == 0 and not uri.startswith("fd:")):
        raise GenericError("Parameter 'uri' expects a valid migration protocol")
    if "\0" in uri:
        raise GenericError("Parameter 'uri' expects a valid migration protocol: it contains a NUL byte")


def incoming_fd(number: str) -> int:
    """``-incoming fd:N`` / ``migrate-incoming fd:N``: an inherited descriptor's number (QEMU parses it
    with strtol; a number is required here), which must be open."""
    try:
        fd = int(number, 0)
    except ValueError:
        raise GenericError(f"Parameter 'uri' expects a valid migration protocol: '{number}' is not a number") from None
    if fd < 0:
        raise GenericError(f"Parameter 'uri' expects a valid migration protocol: '{number}' is not a number")
    os.fstat(fd)  # OSError (EBADF): not open
    return fd


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """End an exec: command and whatever it started (it runs in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class Migrator:
    """The machine's one migration (QEMU keeps one MigrationState per process), built by the daemon
    and reached by commands through their context."""

    def __init__(self, machine: Machine, incoming: str | None = None) -> None:
        self.machine = machine
        #: ``-incoming`` as given (``defer``, ``file:PATH``, ``exec:CMD``), or None.
        self.incoming = incoming
        self.status = "none"
        self.error: str | None = None
        self._started = 0.0
        self._times: dict[str, int] = {}
        self._ram_bytes = 0
        self._transferred = 0
        self._cancel = False
        self._touched: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        #: The running exec: command, killed by abort().
        self._child: subprocess.Popen[bytes] | None = None
        #: An fd: target taken from the session, until the stream is written to it (and closes it).
        self._fd_target: int | None = None
        self._aborted = False
        #: A stream's RAM was copied into guest RAM (the machine is no longer as built).
        self.ram_loaded = False

    # -- outgoing ------------------------------------------------------------------------

    def start(self, uri: str, take_fd: Callable[[str], int] | None = None) -> None:
        """``migrate``: checks, then the migration runs on (as QEMU's migration thread does).

        ``fd:NAME`` takes the session's descriptor with ``take_fd`` (CommandContext.take_fd) after
        the checks, as QEMU does; it is written from its current position and closed at the end.
        """
        if self.running:
            raise GenericError("There's a migration process in progress")
        if self.machine.runstate is RunState.INMIGRATE:
            raise GenericError("Guest is waiting for an incoming migration")
        if self.machine.runstate is RunState.POSTMIGRATE:
            raise GenericError("Can't migrate the vm that was paused due to previous migration")
        if self.machine.dumping:
            from qmpd.machine.guest_dump import MIGRATION_BLOCKED

            raise GenericError(MIGRATION_BLOCKED)
        check_uri(uri)
        if uri.startswith("file:"):
            try:
                check_target(uri[len("file:") :])
            except OSError as exc:
                raise GenericError(str(exc)) from None
        fd = None
        if uri.startswith("fd:"):
            try:
                if take_fd is None:
                    raise GenericError(f"File descriptor named '{uri[3:]}' has not been found")
                fd = take_fd(uri[3:])
            except GenericError as exc:  # QEMU has entered setup by then: the migration failed
                self._set_status("setup")
                self.error = exc.desc
                self._set_status("failed")
                raise
        self.error = None
        self._cancel = False
        self._started = time.monotonic()
        self._times = {}
        self._set_status("setup")
        self._fd_target = fd
        self._task = asyncio.ensure_future(self._outgoing(uri))
        self._task.add_done_callback(self._close_fd_target)

    def _close_fd_target(self, _: object) -> None:
        """An fd: target the stream never reached (the migration failed first) is closed here."""
        fd, self._fd_target = self._fd_target, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def running(self) -> bool:
        """An outgoing migration is under way (QEMU's migration_is_running)."""
        return self.status in ("setup", "active", "cancelling")

    def cancel(self) -> None:
        """``migrate_cancel``: stop an outgoing migration; the guest runs on as before."""
        if self.status in ("setup", "active"):
            self._cancel = True
            self._set_status("cancelling")

    def abort(self) -> None:
        """The daemon is exiting (SIGTERM): cancel any migration and kill its exec: command, so that
        no worker thread stays blocked on a pipe nobody reads or writes."""
        self._aborted = True
        self.cancel()
        child = self._child
        if child is not None:
            _kill_group(child)

    async def wait_idle(self, timeout: float | None) -> None:
        """Wait (at most ``timeout`` seconds) for a running migration to end."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    async def _outgoing(self, uri: str) -> None:
        machine = self.machine
        was_running = machine.running
        before = machine.runstate
        try:
            if self._events:
                machine.events.emit("MIGRATION_PASS", {"pass": 1})
            self._set_status("active")
            setup_done = time.monotonic()
            self._times["setup-time"] = int((setup_done - self._started) * 1000)
            stopped = time.monotonic()
            await machine.stop_for_migration()
            from qmpd.migration.state import capture  # with the machine's description: loaded by a migration

            meta = await capture(machine)
            meta["runstate"] = before.value
            ram = machine.ram.view()
            self._touched = machine.ram.touched_chunks(CHUNK)
            self._ram_bytes = len(ram)
            if self._events:
                machine.events.emit("MIGRATION_PASS", {"pass": 2})
            self._transferred = await asyncio.get_running_loop().run_in_executor(None, self._write, uri, meta, ram)
            self._times["downtime"] = int((time.monotonic() - stopped) * 1000)
            self._times["total-time"] = int((time.monotonic() - self._started) * 1000)
            self._set_status("completed")
            machine.set_runstate(RunState.POSTMIGRATE)
            log.info("migration.completed", uri=uri, bytes=self._transferred, ms=self._times["total-time"])
        except InterruptedError:
            self._set_status("cancelled")
            self._resume(was_running)
        except (OSError, GenericError) as exc:
            self._outgoing_failed(uri, str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc))
            self._resume(was_running)
        except Exception as exc:  # a qmpd bug: logged with its traceback, and the guest goes on
            log.exception("migration.failed_unexpectedly", uri=uri)
            self._outgoing_failed(uri, f"internal error: {exc!r}")
            self._resume(was_running)

    def _outgoing_failed(self, uri: str, error: str) -> None:
        self.error = error
        log.warning("migration.failed", uri=uri, error=error)
        self._set_status("failed")

    def _resume(self, was_running: bool) -> None:
        machine = self.machine
        if machine.runstate is RunState.FINISH_MIGRATE:
            if was_running:
                machine.vm_start()
            else:
                machine.set_runstate(RunState.PAUSED)

    def _write(self, uri: str, meta: dict[str, Any], ram: memoryview) -> int:
        """In a worker thread: the stream to a file (atomically) or to a command's stdin."""
        scheme, target = uri.split(":", 1)
        if scheme == "file":
            return write_atomically(target, lambda out: self._write_state(out, meta, ram), suffix=".part")
        if scheme == "fd":  # from where the descriptor stands (libvirt wrote its header first); no seeks
            fd, self._fd_target = self._fd_target, None
            assert fd is not None
            with open(fd, "wb", closefd=True) as out:
                return self._write_state(out, meta, ram)
        with self._command(target, stdin=subprocess.PIPE) as process:
            assert process.stdin is not None
            size = self._write_state(process.stdin, meta, ram)
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            status = self._reap(process)
        if status != 0:
            raise GenericError(f"migration command '{target}' exited with status {status}")
        return size

    def _write_state(self, out: Any, meta: dict[str, Any], ram: memoryview) -> int:
        try:
            size = write_state(out, meta, ram, lambda: self._cancel, self._touched)
        except BrokenPipeError:
            if self._cancel:
                raise InterruptedError("cancelled") from None
            raise
        if self._cancel:
            raise InterruptedError("cancelled")
        return size

    @contextlib.contextmanager
    def _command(self, command: str, **pipes: Any) -> Iterator[subprocess.Popen[bytes]]:
        """An exec: command in its own session (so that abort can kill all it started); if the
        stream fails, the command is killed rather than waited for."""
        if self._aborted:
            raise InterruptedError("cancelled")
        process: subprocess.Popen[bytes] = subprocess.Popen(["/bin/sh", "-c", command], start_new_session=True, **pipes)
        self._child = process
        try:
            yield process
        except BaseException:
            _kill_group(process)
            raise
        finally:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._reap(process)

    def _reap(self, process: subprocess.Popen[bytes]) -> int:
        """The command's exit status; one that does not exit in time is killed."""
        try:
            return process.wait(timeout=CHILD_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return process.wait()
        finally:
            self._child = None

    # -- incoming ------------------------------------------------------------------------

    def start_incoming(self) -> None:
        """At power-on: ``-incoming file:``/``exec:`` starts loading now; ``defer`` waits for migrate-incoming."""
        if self.incoming is not None and self.incoming != "defer":
            self.begin_accept(self.incoming)

    def begin_accept(self, uri: str) -> None:
        """Start loading an incoming stream (``-incoming URI`` at start-up, or ``migrate-incoming``).

        Status ``setup`` (and its MIGRATION event) comes before migrate-incoming's reply, as QEMU's
        does: libvirt checks the incoming job as soon as the reply arrives and fails a restore that has
        not started ("job 'start' is not active")."""
        check_uri(uri)
        self.error = None
        self._set_status("setup")
        self._task = asyncio.ensure_future(self.accept(uri))

    async def accept(self, uri: str) -> None:
        """Load a stream into this (inmigrate) machine: all of it, or (status failed) none of it."""
        machine = self.machine
        self._started = time.monotonic()
        self.error = None
        self._set_status("active")
        from qmpd.migration.description import parse_description  # loaded by a migration, not by every start
        from qmpd.migration.state import check_ram, load_ram, restore

        try:
            loop = asyncio.get_running_loop()
            meta, ram = await loop.run_in_executor(None, self._read_stream, uri)
            saved = parse_description(machine, meta)
            check_ram(machine, ram)
            restore(machine, saved)
            self.ram_loaded = True
            await loop.run_in_executor(None, load_ram, machine, ram)
        except (StateFormatError, GenericError, OSError, InterruptedError) as exc:  # StateError is a GenericError
            self._incoming_failed(uri, str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc))
            return
        except Exception as exc:  # a qmpd bug: logged with its traceback; the machine stays a target
            log.exception("migration.incoming_failed_unexpectedly", uri=uri)
            self._incoming_failed(uri, f"internal error: {exc!r}")
            return
        self._times = {"total-time": int((time.monotonic() - self._started) * 1000)}
        self._set_status("completed")
        log.info("migration.incoming_completed", uri=uri, ms=self._times["total-time"])
        machine.finish_incoming(saved_runstate=saved.runstate)

    def _incoming_failed(self, uri: str, error: str) -> None:
        self.error = error
        log.error("migration.incoming_failed", uri=uri, error=error)
        self._set_status("failed")

    def _read_stream(self, uri: str) -> tuple[dict[str, Any], RAMImage]:
        """In a worker thread: the whole stream, read no further than this machine can hold."""
        scheme, target = uri.split(":", 1)
        limit = self.machine.ram.size
        if scheme == "file":
            with open_regular_file(target) as source:
                return read_bounded(source, target, limit)
        if scheme == "fd":  # an inherited descriptor, read from its current position, unbuffered: no further
            with open(incoming_fd(target), "rb", buffering=0, closefd=True) as raw:
                return read_bounded(raw, uri, limit)
        with self._command(target, stdout=subprocess.PIPE) as process:
            assert process.stdout is not None
            return read_bounded(process.stdout, target, limit)  # type: ignore[arg-type]  # a BufferedReader

    # -- queries -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``query-migrate``: nothing before the first migration, then its status and figures."""
        if self.status == "none":
            return {}
        info: dict[str, Any] = {"status": self.status}
        if self.status == "completed" and self._ram_bytes:
            info.update(self._times)
            info["ram"] = self._ram_stats()
        elif self.status == "completed":
            info.update(self._times)
        if self.status == "failed" and self.error:
            info["error-desc"] = self.error
        return info

    def _ram_stats(self) -> dict[str, int | float]:
        """QEMU's MigrationStats (every member is required) for qmpd's one pass over RAM, written whole."""
        pages = self._ram_bytes // PAGE_SIZE
        seconds = max(self._times.get("total-time", 0), 1) / 1000
        return {
            "transferred": self._transferred, "remaining": 0, "total": self._ram_bytes, "duplicate": 0,
            "skipped": 0, "normal": pages, "normal-bytes": pages * PAGE_SIZE, "dirty-pages-rate": 0,
            "mbps": round(self._transferred * 8 / 1e6 / seconds, 6), "dirty-sync-count": 1, "postcopy-requests": 0,
            "page-size": PAGE_SIZE, "multifd-bytes": 0, "pages-per-second": int(pages / seconds),
            "precopy-bytes": self._transferred, "downtime-bytes": 0, "postcopy-bytes": 0,
            "dirty-sync-missed-zero-copy": 0,
        }  # fmt: skip

    @property
    def _events(self) -> bool:
        return bool(self.machine.migration_capabilities.get("events"))

    def _set_status(self, status: str) -> None:
        self.status = status
        if self._events:
            self.machine.events.emit("MIGRATION", {"status": status})
