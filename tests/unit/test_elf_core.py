"""The ELF core layout of dump-guest-memory, read back with struct (and readelf), and the dump's state rules.

The expected layout is QEMU 7.2's, as its files show with ``readelf -a``:
header, two section headers at 64, program headers at 192, the notes (every
CPU's CORE note, then every CPU's QEMU note), the memory, ``.shstrtab``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from qmpd.config import MachineConfig
from qmpd.errors import GenericError
from qmpd.events import EventBus
from qmpd.machine.elf_core import SHSTRTAB, MemoryRange, core_head, select_ranges
from qmpd.machine.machine import Machine
from qmpd.machine.runstate import ShutdownCause
from qmpd.migration.migrator import Migrator
from qmpd.qapi.schema import Schema
from qmpd.vcpu.snapshot import CPUSnapshot
from tests.helpers import read_elf_core

RAM = 16 << 20
IN_PROCESS = "There is a dump in process, please wait."


def _cpu(seed: int) -> CPUSnapshot:
    """A snapshot whose every register says which one it is (rax = seed+0, rbx = seed+1, ...)."""
    return CPUSnapshot.powered_off()._replace(
        gpr=tuple(seed + n for n in range(16)),
        rip=seed + 0x100,
        rflags=0x246,
        selectors=(0x10, 0x08, 0x18, 0x20, 0x28, 0x30),
        fs_base=seed + 0x200,
        gs_base=seed + 0x300,
        cr=(0x80050033, 0xDEAD, seed + 0x1000, 0x6A0),
        efer=0x500,
    )


def _core(cpus: list[tuple[int, CPUSnapshot]], ranges: list[MemoryRange], memory: bytes) -> bytes:
    return core_head(cpus, ranges) + memory + SHSTRTAB


CPUS = [(0, _cpu(0x1000)), (3, _cpu(0x2000))]
RANGES = [MemoryRange(0, 0x3000), MemoryRange(0x10000, 0x1000)]
MEMORY = bytes(range(256)) * 64


def test_header_and_program_headers_have_qemu_7_2_s_layout() -> None:
    core = read_elf_core(_core(CPUS, RANGES, MEMORY))
    assert core["ident"] == b"\x7fELF\x02\x01\x01" + bytes(9)
    assert (core["type"], core["machine"], core["version"], core["entry"], core["flags"]) == (4, 62, 1, 0, 0)
    assert (core["shoff"], core["phoff"], core["ehsize"], core["shstrndx"]) == (64, 192, 64, 1)
    notes_at = 192 + 3 * 56
    notes_size = 2 * (12 + 8 + 336) + 2 * (12 + 8 + 440)
    assert core["note_type"] == 4
    assert core["phdrs"] == [
        (4, 0, notes_at, 0, 0, notes_size, notes_size, 0),
        (1, 0, notes_at + notes_size, 0, 0, 0x3000, 0x3000, 0),
        (1, 0, notes_at + notes_size + 0x3000, 0x10000, 0x10000, 0x1000, 0x1000, 0),
    ]
    memory_end = notes_at + notes_size + 0x4000
    assert core["shdrs"] == [(0,) * 10, (1, 3, 0, 0, memory_end, 11, 0, 0, 0, 0)]


def test_notes_are_every_prstatus_then_every_qemu_state() -> None:
    notes = read_elf_core(_core(CPUS, RANGES, MEMORY))["notes"]
    assert [(name, kind, len(desc)) for name, kind, desc in notes] == [
        (b"CORE", 1, 336), (b"CORE", 1, 336), (b"QEMU", 0, 440), (b"QEMU", 0, 440),
    ]  # fmt: skip
    for (index, cpu), (_, _, prstatus) in zip(CPUS, notes[:2], strict=True):
        assert struct.unpack_from("<I", prstatus, 32)[0] == index + 1  # pr_pid: QEMU's cpu_index + 1
        regs = struct.unpack_from("<27Q", prstatus, 112)
        # user_regs_struct: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss
        assert regs[0] == cpu.gpr[15] and regs[4] == cpu.gpr[6] and regs[10] == cpu.gpr[0]
        assert regs[16:21] == (cpu.rip, 0x08, 0x246, cpu.gpr[7], 0x18)
        assert regs[21:] == (cpu.fs_base, cpu.gs_base, 0x20, 0x10, 0x28, 0x30)
    for (_, cpu), (_, _, state) in zip(CPUS, notes[2:], strict=True):
        version, size, *words = struct.unpack_from("<II18Q", state)
        assert (version, size) == (1, 440)
        assert words[:8] == [cpu.gpr[n] for n in (0, 1, 2, 3, 4, 5, 7, 6)]  # rax rbx rcx rdx rsi rdi rsp rbp
        assert words[16:] == [cpu.rip, 0x246]
        selector, limit, flags, _, base = struct.unpack_from("<IIIIQ", state, 152)  # cs
        assert (selector, limit, flags, base) == (0x08, 0xFFFFFFFF, 0x00A09B00, 0)
        assert struct.unpack_from("<IIIIQ", state, 152 + 3 * 24)[4] == cpu.fs_base  # fs
        assert struct.unpack_from("<6Q", state, 392) == (0x80050033, 0, 0xDEAD, cpu.cr[2], 0x6A0, 0)


def test_the_memory_sits_where_the_program_headers_say() -> None:
    data = _core(CPUS, RANGES, MEMORY)
    _, _, offset, _, _, size, _, _ = read_elf_core(data)["phdrs"][2]
    assert data[offset : offset + size] == MEMORY[0x3000:0x4000]
    assert data.endswith(b"\0.shstrtab\0")


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils is not installed")
def test_readelf_reads_the_notes_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "core"
    path.write_bytes(_core(CPUS, RANGES, MEMORY))
    result = subprocess.run(["readelf", "-W", "-a", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert result.stdout.count("NT_PRSTATUS") == 2
    assert result.stdout.count(" LOAD ") == 2
    assert "Advanced Micro Devices X86-64" in result.stdout


WHOLE = [MemoryRange(0, RAM)]


@pytest.mark.parametrize(
    ("begin", "length", "expected"),
    [
        (None, None, [MemoryRange(0, RAM)]),
        (655000, 100000, [MemoryRange(655000, 100000)]),
        (RAM - 10, 100, [MemoryRange(RAM - 10, 10)]),
        (0, 1 << 62, [MemoryRange(0, RAM)]),
        (5, 0, "Invalid parameter 'length'"),
        (4096, -1, "dump: no guest memory to dump"),
        (RAM, 4096, "dump: no guest memory to dump"),
        ((1 << 63) - 1, 10, "dump: no guest memory to dump"),
        (-5, 4096, "Invalid parameter 'begin'"),  # QEMU compares begin as unsigned
        (-(1 << 63), 1, "dump: no guest memory to dump"),  # as QEMU 7.2 answers: its size wraps
    ],
)
def test_begin_and_length_select_ranges_as_qemu_does(begin: int, length: int, expected: object) -> None:
    if isinstance(expected, str):
        with pytest.raises(GenericError) as caught:
            select_ranges(WHOLE, begin, length)
        assert caught.value.desc == expected
    else:
        assert select_ranges(WHOLE, begin, length) == expected


# -- the dump's state on a machine (prelaunch: no vCPU runs) -------------------------------------


@pytest.fixture
async def machine() -> AsyncIterator[tuple[Machine, list[tuple[str, Any]]]]:
    """A machine built on the running loop (vCPU snapshots come back through its bridge)."""
    events = EventBus(Schema.load(), strict=True)
    seen: list[tuple[str, Any]] = []

    def observe(name: str, data: Mapping[str, Any] | None) -> None:
        seen.append((name, data))

    events.observers.append(observe)
    built = Machine(MachineConfig(start_paused=True, ram_size=RAM, smp="2"), events)
    try:
        yield built, seen
    finally:
        built.close()


def _gated() -> tuple[asyncio.Event, Callable[[Callable[[], None]], Awaitable[None]]]:
    """A worker that waits for the gate before writing: a dump that stays active as long as a test needs."""
    gate = asyncio.Event()

    async def worker(work: Callable[[], None]) -> None:
        await gate.wait()
        await asyncio.to_thread(work)

    return gate, worker


async def test_a_dump_reports_progress_and_completes(
    machine: tuple[Machine, list[tuple[str, Any]]], tmp_path: Path
) -> None:
    vm, seen = machine
    ram = vm.ram
    ram.write(0x1000, b"qmpd dump marker")
    resident = ram.touched_chunks(1 << 20)
    assert resident == b"\x01" + bytes(15)
    fd = os.open(tmp_path / "core", os.O_WRONLY | os.O_CREAT, 0o600)
    gate, worker = _gated()
    await asyncio.wait_for(vm.dump.run(fd, dump_format="elf", begin=None, length=None, detach=True, worker=worker), 10)
    assert vm.dump.result() == {"status": "active", "completed": 0, "total": RAM}
    for refused in (vm.stop(), vm.system_reset(ShutdownCause.HOST_QMP_SYSTEM_RESET)):
        with pytest.raises(GenericError, match=IN_PROCESS):
            await asyncio.wait_for(refused, 10)
    with pytest.raises(GenericError, match=IN_PROCESS):
        vm.cont()
    with pytest.raises(GenericError, match=r"^Live migration disabled: dump-guest-memory in progress$"):
        Migrator(vm).start(f"file:{tmp_path / 'migrated'}")  # QEMU's dump blocks migration
    gate.set()
    for _ in range(500):
        if not vm.dump.active:
            break
        await asyncio.sleep(0.01)
    assert vm.dump.result() == {"status": "completed", "completed": RAM, "total": RAM}
    assert seen == [("DUMP_COMPLETED", {"result": vm.dump.result()})]  # no STOP/RESUME: it was not running
    data = (tmp_path / "core").read_bytes()
    core = read_elf_core(data)
    assert [(name, kind) for name, kind, _ in core["notes"]] == [(b"CORE", 1)] * 2 + [(b"QEMU", 0)] * 2
    _, _, offset, _, _, size, _, _ = core["phdrs"][1]
    assert size == RAM and data[offset + 0x1000 : offset + 0x1010] == b"qmpd dump marker"
    assert data[offset + (1 << 20) : offset + RAM] == bytes(RAM - (1 << 20))
    assert ram.touched_chunks(1 << 20) == resident  # untouched RAM was not read (reading it allocates it)


async def test_a_failed_write_is_reported_in_the_event_and_the_reply(
    machine: tuple[Machine, list[tuple[str, Any]]],
) -> None:
    vm, seen = machine
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write fails with EPIPE
    with pytest.raises(GenericError) as caught:
        run = vm.dump.run(write_end, dump_format="elf", begin=0, length=4096, detach=False, worker=asyncio.to_thread)
        await asyncio.wait_for(run, 10)
    assert caught.value.desc == "dump: failed to write elf header: Broken pipe"
    assert seen == [
        ("DUMP_COMPLETED", {"result": {"status": "failed", "completed": 0, "total": 4096}, "error": caught.value.desc})
    ]
    with pytest.raises(OSError):
        os.fstat(write_end)  # the dump closed its descriptor


async def test_a_refused_filter_closes_the_target_and_leaves_no_dump_active(
    machine: tuple[Machine, list[tuple[str, Any]]],
) -> None:
    vm, seen = machine
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(GenericError, match="dump: no guest memory to dump"):
            run = vm.dump.run(write_end, dump_format="elf", begin=RAM, length=1, detach=False, worker=asyncio.to_thread)
            await asyncio.wait_for(run, 10)
        assert vm.dump.result()["status"] == "failed" and not vm.dump.active
        assert seen == []  # QEMU sends no DUMP_COMPLETED for a dump refused before it starts
        assert os.read(read_end, 10) == b""  # the write end was closed
    finally:
        os.close(read_end)
