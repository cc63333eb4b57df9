"""HMP commands, each a thin layer over the machine or the QMP handler it mirrors."""

from __future__ import annotations

from qmpd.commands.base import CommandContext
from qmpd.hmp.monitor import HMP
from qmpd.machine.runstate import RunState, ShutdownCause
from qmpd.version import version_info


@HMP.command("help|?", "name:S?", "[cmd]", "show the help")
def hmp_help(ctx: CommandContext, name: str | None = None) -> str:
    return HMP.help_text(name)


@HMP.command("info", "item:s?", "[subcommand]", "show various information about the system state")
def hmp_info(ctx: CommandContext, item: str | None = None) -> str:
    return HMP.help_text("info")  # reached only through help; HMPTable.execute dispatches subcommands


@HMP.command("stop|s", "", "", "stop emulation")
def hmp_stop(ctx: CommandContext) -> None:
    ctx.machine.stop()


@HMP.command("cont|c", "", "", "resume emulation")
def hmp_cont(ctx: CommandContext) -> None:
    ctx.machine.cont()


@HMP.command("system_reset", "", "", "reset the system")
def hmp_system_reset(ctx: CommandContext) -> None:
    ctx.machine.system_reset(ShutdownCause.HOST_QMP_SYSTEM_RESET)


@HMP.command("system_powerdown", "", "", "send system power down event")
def hmp_system_powerdown(ctx: CommandContext) -> None:
    ctx.machine.system_powerdown()


@HMP.command("quit|q", "", "", "quit the emulator")
def hmp_quit(ctx: CommandContext) -> None:
    ctx.machine.shutdown(ShutdownCause.HOST_QMP_QUIT)
    ctx.daemon.request_exit()


@HMP.info_command("status", "", "", "show the current VM status (running|paused)")
def hmp_info_status(ctx: CommandContext) -> str:
    state = ctx.machine.runstate
    running = ctx.machine.running
    text = f"VM status: {'running' if running else 'paused'}"
    if not running and state is not RunState.PAUSED:
        text += f" ({state.value})"
    return text + "\n"


@HMP.info_command("version", "", "", "show the version of QEMU")
def hmp_info_version(ctx: CommandContext) -> str:
    info = version_info()
    qemu = info["qemu"]
    return f"{qemu['major']}.{qemu['minor']}.{qemu['micro']}{info['package']}\n"


@HMP.info_command("name", "", "", "show the current VM name")
def hmp_info_name(ctx: CommandContext) -> str:
    name = ctx.machine.config.name
    return f"{name}\n" if name is not None else ""


@HMP.info_command("kvm", "", "", "show KVM information")
def hmp_info_kvm(ctx: CommandContext) -> str:
    return "kvm support: not compiled\n"
