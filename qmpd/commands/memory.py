"""Saving guest memory to a file: ``memsave`` (a CPU's virtual addresses) and ``pmemsave`` (physical).

Files are written only inside the dump directory (``--dump-dir``, default
the directory qmpd started in).  The range is checked before the file is
opened, so a bad address leaves no file behind.  As in QEMU, physical
addresses outside RAM read as zeros, while a virtual range must be mapped.
A dump is at most as large as guest RAM.
"""

from __future__ import annotations

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError


def _check_size(ctx: CommandContext, size: int) -> None:
    if size < 0:
        raise GenericError("Parameter 'size' expects a non-negative size")
    limit = ctx.machine.board.ram.size
    if size > limit:
        raise GenericError(f"Parameter 'size' expects at most {limit} (the guest RAM size)")


def _write(ctx: CommandContext, filename: str, data: bytes) -> None:
    path = ctx.machine.dump_path(filename)
    try:
        with open(path, "wb") as out:
            out.write(data)
    except OSError as exc:
        raise GenericError(f"Could not open '{filename}': {exc.strerror}") from None


def _invalid(val: int, size: int) -> GenericError:
    return GenericError(f"Invalid addr 0x{val & 0xFFFF_FFFF_FFFF_FFFF:016x}/size {size} specified")


@qmp_command("memsave")
async def memsave(ctx: CommandContext, val: int, size: int, filename: str, cpu_index: int | None = None) -> None:
    index = 0 if cpu_index is None else cpu_index
    if index not in ctx.machine.cpu_indexes():
        raise GenericError("Parameter 'cpu-index' expects a CPU number")
    _check_size(ctx, size)
    ctx.machine.dump_path(filename)
    data = await ctx.machine.read_virtual(index, val, size)
    if data is None:
        raise _invalid(val, size)
    _write(ctx, filename, data)


@qmp_command("pmemsave")
def pmemsave(ctx: CommandContext, val: int, size: int, filename: str) -> None:
    _check_size(ctx, size)
    ctx.machine.dump_path(filename)
    _write(ctx, filename, ctx.machine.read_physical_or_zeros(val, size))
