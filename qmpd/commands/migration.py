"""Migration commands: migrate, query-migrate, migrate_cancel, migrate-incoming (qmpd.migration)."""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError
from qmpd.machine.runstate import RunState

#: Why an HTTP-front session may not migrate through a shell command.
EXEC_REFUSED = "exec: migration is only allowed on a QMP monitor, not over the HTTP front"


def _check_scheme(ctx: CommandContext, uri: str) -> None:
    """exec: runs a shell command as qmpd.  QEMU trusts every monitor with that; a WebSocket on the
    HTTP front may be a browser page's (even past the Origin check, e.g. an allowed origin's XSS)."""
    if uri.startswith("exec:") and not ctx.session.allows_host_commands:
        raise GenericError(EXEC_REFUSED)


@qmp_command("migrate")
def migrate(
    ctx: CommandContext,
    uri: str,
    blk: bool | None = None,
    inc: bool | None = None,
    detach: bool | None = None,
    resume: bool | None = None,
) -> None:
    if blk or inc:
        raise GenericError("qmpd has no block devices to migrate: 'blk' and 'inc' are not supported")
    if resume:
        raise GenericError("Cannot resume if there is no paused migration")
    _check_scheme(ctx, uri)
    ctx.migrator.start(uri, ctx.take_fd)


@qmp_command("query-migrate")
def query_migrate(ctx: CommandContext) -> dict[str, Any]:
    return ctx.migrator.info()


@qmp_command("migrate_cancel")
def migrate_cancel(ctx: CommandContext) -> None:
    ctx.migrator.cancel()


@qmp_command("migrate-incoming")
def migrate_incoming(ctx: CommandContext, uri: str) -> None:
    migrator = ctx.migrator
    if migrator.incoming is None:
        raise GenericError("'-incoming' was not specified on the command line")
    # After a failed load the target is unchanged and may take another stream, whatever -incoming said.
    waiting = migrator.incoming == "defer" and migrator.status == "none"
    if ctx.machine.runstate is not RunState.INMIGRATE or not (waiting or migrator.status == "failed"):
        raise GenericError("The incoming migration has already been started")
    _check_scheme(ctx, uri)
    migrator.begin_accept(uri)
