"""The machine: its run state and the life-cycle operations QMP drives.

``stop``, ``cont``, ``system_reset``, ``system_powerdown`` and shutdown follow
QEMU's softmmu/cpus.c and runstate.c: which states they act in, which events
they raise, and where the machine ends up (a reset of a stopped machine
leaves it in ``prelaunch``, as QEMU's main loop does).
"""

from __future__ import annotations

import structlog

from qmpd.config import MachineConfig
from qmpd.errors import GenericError
from qmpd.events import EventBus
from qmpd.machine.runstate import TRANSITIONS, InvalidTransition, RunState, ShutdownCause

log = structlog.get_logger(__name__)


class Machine:
    """One emulated machine, as its monitors see it."""

    def __init__(self, config: MachineConfig, events: EventBus) -> None:
        self.config = config
        self.events = events
        self._runstate = RunState.PRELAUNCH
        #: Set by ``cont`` during incoming migration: start when it completes.
        self.autostart = not config.start_paused

    @property
    def runstate(self) -> RunState:
        """The current QAPI run state."""
        return self._runstate

    @property
    def running(self) -> bool:
        """True when the guest is executing."""
        return self._runstate is RunState.RUNNING

    def set_runstate(self, new: RunState) -> None:
        """Change state; undeclared transitions are qmpd bugs."""
        old = self._runstate
        if old is new:
            return
        if (old, new) not in TRANSITIONS:
            raise InvalidTransition(f"{old.value} -> {new.value}")
        self._runstate = new
        log.info("machine.runstate", old=old.value, new=new.value)

    def cpu_indexes(self) -> tuple[int, ...]:
        """Indexes of the CPUs that exist (the machine core adds them)."""
        return ()

    @property
    def needs_reset(self) -> bool:
        """QEMU's runstate_needs_reset: only a reset leaves these states."""
        return self._runstate in (RunState.INTERNAL_ERROR, RunState.SHUTDOWN)

    def power_on(self) -> None:
        """End of machine creation: start unless -S asked to wait (RESUME is sent then)."""
        if not self.config.start_paused:
            self.vm_start()

    def vm_start(self) -> None:
        """Start (or resume) the guest; RESUME is sent before the state changes."""
        if self.running:
            return
        self.events.emit("RESUME")
        self.set_runstate(RunState.RUNNING)

    def stop(self) -> None:
        """QMP ``stop``: pause a running guest (no-op otherwise)."""
        if self._runstate is RunState.INMIGRATE:
            self.autostart = False
            return
        self.vm_stop(RunState.PAUSED)

    def vm_stop(self, state: RunState) -> None:
        """Stop the vCPUs and enter ``state``; STOP is sent after they stopped."""
        if not self.running:
            return
        self.set_runstate(state)
        self.events.emit("STOP")

    def cont(self) -> None:
        """QMP ``cont``, with QEMU's refusals."""
        if self.needs_reset:
            raise GenericError("Resetting the Virtual Machine is required")
        if self._runstate is RunState.SUSPENDED:
            return
        if self._runstate is RunState.FINISH_MIGRATE:
            raise GenericError("Migration is not finalized yet")
        if self._runstate is RunState.INMIGRATE:
            self.autostart = True
            return
        self.vm_start()

    def system_reset(self, cause: ShutdownCause) -> None:
        """Reset the machine; a machine that was not running ends in ``prelaunch``."""
        self.reset_devices()
        self.events.emit("RESET", {"guest": cause.by_guest, "reason": cause.value})
        if self._runstate not in (RunState.RUNNING, RunState.INMIGRATE, RunState.FINISH_MIGRATE):
            self.set_runstate(RunState.PRELAUNCH)

    def reset_devices(self) -> None:
        """Put every device and vCPU back into its power-on state."""

    def system_powerdown(self) -> None:
        """Press the ACPI power button: POWERDOWN, then it is up to the guest."""
        self.events.emit("POWERDOWN")

    def shutdown(self, cause: ShutdownCause) -> None:
        """The machine is going away (quit, a signal): SHUTDOWN to every monitor."""
        self.events.emit("SHUTDOWN", {"guest": cause.by_guest, "reason": cause.value})
