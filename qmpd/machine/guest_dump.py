"""``dump-guest-memory``'s one dump at a time: its run, its progress (``query-dump``) and its end event.

As QEMU 7.2 does (dump/dump.c): a running guest is stopped first (STOP, run
state ``save-vm``) and resumed at the very end (RESUME), also when the dump
fails; every vCPU's registers are read once it is stopped; ``DUMP_COMPLETED``
is sent when the file is done, well or not, before the guest resumes, and
before the reply of a dump that is not detached.  While a dump is active,
``stop``, ``cont`` and ``system_reset`` are refused with QEMU's text (QEMU
aborts on a reset during a dump; qmpd refuses it instead).

The file is written from a worker thread, 1 MiB of RAM at a time (RAM never
touched is written as zeros without being read); ``completed``
counts RAM bytes written, as QEMU's does, and is read from the event loop
(an int assignment is atomic).  A machine that closes during a dump makes
the writer stop at its next chunk.
"""

from __future__ import annotations

import asyncio
import enum
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from qmpd.errors import GenericError
from qmpd.log import get_logger
from qmpd.machine.dump_file import DUMP_CHUNK, stream_to
from qmpd.vcpu.snapshot import CPUSnapshot

if TYPE_CHECKING:
    from qmpd.machine.elf_core import MemoryRange
    from qmpd.machine.machine import Machine

log = get_logger(__name__)

#: Runs blocking work off the event loop (CommandContext.in_worker, or asyncio.to_thread).
Worker = Callable[[Callable[[], None]], Awaitable[None]]
#: QEMU's refusal while a dump runs (dump-guest-memory, stop, cont).
IN_PROCESS = "There is a dump in process, please wait."
#: QEMU's migration blocker while a dump runs (migrate is refused with it).
MIGRATION_BLOCKED = "Live migration disabled: dump-guest-memory in progress"
#: What QEMU 7.2 answers for win-dmp on a machine without a vmcoreinfo device (qmpd never has one).
WIN_DMP_ERROR = "win-dump: invalid vmcoreinfo note size"


class DumpStatus(enum.Enum):
    """QAPI ``DumpStatus``."""

    NONE = "none"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"


class _Cancelled(Exception):
    """The machine closed while its dump was being written."""


class GuestDump:
    """The machine's dump state (QEMU's ``dump_state_global``)."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        #: query-dump's status, total and completed.
        self.status = DumpStatus.NONE
        self.total = 0
        self.completed = 0
        self._stop = threading.Event()
        self._error_text = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """Whether a dump is being prepared or written."""
        return self.status is DumpStatus.ACTIVE

    def result(self) -> dict[str, Any]:
        """QAPI ``DumpQueryResult``."""
        return {"status": self.status.value, "completed": self.completed, "total": self.total}

    def close(self) -> None:
        """The machine is going away: a writer still running stops at its next chunk."""
        self._stop.set()

    async def run(
        self,
        fd: int,
        *,
        dump_format: str,
        begin: int | None,
        length: int | None,
        detach: bool,
        worker: Worker,
    ) -> None:
        """Dump to ``fd`` (ours from now on: closed at the end); returns at once when detached.

        The writing runs in a task of its own, so a dump that is not detached
        still completes (and resumes the guest) if its caller goes away.
        """
        self.status, self.total, self.completed = DumpStatus.ACTIVE, 0, 0
        self._stop = threading.Event()
        resume = await self._machine.pause_for_dump()
        try:
            ranges = self._plan(begin, length)
            cpus = [(index, await self._machine.cpu_snapshot(index)) for index in self._machine.cpu_slots.cpu_indexes()]
        except BaseException:
            self._finish_early(fd, resume)
            raise
        task = asyncio.ensure_future(self._write(fd, dump_format, ranges, cpus, resume, worker))
        task.add_done_callback(_retrieve)
        self._task = task
        if not detach:
            await asyncio.shield(task)

    def _plan(self, begin: int | None, length: int | None) -> list[MemoryRange]:
        # The ELF layout loads with the first dump, not at every start.
        from qmpd.machine.elf_core import MemoryRange, select_ranges

        ranges = select_ranges([MemoryRange(0, self._machine.ram.size)], begin, length)
        self.total = sum(r.length for r in ranges)
        return ranges

    def _finish_early(self, fd: int, resume: bool) -> None:
        """A dump refused after the guest was stopped: QEMU's dump_init cleanup (no DUMP_COMPLETED)."""
        os.close(fd)
        self.status = DumpStatus.FAILED
        if resume:
            self._machine.resume_after_dump()

    async def _write(
        self,
        fd: int,
        dump_format: str,
        ranges: Sequence[MemoryRange],
        cpus: Sequence[tuple[int, CPUSnapshot]],
        resume: bool,
        worker: Worker,
    ) -> None:
        """Write the file, then DUMP_COMPLETED and the resume; the error of a failed dump is raised last."""
        error: str | None = None
        try:
            await worker(lambda: self._stream(fd, dump_format, cpus, ranges))
        except GenericError as exc:
            error = exc.desc
        except asyncio.CancelledError:  # the daemon is exiting: stop the writer, resume nothing
            self._stop.set()
            self.status = DumpStatus.FAILED
            raise
        except Exception:
            log.exception("dump.failed")
            error = "dump: failed to save memory"
        self.status = DumpStatus.FAILED if error is not None else DumpStatus.COMPLETED
        data: dict[str, Any] = {"result": self.result()}
        if error is not None:
            data["error"] = error
        self._machine.events.emit("DUMP_COMPLETED", data)
        if resume:
            self._machine.resume_after_dump()
        if error is not None:
            raise GenericError(error)

    def _stream(
        self, fd: int, dump_format: str, cpus: Sequence[tuple[int, CPUSnapshot]], ranges: Sequence[MemoryRange]
    ) -> None:
        """Write the file and close ``fd`` (in a worker thread); an OSError becomes QEMU's text for what failed."""
        from qmpd.machine.elf_core import core_head

        self._error_text = "dump: failed to write elf header"
        try:
            if dump_format == "win-dmp":
                raise GenericError(WIN_DMP_ERROR)
            stream_to(fd, self._pieces(core_head(cpus, ranges), ranges))
        except OSError as exc:
            raise GenericError(f"{self._error_text}: {exc.strerror}") from None
        except _Cancelled:
            raise GenericError("dump: the machine is shutting down") from None
        finally:
            os.close(fd)

    def _pieces(self, head: bytes, ranges: Sequence[MemoryRange]) -> Iterator[bytes]:
        """The file's parts; RAM the guest never touched is written as zeros without reading it,
        which would make the kernel allocate it (a 1 GiB guest fresh from boot added 1 GiB of RSS)."""
        from qmpd.machine.elf_core import SHSTRTAB

        ram = self._machine.ram
        zeros = bytes(DUMP_CHUNK)
        yield head
        self._error_text = "dump: failed to save memory"
        touched = ram.touched_chunks(DUMP_CHUNK)  # the vCPUs are stopped: nothing new gets touched
        for block in ranges:
            for offset in range(0, block.length, DUMP_CHUNK):
                if self._stop.is_set():
                    raise _Cancelled
                address, size = block.start + offset, min(DUMP_CHUNK, block.length - offset)
                if any(touched[address // DUMP_CHUNK : (address + size - 1) // DUMP_CHUNK + 1]):
                    yield ram.read(address, size)
                else:
                    yield zeros[:size]
                self.completed += size
        self._error_text = "dump: failed to write string table"
        yield SHSTRTAB


def _retrieve(task: asyncio.Task[None]) -> None:
    """A detached dump's error went out in DUMP_COMPLETED: nobody awaits the task."""
    if not task.cancelled():
        task.exception()
