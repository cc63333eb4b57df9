"""What guest-initiated resets, shutdowns and panics do: QEMU's ``-action`` and ``set-action``.

QEMU 7.2 (softmmu/runstate-action.c, observed): a guest reset (a triple fault)
resets the machine, or with ``reboot=shutdown`` (``-no-reboot``) becomes a guest
shutdown; a guest shutdown sends SHUTDOWN and exits, or with
``shutdown=pause`` (``-no-shutdown``) stops in run state ``shutdown``; a panic
pauses (``pause``, or ``shutdown`` while shutdowns pause), powers off
(``shutdown``, ``exit-failure`` with exit status 1) or is only reported (``none``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable

DEFAULTS = {"reboot": "reset", "shutdown": "poweroff", "panic": "shutdown", "watchdog": "reset"}
_TYPES = {"reboot": "RebootAction", "shutdown": "ShutdownAction", "panic": "PanicAction", "watchdog": "WatchdogAction"}


@functools.cache
def action_choices() -> dict[str, tuple[str, ...]]:
    """The values each action takes, read from schema/types (their one description)."""
    from qmpd.qapi.schema import default_schema_dir  # jsonschema is not needed to parse a command line

    directory = default_schema_dir() / "types"
    return {name: tuple(json.loads((directory / f"{kind}.json").read_text())["enum"]) for name, kind in _TYPES.items()}


class Actions:
    """The machine's current actions (set at start from the command line, changed by set-action)."""

    def __init__(self, configured: Iterable[tuple[str, str]] = ()) -> None:
        self.current = dict(DEFAULTS)
        self.current.update(configured)

    @property
    def reset_shuts_down(self) -> bool:
        return self.current["reboot"] == "shutdown"

    @property
    def shutdown_pauses(self) -> bool:
        return self.current["shutdown"] == "pause"

    def panic_outcome(self) -> str:
        """GUEST_PANICKED's action: ``pause``, ``poweroff`` or ``run``."""
        panic = self.current["panic"]
        if panic == "pause" or (panic == "shutdown" and self.shutdown_pauses):
            return "pause"
        if panic in ("shutdown", "exit-failure"):
            return "poweroff"
        return "run"

    @property
    def panic_exit_status(self) -> int:
        """The process exit status after a panic that powers off."""
        return 1 if self.current["panic"] == "exit-failure" else 0
