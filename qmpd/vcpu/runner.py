"""A vCPU's thread and its states.

States: powered-off (waiting for INIT+STARTUP), running, halted (HLT, waiting
for an IPI, an NMI or a device event), crashed (a triple fault, an emulator error or a
hook that raised; only a reset or INIT+STARTUP restarts it), exited.  On top of that the
machine may pause every vCPU.  All changes go through one Condition; other
threads only set flags, ask the engine to stop at its next block boundary,
and notify.  The engine is created in this thread when the CPU first starts
(so powered-off CPUs cost no Unicorn instance) and closed by this thread.
"""

# Annotations are not postponed here: its records are made at every start (tests/unit/test_startup_imports.py).

import _thread
import enum
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qmpd.log import get_logger
from qmpd.vcpu.threadname import name_thread
from qmpd.vmstate import U64, boolean, fields, integer, invalid, optional_integer, optional_string, string

if TYPE_CHECKING:  # Unicorn is loaded by the thread that makes the first engine, not at start-up
    from qmpd.vcpu.engine import EngineFactory, VCPUEngine
    from qmpd.vcpu.snapshot import CPUSnapshot

log = get_logger(__name__)


class VCPUState(enum.Enum):
    """What a vCPU is doing."""

    POWERED_OFF = "powered-off"
    RUNNING = "running"
    HALTED = "halted"
    CRASHED = "crashed"
    EXITED = "exited"


class Entry:
    """Where and how a (re)started vCPU begins: qmpd's boot protocol registers."""

    __slots__ = ("rcx", "rdi", "rdx", "rip", "rsi", "rsp")

    def __init__(self, rip: int, rsp: int, rdi: int, rsi: int, rdx: int = 0, rcx: int = 0) -> None:
        self.rip = rip
        self.rsp = rsp
        #: cpu index, APIC ID, CPU hot-plug block base, GPE0 base.
        self.rdi = rdi
        self.rsi = rsi
        self.rdx = rdx
        self.rcx = rcx


class RunnerState:
    """A saved vCPU's run state, checked (its registers are a section of their own: CPUSnapshot)."""

    __slots__ = ("engine", "fault", "kicked", "nmi", "nmi_return", "rip", "state", "wait_sipi")

    def __init__(
        self,
        state: VCPUState,
        wait_sipi: bool,
        rip: int,
        kicked: bool,
        fault: str | None,
        engine: bool,
        nmi: bool = False,
        nmi_return: int | None = None,
    ) -> None:
        self.state = state
        self.wait_sipi = wait_sipi
        self.rip = rip
        self.kicked = kicked
        self.fault = fault
        #: It had an engine: the restored vCPU gets one, with the saved registers (load_registers).
        self.engine = engine
        #: An NMI was waiting to be taken (version 2; a version 1 state has none).
        self.nmi = nmi
        #: NMIs were blocked until the guest got back to this address (an NMI handler had not returned).
        self.nmi_return = nmi_return


#: The run states a saved vCPU may have (a thread that had ended is not saved).
#: The engine's module: importing it loads Unicorn.
_ENGINE_MODULE = "qmpd.vcpu.engine"
_SAVED_STATES = {state.value: state for state in VCPUState if state is not VCPUState.EXITED}


class Scheduler:
    """thread=single: one vCPU runs at a time, in turn (a fair ticket lock)."""

    #: Blocks a vCPU runs before it yields its turn.
    SLICE_BLOCKS = 200_000

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def acquire(self) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket:
                self._cond.wait()

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class VCPURunner:
    """One vCPU thread (named "CPU N/TCG" like QEMU's with debug-threads=on)."""

    #: Its section of a saved CPU (qmpd.vmstate).
    state_name = "runner"
    state_version = 2

    def __init__(
        self,
        index: int,
        apic_id: int,
        make_engine: "EngineFactory",
        *,
        on_crash: Callable[[int, str], None],
        on_triple_fault: Callable[[int, str], None] = lambda index, reason: None,
        on_internal_error: Callable[[int, str], None] = lambda index, reason: None,
        scheduler: Scheduler | None = None,
        nice: int = 0,
    ) -> None:
        self.index = index
        self._nice = nice
        self.apic_id = apic_id
        self._make_engine = make_engine
        self._on_crash = on_crash
        self._on_triple_fault = on_triple_fault
        self._on_internal_error = on_internal_error
        self._scheduler = scheduler
        self._cond = threading.Condition()
        self.state = VCPUState.POWERED_OFF
        self.paused = True
        self._in_emu = False
        self._want_exit = False
        self._kicked = False
        #: An NMI waits to be taken at the next start of the engine (one at most, as the pin latches it).
        self._nmi = False
        #: A restored vCPU's blocked NMIs (engine.nmi_return), for the engine load_registers builds.
        self._nmi_return: int | None = None
        self._wait_sipi = True
        self._pending_entry: Entry | None = None
        self._pending_init = False
        self._pending_registers: CPUSnapshot | None = None
        self._engine: VCPUEngine | None = None
        self._rip = 0
        self._stopped_waiters: list[Callable[[], None]] = []
        self._jobs: list[Callable[[VCPUEngine | None], None]] = []
        self.fault: str | None = None
        self.name = f"CPU {index}/TCG"
        #: Set by the thread once its ids are known; then when it has finished.
        self._started = threading.Event()
        self._finished = threading.Event()
        self._native_id = 0
        self._ident = 0

    # -- life ------------------------------------------------------------------------

    def start_thread(self) -> None:
        """Start the thread without waiting for it to be scheduled (a plug should not wait for that).

        A bare ``_thread`` thread: threading.Thread.start() blocks until the new thread has run,
        which costs a scheduler round trip per hot-plugged CPU.
        """
        _thread.start_new_thread(self._bootstrap, ())

    @property
    def native_id(self) -> int:
        """Kernel thread id (query-cpus-fast's thread-id); waits the moment the thread needs to start."""
        self._started.wait()
        return self._native_id

    @property
    def alive(self) -> bool:
        """False once the thread has ended (after exit(), or if it died)."""
        return not self._finished.is_set()

    @property
    def instructions_executed(self) -> int | None:
        """Guest instructions this vCPU ran (0 before it first started; None if not counted).

        Read from any thread: a counter the vCPU thread increments, read whole.
        """
        from qmpd.vcpu import native

        if not native.available:
            return None
        engine = self._engine
        return engine.instructions_executed if engine is not None else 0

    def exit(self) -> None:
        """Any thread: end this vCPU; returns after the thread has finished."""
        with self._cond:
            self._want_exit = True
            self._stop_engine()
            self._cond.notify_all()
        if threading.get_ident() != self._ident:
            self._finished.wait()

    # -- requests from other threads (all under the condition) -----------------------------

    def power_on(self, entry: Entry) -> None:
        """Start running at ``entry`` (the boot CPU at machine start)."""
        with self._cond:
            self._pending_entry = entry
            self._wait_sipi = False
            self.fault = None
            self._cond.notify_all()

    def init(self) -> None:
        """INIT IPI: stop whatever it does and wait for STARTUP."""
        with self._cond:
            self._pending_init = True
            self._wait_sipi = True
            self._pending_entry = None
            self._stop_engine()
            self._cond.notify_all()

    def startup(self, entry: Entry) -> bool:
        """STARTUP IPI: begin at ``entry`` if waiting for it (ignored otherwise, as on hardware)."""
        with self._cond:
            if not self._wait_sipi:
                return False
            self._pending_entry = entry
            self._wait_sipi = False
            self._cond.notify_all()
            return True

    def kick(self) -> None:
        """An interrupt or device event: wake from HLT."""
        with self._cond:
            self._kicked = True
            self._cond.notify_all()

    def nmi(self) -> bool:
        """An NMI: taken through the guest's IDT at the next block boundary (waking it from HLT).

        A CPU that is off, waiting for STARTUP or shut down ignores it; returns whether it was taken.
        """
        with self._cond:
            engine = self._engine
            if self._wait_sipi or engine is None or self.state in (VCPUState.POWERED_OFF, VCPUState.CRASHED):
                return False
            self._nmi = True
            engine.nmi_waiting = True  # if its handler is still running, the engine stops when it returns
            if not engine.nmi_blocked:
                self._stop_engine()
            self._cond.notify_all()
            return True

    def pause(self, on_stopped: Callable[[], None]) -> bool:
        """Machine pause; returns True if ``on_stopped`` will be called (from this vCPU's thread)."""
        with self._cond:
            self.paused = True
            if self._in_emu:
                self._stopped_waiters.append(on_stopped)
                self._stop_engine()
                return True
            return False

    def resume(self) -> None:
        """Machine resume."""
        with self._cond:
            self.paused = False
            self._cond.notify_all()

    def reset(self, entry: Entry | None) -> None:
        """While paused: power off (or restart at ``entry``), forgetting any fault or HLT."""
        with self._cond:
            assert self.paused and not self._in_emu
            self._pending_entry = entry
            self._wait_sipi = entry is None
            self._pending_init = False
            self.fault = None
            self._kicked = False
            self._nmi = False
            self._nmi_return = None
            self.state = VCPUState.POWERED_OFF
            self._cond.notify_all()

    def save_state(self) -> dict[str, Any]:
        """The run state, besides the registers (the machine is paused)."""
        with self._cond:
            return {
                "state": self.state.value,
                "wait_sipi": self._wait_sipi,
                "rip": self._rip,
                "kicked": self._kicked,
                "fault": self.fault,
                "engine": self._engine is not None,
                "nmi": self._nmi,
                "nmi_return": self._engine.nmi_return if self._engine is not None else None,
            }

    @staticmethod
    def check_state(state: Any, version: int, where: str = "runner") -> RunnerState:
        """Pure, and static: a saved CPU is checked before the target has plugged it."""
        saved = fields(state, where)
        name = string(saved, "state", where)
        if name not in _SAVED_STATES:
            raise invalid(f"{where}.state", f"unknown vCPU state {name!r}")
        fault = optional_string(saved, "fault", where)
        return RunnerState(
            state=_SAVED_STATES[name],
            wait_sipi=boolean(saved, "wait_sipi", where),
            rip=integer(saved, "rip", U64, where),
            kicked=boolean(saved, "kicked", where),
            fault=fault,
            engine=boolean(saved, "engine", where),
            nmi=boolean(saved, "nmi", where) if version >= 2 else False,
            nmi_return=optional_integer(saved, "nmi_return", U64, where) if version >= 2 else None,
        )

    def load_state(self, checked: RunnerState) -> None:
        """While paused: become the saved vCPU (without an engine until load_registers gives it one)."""
        with self._cond:
            assert self.paused and not self._in_emu
            self.state = checked.state
            self._wait_sipi = checked.wait_sipi
            self._rip = checked.rip
            self._kicked = checked.kicked
            self.fault = checked.fault
            self._nmi = checked.nmi
            self._nmi_return = checked.nmi_return
            self._pending_entry = None
            self._pending_init = False
            self._pending_registers = None
            self._cond.notify_all()

    def load_registers(self, registers: "CPUSnapshot") -> None:
        """While paused, after load_state of a vCPU saved with an engine: its thread builds one holding
        ``registers``."""
        with self._cond:
            assert self.paused and not self._in_emu
            self._pending_registers = registers
            self._cond.notify_all()

    def run_in_thread(self, job: "Callable[[VCPUEngine | None], None]") -> bool:
        """Run ``job(engine)`` in this vCPU's thread while it is not executing (e.g. read registers).

        Returns False (and never runs the job) if the thread has already ended.
        """
        with self._cond:
            if self._want_exit or self.state is VCPUState.EXITED:
                return False
            self._jobs.append(job)
            self._stop_engine()
            self._cond.notify_all()
            return True

    def _stop_engine(self) -> None:
        if self._in_emu and self._engine is not None:
            self._engine.request_stop()

    # -- the thread ------------------------------------------------------------------------

    def _runnable(self) -> bool:
        if self.paused or self._wait_sipi:
            return False
        if self._pending_entry is not None:
            return True
        if self._engine is None or self.state in (VCPUState.CRASHED, VCPUState.POWERED_OFF):
            return False
        if self.state is VCPUState.HALTED:
            return self._kicked or (self._nmi and not self._engine.nmi_blocked)
        return True

    def _bootstrap(self) -> None:
        self._native_id = threading.get_native_id()
        self._ident = threading.get_ident()
        name_thread(self.name)
        if self._nice:
            # Below the event loop's priority: a busy guest must not delay monitor replies.
            os.setpriority(os.PRIO_PROCESS, self._native_id, self._nice)
        self._started.set()
        try:
            self._main()
        except BaseException:
            log.exception("vcpu.thread_failed", cpu=self.index)
        finally:
            self._finished.set()

    def _main(self) -> None:
        try:
            self._loop()
        finally:
            with self._cond:
                self.state = VCPUState.EXITED
                waiters, self._stopped_waiters = self._stopped_waiters, []
                self._cond.notify_all()
            for waiter in waiters:
                waiter()
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._run_jobs()
                    if self._want_exit:
                        return
                    if self._pending_registers is not None:
                        if _ENGINE_MODULE not in sys.modules:
                            self._load_engine_code_unlocked()
                            continue  # what was asked meanwhile is looked at again
                        self._load_registers(self._pending_registers)
                        self._pending_registers = None
                    if self._pending_init:
                        self._pending_init = False
                        self.state = VCPUState.POWERED_OFF
                    if self._runnable():
                        break
                    self._cond.wait()
                entry, self._pending_entry = self._pending_entry, None
                if entry is not None or self.state is VCPUState.HALTED:
                    self._kicked = False  # a fresh start forgets it; a halted CPU has just used it
                if entry is not None:
                    self._nmi = False  # a fresh start forgets it too
                nmi = self._nmi and self._engine is not None and not self._engine.nmi_blocked
                if nmi:
                    self._nmi = False
                self.state = VCPUState.RUNNING
                self._in_emu = True
            engine = self._engine
            if entry is not None:
                if engine is not None:
                    engine.close()
                engine = self._engine = self._make_engine()
                engine.set_entry(entry)
                self._rip = entry.rip
            assert engine is not None
            from qmpd.vcpu.snapshot import Exit  # loaded with the engine's code; a start never needs it (~1 ms)

            engine.clear_stop()
            with self._cond:
                # A stop requested while the engine did not exist yet must not be lost.
                if self.paused or self._want_exit or self._pending_init or self._jobs:
                    engine.request_stop()
                engine.nmi_waiting = self._nmi
                if self._nmi and not engine.nmi_blocked:
                    engine.request_stop()  # an NMI came after the decision above: take it next time round
            if self._scheduler is not None:
                self._scheduler.acquire()
            try:
                result = engine.run(self._rip, Scheduler.SLICE_BLOCKS if self._scheduler else 0, nmi=nmi)
            finally:
                if self._scheduler is not None:
                    self._scheduler.release()
            self._rip = result.rip
            with self._cond:
                self._in_emu = False
                if result.exit in (Exit.FAULT, Exit.TRIPLE_FAULT, Exit.INTERNAL_ERROR):
                    # Shut down until a reset (or INIT + STARTUP) brings it back.
                    self.state = VCPUState.CRASHED
                    self.fault = result.error
                elif result.exit is Exit.HALTED:
                    if self._kicked:
                        self._kicked = False  # woken before it halted: the HLT ends at once, as with a pending IRQ
                    else:
                        self.state = VCPUState.HALTED
                waiters, self._stopped_waiters = self._stopped_waiters, []
                self._cond.notify_all()
            if result.exit is Exit.FAULT:
                log.warning("vcpu.fault", cpu=self.index, rip=hex(result.rip), error=result.error)
                self._on_crash(self.index, result.error or "fault")
            elif result.exit is Exit.TRIPLE_FAULT:
                log.warning("vcpu.triple_fault", cpu=self.index, rip=hex(result.rip), error=result.error)
                self._on_triple_fault(self.index, result.error or "triple fault")
            elif result.exit is Exit.INTERNAL_ERROR:
                failure = result.failure
                assert failure is not None
                log.error(
                    "vcpu.internal_error",
                    cpu=self.index,
                    rip=hex(result.rip),
                    device=failure.device,
                    access=failure.access,
                    exc_info=failure,
                )
                self._on_internal_error(self.index, result.error or "internal error")
            for waiter in waiters:
                waiter()

    def _load_engine_code_unlocked(self) -> None:
        """Load Unicorn (tens of milliseconds) with this vCPU's lock released: the event loop thread
        takes the lock to resume, pause or query the vCPU and must not wait for the import."""
        self._cond.release()
        try:
            import qmpd.vcpu.engine  # noqa: F401
        finally:
            self._cond.acquire()

    def _load_registers(self, registers: "CPUSnapshot") -> None:
        """In this thread: a new engine holding ``registers`` (a restored vCPU)."""
        if self._engine is not None:
            self._engine.close()
        self._engine = self._make_engine()
        self._engine.restore_registers(registers)
        if self._nmi_return is not None:
            self._engine.block_nmis_until(self._nmi_return)

    def _run_jobs(self) -> None:
        jobs, self._jobs = self._jobs, []
        for job in jobs:
            try:
                job(self._engine)
            except Exception:
                log.exception("vcpu.job_failed", cpu=self.index)

    @property
    def rip(self) -> int:
        """Where the vCPU resumes (meaningful while it is not running)."""
        return self._rip
