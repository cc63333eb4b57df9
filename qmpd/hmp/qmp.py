"""``human-monitor-command``: the QMP command that runs one HMP command line and returns its text.

It lives with the human monitor, which calls QMP handlers (as QEMU's hmp_* call qmp_*): so
commands/ never imports hmp/, and qmpd.handlers loads both.
"""

from __future__ import annotations

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError


@qmp_command("human-monitor-command")
async def human_monitor_command(ctx: CommandContext, command_line: str, cpu_index: int | None = None) -> str:
    # The human monitor (its parser and command table) loads with its first command line, not at start-up.
    from qmpd.hmp import commands as _hmp_commands  # noqa: F401  (fills the HMP table)
    from qmpd.hmp.monitor import HMP

    if cpu_index is not None and cpu_index not in ctx.machine.cpu_slots.cpu_indexes():
        raise GenericError("Parameter 'cpu-index' expects a CPU number")
    return await HMP.execute(ctx._replace(hmp_cpu_index=cpu_index), command_line)
