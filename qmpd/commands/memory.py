"""Saving guest memory to a file: ``memsave`` (a CPU's virtual addresses) and ``pmemsave`` (physical).

Files are written only inside the dump directory (``--dump-dir``, default
the directory qmpd started in), and only to regular files
(qmpd.machine.dump_file says how they are opened).  The range is checked
before the file is opened, so a bad address leaves no file behind.  As in
QEMU, physical addresses outside RAM read as zeros, while a virtual range
must be mapped.  A dump is at most as large as guest RAM.

The command replies once the file is complete, as QEMU's does; the file is
written from a worker thread in 1 MiB chunks, so the event loop and other
sessions' commands go on meanwhile (QEMU holds its big lock for the whole
dump).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError
from qmpd.machine.dump_file import DUMP_CHUNK, dump_path, write_dump
from qmpd.machine.guest_memory import physical_chunks, read_virtual, virtual_mapped

if TYPE_CHECKING:
    from qmpd.vcpu.ram import GuestRAM
    from qmpd.vcpu.snapshot import CPUSnapshot


def _check_size(ctx: CommandContext, size: int) -> None:
    if size < 0:
        raise GenericError("Parameter 'size' expects a non-negative size")
    limit = ctx.machine.ram.size
    if size > limit:
        raise GenericError(f"Parameter 'size' expects at most {limit} (the guest RAM size)")


def _invalid(val: int, size: int) -> GenericError:
    return GenericError(f"Invalid addr 0x{val & 0xFFFF_FFFF_FFFF_FFFF:016x}/size {size} specified")


def _virtual_chunks(ram: GuestRAM, cpu: CPUSnapshot, val: int, size: int) -> Iterator[bytes]:
    for offset in range(0, size, DUMP_CHUNK):
        data = read_virtual(ram, cpu, (val + offset) & 0xFFFF_FFFF_FFFF_FFFF, min(DUMP_CHUNK, size - offset))
        if data is None:  # the guest changed its page tables while we wrote
            raise _invalid(val, size)
        yield data


@qmp_command("memsave")
async def memsave(ctx: CommandContext, val: int, size: int, filename: str, cpu_index: int | None = None) -> None:
    index = 0 if cpu_index is None else cpu_index
    if index not in ctx.machine.cpu_slots.cpu_indexes():
        raise GenericError("Parameter 'cpu-index' expects a CPU number")
    _check_size(ctx, size)
    cpu = await ctx.machine.cpu_snapshot(index)
    ram, dump_dir = ctx.machine.ram, ctx.machine.config.dump_dir

    def save() -> None:
        dump_path(dump_dir, filename)  # a bad name is reported before a bad range, as before
        if not virtual_mapped(ram, cpu, val, size):
            raise _invalid(val, size)
        write_dump(dump_dir, filename, _virtual_chunks(ram, cpu, val, size))

    await ctx.in_worker(save)


@qmp_command("pmemsave")
async def pmemsave(ctx: CommandContext, val: int, size: int, filename: str) -> None:
    _check_size(ctx, size)
    ram, dump_dir = ctx.machine.ram, ctx.machine.config.dump_dir
    await ctx.in_worker(lambda: write_dump(dump_dir, filename, physical_chunks(ram, val, size, DUMP_CHUNK)))
