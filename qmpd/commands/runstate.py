"""Commands that start, stop and reset the machine."""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError
from qmpd.machine.runstate import ShutdownCause


@qmp_command("query-status")
def query_status(ctx: CommandContext) -> dict[str, Any]:
    return {"running": ctx.machine.running, "singlestep": False, "status": ctx.machine.runstate.value}


@qmp_command("stop")
async def stop(ctx: CommandContext) -> None:
    await ctx.machine.stop()


@qmp_command("cont")
def cont(ctx: CommandContext) -> None:
    ctx.machine.cont()


@qmp_command("system_reset")
async def system_reset(ctx: CommandContext) -> None:
    await ctx.machine.system_reset(ShutdownCause.HOST_QMP_SYSTEM_RESET)


@qmp_command("system_powerdown")
def system_powerdown(ctx: CommandContext) -> None:
    ctx.machine.system_powerdown()


@qmp_command("system_wakeup")
def system_wakeup(ctx: CommandContext) -> None:
    # QEMU: first whether the board can wake at all (query-current-machine), then whether it sleeps;
    # qmpd does not emulate S3, so a guest never is.
    if not ctx.machine.machine_type.can_wake_from_suspend(ctx.machine.config.acpi):
        raise GenericError("wake-up from suspend is not supported by this guest")
    raise GenericError("Unable to wake up: guest is not in suspended state")


@qmp_command("inject-nmi")
def inject_nmi(ctx: CommandContext) -> None:
    ctx.machine.inject_nmi()


@qmp_command("set-action")
def set_action(
    ctx: CommandContext,
    reboot: str | None = None,
    shutdown: str | None = None,
    panic: str | None = None,
    watchdog: str | None = None,
) -> None:
    given = {"reboot": reboot, "shutdown": shutdown, "panic": panic, "watchdog": watchdog}
    ctx.machine.actions.current.update({name: value for name, value in given.items() if value is not None})
