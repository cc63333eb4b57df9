"""Commands about the QMP connection itself: negotiation, introspection, quit."""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import CommandNotFound, GenericError
from qmpd.machine.runstate import ShutdownCause
from qmpd.qapi.introspect import introspection_reply
from qmpd.qobject.writer import Encoded
from qmpd.version import OFFERED_CAPABILITIES, version_info


@qmp_command("qmp_capabilities")
def qmp_capabilities(ctx: CommandContext, enable: list[str] | None = None) -> None:
    if ctx.session.negotiated:
        raise CommandNotFound("Capabilities negotiation is already complete, command ignored")
    wanted = list(enable or [])
    unavailable = [name for name in wanted if name not in OFFERED_CAPABILITIES]
    if unavailable:
        raise GenericError(f"Capability {', '.join(unavailable)} not available")
    ctx.session.negotiate(wanted)


@qmp_command("query-version")
def query_version(ctx: CommandContext) -> dict[str, Any]:
    return version_info()


@qmp_command("query-commands")
def query_commands(ctx: CommandContext) -> list[dict[str, str]]:
    return [{"name": name} for name in ctx.command_names]


@qmp_command("query-qmp-schema")
def query_qmp_schema(ctx: CommandContext) -> Encoded:
    return introspection_reply(ctx.schema)


@qmp_command("quit")
def quit_(ctx: CommandContext) -> None:
    ctx.machine.shutdown(ShutdownCause.HOST_QMP_QUIT)
    ctx.daemon.request_exit()
