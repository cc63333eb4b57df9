"""QEMU's generic job commands.

qmpd has no block layer, so no job ever exists: ``query-jobs`` honestly answers ``[]`` (libvirt sends it when
it reconnects to a running domain and gives up on the domain if it is refused), and every ``job-*`` verb meets
an unknown id, with QEMU's text for one.
"""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError


def _no_such_job() -> GenericError:
    return GenericError("Job not found")


@qmp_command("query-jobs")
def query_jobs(ctx: CommandContext) -> list[dict[str, Any]]:
    return []


@qmp_command("job-pause")
def job_pause(ctx: CommandContext, id: str) -> None:
    raise _no_such_job()


@qmp_command("job-resume")
def job_resume(ctx: CommandContext, id: str) -> None:
    raise _no_such_job()


@qmp_command("job-cancel")
def job_cancel(ctx: CommandContext, id: str) -> None:
    raise _no_such_job()


@qmp_command("job-complete")
def job_complete(ctx: CommandContext, id: str) -> None:
    raise _no_such_job()


@qmp_command("job-dismiss")
def job_dismiss(ctx: CommandContext, id: str) -> None:
    raise _no_such_job()


@qmp_command("job-finalize")
def job_finalize(ctx: CommandContext, id: str) -> None:
    raise _no_such_job()
