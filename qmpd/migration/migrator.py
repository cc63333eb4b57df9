"""migrate / query-migrate / migrate_cancel / -incoming, with QEMU's states, events and run states.

Outgoing (``migrate uri=file:PATH`` or ``exec:CMD``): status setup -> active (MIGRATION_PASS 1), the
vCPUs stop (run state finish-migrate, STOP), the state is captured and written (MIGRATION_PASS 2),
status completed, run state postmigrate.  A file is written beside its final name and renamed into
place, so a cancelled or failed migration leaves no partial file.  Incoming (``-incoming file:PATH``,
``exec:CMD``, or ``defer`` + ``migrate-incoming``): the machine waits in ``inmigrate``; the whole
stream is read and checked before anything is applied, so a bad stream leaves the machine as it was
(still ``inmigrate``), with status failed.  MIGRATION events are sent when the ``events`` capability
is on, as in QEMU.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any

import structlog

from qmpd.errors import GenericError
from qmpd.machine.runstate import RunState
from qmpd.migration.state import capture, check_compatible, load_ram, restore
from qmpd.migration.stream import CHUNK, RAMImage, StateFormatError, parse_state, write_state

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

log = structlog.get_logger(__name__)

_SCHEMES = ("file:", "exec:")


def check_uri(uri: str) -> None:
    if not uri.startswith(_SCHEMES) or len(uri.split(":", 1)[1]) == 0:
        raise GenericError("Parameter 'uri' expects a valid migration protocol")


class Migrator:
    """The machine's one migration (QEMU keeps one MigrationState per process)."""

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

    # -- outgoing ------------------------------------------------------------------------

    def start(self, uri: str) -> None:
        """``migrate``: checks, then the migration runs on (as QEMU's migration thread does)."""
        if self.status in ("setup", "active", "cancelling"):
            raise GenericError("There's a migration process in progress")
        if self.machine.runstate is RunState.INMIGRATE:
            raise GenericError("Guest is waiting for an incoming migration")
        if self.machine.runstate is RunState.POSTMIGRATE:
            raise GenericError("Can't migrate the vm that was paused due to previous migration")
        check_uri(uri)
        self.error = None
        self._cancel = False
        self._started = time.monotonic()
        self._times = {}
        self._set_status("setup")
        self._task = asyncio.ensure_future(self._outgoing(uri))

    def cancel(self) -> None:
        """``migrate_cancel``: stop an outgoing migration; the guest runs on as before."""
        if self.status in ("setup", "active"):
            self._cancel = True
            self._set_status("cancelling")

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
            meta = await capture(machine)
            meta["runstate"] = before.value
            ram = machine.board.ram.view()
            self._touched = machine.board.ram.touched_chunks(CHUNK)
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
            self.error = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
            log.warning("migration.failed", uri=uri, error=self.error)
            self._set_status("failed")
            self._resume(was_running)

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
            temporary = f"{target}.{os.getpid()}.part"
            try:
                with open(temporary, "wb") as out:
                    size = write_state(out, meta, ram, lambda: self._cancel, self._touched)
                    out.flush()
                    os.fsync(out.fileno())
                if self._cancel:
                    raise InterruptedError("cancelled")
                os.replace(temporary, target)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
            return size
        with subprocess.Popen(["/bin/sh", "-c", target], stdin=subprocess.PIPE) as process:
            assert process.stdin is not None
            try:
                size = write_state(process.stdin, meta, ram, lambda: self._cancel, self._touched)  # type: ignore[arg-type]
            finally:
                process.stdin.close()
            status = process.wait()
        if self._cancel:
            raise InterruptedError("cancelled")
        if status != 0:
            raise GenericError(f"migration command '{target}' exited with status {status}")
        return size

    # -- incoming ------------------------------------------------------------------------

    def begin_accept(self, uri: str) -> None:
        """Start loading an incoming stream (``-incoming URI`` at start-up, or ``migrate-incoming``)."""
        check_uri(uri)
        self._task = asyncio.ensure_future(self.accept(uri))

    async def accept(self, uri: str) -> None:
        """Load a stream into this (inmigrate) machine; on any problem nothing is applied."""
        machine = self.machine
        self._started = time.monotonic()
        self.error = None
        self._set_status("active")
        try:
            loop = asyncio.get_running_loop()
            meta, ram = await loop.run_in_executor(None, _read_stream, uri)
            check_compatible(machine, meta)
            await loop.run_in_executor(None, load_ram, machine, ram)
        except (StateFormatError, GenericError, OSError) as exc:
            self.error = str(exc)
            log.warning("migration.incoming_failed", uri=uri, error=self.error)
            self._set_status("failed")
            return
        restore(machine, meta)
        self._times = {"total-time": int((time.monotonic() - self._started) * 1000)}
        self._set_status("completed")
        log.info("migration.incoming_completed", uri=uri, ms=self._times["total-time"])
        machine.finish_incoming(saved_runstate=meta["runstate"])

    # -- queries -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``query-migrate``: nothing before the first migration, then its status and figures."""
        if self.status == "none":
            return {}
        info: dict[str, Any] = {"status": self.status}
        if self.status == "completed" and self._ram_bytes:
            info.update(self._times)
            info["ram"] = {"total": self._ram_bytes, "transferred": self._transferred, "remaining": 0}
        elif self.status == "completed":
            info.update(self._times)
        if self.status == "failed" and self.error:
            info["error-desc"] = self.error
        return info

    @property
    def _events(self) -> bool:
        return bool(self.machine.migration_capabilities.get("events"))

    def _set_status(self, status: str) -> None:
        self.status = status
        if self._events:
            self.machine.events.emit("MIGRATION", {"status": status})


def _read_stream(uri: str) -> tuple[dict[str, Any], RAMImage]:
    scheme, target = uri.split(":", 1)
    if scheme == "file":
        with open(target, "rb") as source:
            data = source.read()
    else:
        result = subprocess.run(["/bin/sh", "-c", target], stdout=subprocess.PIPE, check=False)
        data = result.stdout
    return parse_state(memoryview(data), target)
