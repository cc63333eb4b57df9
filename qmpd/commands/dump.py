"""``dump-guest-memory``, ``query-dump`` and ``query-dump-guest-memory-capability``.

The checks run in QEMU 7.2's order and with its texts (qmp_dump_guest_memory).
qmpd writes the ELF format only; the kdump formats are refused as QEMU
refuses a format built without its compression library, and ``win-dmp``
fails as it does in QEMU on a machine without a vmcoreinfo device.  The
``protocol`` is ``fd:NAME`` (a descriptor passed with ``getfd``, looked up
by ``CommandContext.take_fd``) or ``file:PATH``: QEMU opens any path it may,
qmpd only regular files inside ``--dump-dir`` (as for memsave), created
readable by their owner only, as QEMU creates them.  ``paging: true``
(PT_LOADs by guest-virtual address) is refused: qmpd has no page-table walk
for whole address spaces.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError
from qmpd.machine.dump_file import open_dump
from qmpd.machine.guest_dump import IN_PROCESS, MIGRATION_BLOCKED
from qmpd.machine.runstate import RunState

#: The formats qmpd writes (query-dump-guest-memory-capability).
FORMATS = ("elf",)
#: Formats refused before anything happens, as QEMU refuses those built without their library.
_UNAVAILABLE = ("kdump-zlib", "kdump-lzo", "kdump-snappy")
#: QEMU opens a dump file with S_IRUSR.
DUMP_FILE_MODE = 0o400


@qmp_command("query-dump-guest-memory-capability")
def query_dump_guest_memory_capability(ctx: CommandContext) -> dict[str, Any]:
    return {"formats": list(FORMATS)}


@qmp_command("query-dump")
def query_dump(ctx: CommandContext) -> dict[str, Any]:
    return ctx.machine.dump.result()


def _check_request(ctx: CommandContext, paging: bool, begin: int | None, length: int | None, fmt: str) -> None:
    """Everything QEMU refuses before it opens the target, in its order."""
    if ctx.machine.runstate is RunState.INMIGRATE:
        raise GenericError("Dump not allowed during incoming migration.")
    if ctx.machine.dump.active:
        raise GenericError(IN_PROCESS)
    if fmt != "elf" and (paging or begin is not None or length is not None):
        raise GenericError("kdump-compressed format doesn't support paging or filter")
    if begin is not None and length is None:
        raise GenericError("Parameter 'length' is missing")
    if begin is None and length is not None:
        raise GenericError("Parameter 'begin' is missing")
    if fmt in _UNAVAILABLE:
        raise GenericError(f"{fmt} is not available now")
    if paging:
        raise GenericError("qmpd supports dump-guest-memory with paging false only")


async def _open_target(ctx: CommandContext, protocol: str) -> int:
    """The descriptor ``protocol`` names: fd:NAME or file:PATH (inside the dump directory)."""
    if protocol.startswith("fd:"):
        return ctx.take_fd(protocol[3:])
    if protocol.startswith("file:"):
        dump_dir, path = ctx.machine.config.dump_dir, protocol[5:]
        return await ctx.in_worker(lambda: open_dump(dump_dir, path, DUMP_FILE_MODE))
    raise GenericError("Invalid parameter 'protocol'")


@qmp_command("dump-guest-memory")
async def dump_guest_memory(
    ctx: CommandContext,
    paging: bool,
    protocol: str,
    detach: bool | None = None,
    begin: int | None = None,
    length: int | None = None,
    format: str | None = None,
) -> None:
    fmt = format or "elf"
    _check_request(ctx, paging, begin, length, fmt)
    fd = await _open_target(ctx, protocol)
    if ctx.machine.dump.active:  # another session started one while the file was being opened
        os.close(fd)
        raise GenericError(IN_PROCESS)
    if ctx.migrator.running:  # QEMU's dump cannot add its migration blocker then (the file stays)
        os.close(fd)
        raise GenericError(f"disallowing migration blocker (migration/snapshot in progress) for: {MIGRATION_BLOCKED}")
    worker = asyncio.to_thread if detach else ctx.in_worker
    await ctx.machine.dump.run(fd, dump_format=fmt, begin=begin, length=length, detach=bool(detach), worker=worker)
