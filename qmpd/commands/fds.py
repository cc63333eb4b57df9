"""Passed file descriptors: ``getfd``, ``closefd``, ``add-fd``, ``remove-fd``, ``query-fdsets``.

The descriptor travels with the command's bytes on a Unix monitor (SCM_RIGHTS); the session
keeps the last message's descriptors and these commands take the first (qmpd.fdstore, with
QEMU 7.2's texts and qmpd's bounds).  Sessions that cannot carry descriptors (TCP, stdio,
WebSocket) have none to take: "No file descriptor supplied via SCM_RIGHTS".
"""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command


@qmp_command("getfd")
def getfd(ctx: CommandContext, fdname: str) -> None:
    ctx.fds.getfd(fdname)


@qmp_command("closefd")
def closefd(ctx: CommandContext, fdname: str) -> None:
    ctx.fds.closefd(fdname)


@qmp_command("add-fd")
def add_fd(ctx: CommandContext, fdset_id: int | None = None, opaque: str | None = None) -> dict[str, int]:
    fds = ctx.fds
    return fds.fdsets.add(fds.take_received(), fdset_id, opaque)


@qmp_command("remove-fd")
def remove_fd(ctx: CommandContext, fdset_id: int, fd: int | None = None) -> None:
    ctx.fds.fdsets.remove(fdset_id, fd)


@qmp_command("query-fdsets")
def query_fdsets(ctx: CommandContext) -> list[dict[str, Any]]:
    return ctx.fds.fdsets.query()
