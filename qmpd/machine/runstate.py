"""Run states and the transitions QEMU allows between them.

The enum values are QAPI's ``RunState`` strings.  The transition table is a
subset of QEMU's ``runstate_transitions_def`` (softmmu/runstate.c) for the
states qmpd can reach; an undeclared transition is a bug in qmpd and raises.
"""

from __future__ import annotations

import enum


class RunState(enum.Enum):
    """QAPI ``RunState``."""

    DEBUG = "debug"
    INMIGRATE = "inmigrate"
    INTERNAL_ERROR = "internal-error"
    IO_ERROR = "io-error"
    PAUSED = "paused"
    POSTMIGRATE = "postmigrate"
    PRELAUNCH = "prelaunch"
    FINISH_MIGRATE = "finish-migrate"
    RESTORE_VM = "restore-vm"
    RUNNING = "running"
    SAVE_VM = "save-vm"
    SHUTDOWN = "shutdown"
    SUSPENDED = "suspended"
    WATCHDOG = "watchdog"
    GUEST_PANICKED = "guest-panicked"
    COLO = "colo"


class ShutdownCause(enum.Enum):
    """QAPI ``ShutdownCause``: why a SHUTDOWN or RESET happened."""

    NONE = "none"
    HOST_ERROR = "host-error"
    HOST_QMP_QUIT = "host-qmp-quit"
    HOST_QMP_SYSTEM_RESET = "host-qmp-system-reset"
    HOST_SIGNAL = "host-signal"
    HOST_UI = "host-ui"
    GUEST_SHUTDOWN = "guest-shutdown"
    GUEST_RESET = "guest-reset"
    GUEST_PANIC = "guest-panic"
    SUBSYSTEM_RESET = "subsystem-reset"
    SNAPSHOT_LOAD = "snapshot-load"

    @property
    def by_guest(self) -> bool:
        """QEMU's ``shutdown_caused_by_guest``: the ``guest`` member of the events."""
        return self in (ShutdownCause.GUEST_SHUTDOWN, ShutdownCause.GUEST_RESET, ShutdownCause.GUEST_PANIC)


_R = RunState
#: Allowed transitions (from softmmu/runstate.c, restricted to what qmpd uses).
TRANSITIONS: frozenset[tuple[RunState, RunState]] = frozenset(
    {
        (_R.PRELAUNCH, _R.RUNNING),
        (_R.PRELAUNCH, _R.INMIGRATE),
        (_R.PRELAUNCH, _R.FINISH_MIGRATE),
        (_R.INMIGRATE, _R.RUNNING),
        (_R.INMIGRATE, _R.PAUSED),
        (_R.INMIGRATE, _R.PRELAUNCH),
        (_R.INMIGRATE, _R.SHUTDOWN),
        (_R.INMIGRATE, _R.INTERNAL_ERROR),
        (_R.INTERNAL_ERROR, _R.PAUSED),
        (_R.INTERNAL_ERROR, _R.PRELAUNCH),
        (_R.INTERNAL_ERROR, _R.FINISH_MIGRATE),
        (_R.PAUSED, _R.RUNNING),
        (_R.RUNNING, _R.SAVE_VM),
        (_R.SAVE_VM, _R.RUNNING),
        (_R.PAUSED, _R.PRELAUNCH),
        (_R.PAUSED, _R.FINISH_MIGRATE),
        (_R.PAUSED, _R.POSTMIGRATE),
        (_R.PAUSED, _R.SHUTDOWN),
        (_R.POSTMIGRATE, _R.RUNNING),
        (_R.POSTMIGRATE, _R.PAUSED),
        (_R.POSTMIGRATE, _R.PRELAUNCH),
        (_R.POSTMIGRATE, _R.FINISH_MIGRATE),
        (_R.FINISH_MIGRATE, _R.RUNNING),
        (_R.FINISH_MIGRATE, _R.PAUSED),
        (_R.FINISH_MIGRATE, _R.POSTMIGRATE),
        (_R.FINISH_MIGRATE, _R.PRELAUNCH),
        (_R.RUNNING, _R.PAUSED),
        (_R.RUNNING, _R.FINISH_MIGRATE),
        (_R.RUNNING, _R.SHUTDOWN),
        (_R.RUNNING, _R.INTERNAL_ERROR),
        (_R.RUNNING, _R.GUEST_PANICKED),
        (_R.RUNNING, _R.PRELAUNCH),
        (_R.SHUTDOWN, _R.PAUSED),
        (_R.SHUTDOWN, _R.PRELAUNCH),
        (_R.SHUTDOWN, _R.FINISH_MIGRATE),
        (_R.GUEST_PANICKED, _R.RUNNING),
        (_R.GUEST_PANICKED, _R.PAUSED),
        (_R.GUEST_PANICKED, _R.PRELAUNCH),
        (_R.GUEST_PANICKED, _R.FINISH_MIGRATE),
        (_R.GUEST_PANICKED, _R.SHUTDOWN),
    }
)


class InvalidTransition(RuntimeError):
    """qmpd tried a run-state change QEMU never makes (a bug, not a client error)."""
