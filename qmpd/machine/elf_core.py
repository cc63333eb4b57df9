"""The ELF core file of ``dump-guest-memory``, laid out byte for byte as QEMU 7.2 writes it.

QEMU 7.2's file, for ``paging: false``, is::

    ELF header | 2 section headers | PT_NOTE + one PT_LOAD per memory range
    | notes | memory, range after range | ".shstrtab" string table

The section table (a null section and ``.shstrtab``) sits between the ELF
header and the program headers, and its string table after the memory.  The
notes are one ``CORE``/NT_PRSTATUS note per vCPU (``pr_pid`` is the cpu-index
plus one), then one ``QEMU`` note per vCPU holding QEMU's QEMUCPUState
(version 1, with ``kernel_gs_base``), in CPU creation order.  A PT_LOAD's
virtual address is its physical address.

Two choices differ from QEMU 7.2 on purpose: ``e_ehsize`` is 64 (QEMU 7.2
writes 8, a known slip), and the machine is always EM_X86_64 with the 64-bit
prstatus, because qmpd's vCPUs always run in long mode (QEMU picks EM_386
while its first CPU is still in real mode).

Nothing here does I/O: the head of the file is built in memory (a few KiB
per vCPU), the memory ranges are streamed by the caller, then the tail.
"""

# Annotations are not postponed here: its NamedTuple is made at every start (tests/unit/test_startup_imports.py).

import struct
from collections.abc import Sequence
from typing import NamedTuple

from qmpd.errors import GenericError
from qmpd.vcpu.snapshot import CPUSnapshot

ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
NT_PRSTATUS = 1
SHT_STRTAB = 3
EFER_LMA = 1 << 10
#: QEMU's QEMUCPUSTATE_VERSION.
QEMU_CPU_STATE_VERSION = 1
#: The section names QEMU 7.2 appends after the memory: "" and ".shstrtab".
SHSTRTAB = b"\0.shstrtab\0"

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_NHDR = struct.Struct("<III")
_U64 = 0xFFFF_FFFF_FFFF_FFFF
#: x86_64 elf_prstatus: pr_pid at 32, pr_reg (27 registers) at 112, 336 bytes in all.
_PRSTATUS_SIZE = 336
_PRSTATUS_PID = 32
_PRSTATUS_REGS = 112
_SEGMENT = struct.Struct("<IIIIQ")
_QEMU_STATE_HEAD = struct.Struct("<II18Q")
#: version, size, 18 registers, 10 segments, CR0-CR4, kernel_gs_base.
QEMU_CPU_STATE_SIZE = _QEMU_STATE_HEAD.size + 10 * _SEGMENT.size + 6 * 8
#: Attributes of the flat long-mode segments every qmpd vCPU runs with (Unicorn hides the real ones).
_CODE64_FLAGS = 0x00A09B00
_DATA_FLAGS = 0x00C09300
_FLAT_LIMIT = 0xFFFFFFFF


class MemoryRange(NamedTuple):
    """A run of guest-physical RAM (QEMU's GuestPhysBlock): one PT_LOAD."""

    start: int
    length: int

    @property
    def end(self) -> int:
        """First address past the range."""
        return self.start + self.length


def _s64(value: int) -> int:
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


def _filtered_size(block: MemoryRange, begin: int, length: int) -> int:
    """QEMU's dump_filtered_memblock_size, with C's signed/unsigned comparisons."""
    left = begin if begin & _U64 > block.start else block.start
    stop = _s64(begin + length)
    right = stop if stop & _U64 < block.end else block.end
    return max(_s64(right - left), 0)


def _in_filter(block: MemoryRange, begin: int, length: int) -> bool:
    """The converse of QEMU's "this block is out of the range" test."""
    return not (block.start >= _s64(begin + length) & _U64 or block.end <= begin & _U64)


def select_ranges(blocks: Sequence[MemoryRange], begin: int | None, length: int | None) -> list[MemoryRange]:
    """The ranges to dump (all of ``blocks``, or their parts in [begin, begin+length)), with QEMU's refusals."""
    if begin is None or length is None:
        return [block for block in blocks if block.length]
    if length == 0:
        raise GenericError("Invalid parameter 'length'")
    if sum(_filtered_size(block, begin, length) for block in blocks) <= 0:
        raise GenericError("dump: no guest memory to dump")
    if not any(_in_filter(block, begin, length) for block in blocks):
        raise GenericError("Invalid parameter 'begin'")
    chosen = []
    for block in blocks:
        start, end = max(block.start, begin), min(block.end, begin + length)
        if start < end:
            chosen.append(MemoryRange(start, end - start))
    return chosen


def _note(name: bytes, note_type: int, desc: bytes) -> bytes:
    """One ELF note: header, NUL-ended name and descriptor, each padded to 4 bytes."""
    named = name + b"\0"
    return (
        _NHDR.pack(len(named), len(desc), note_type)
        + named.ljust((len(named) + 3) & ~3, b"\0")
        + desc.ljust((len(desc) + 3) & ~3, b"\0")
    )


def _registers(cpu: CPUSnapshot) -> dict[str, int]:
    names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{n}" for n in range(8, 16)))
    regs = dict(zip(names, cpu.gpr, strict=True))
    regs.update(zip(("es", "cs", "ss", "ds", "fs", "gs"), cpu.selectors, strict=False))
    return regs


def prstatus_note(cpu_index: int, cpu: CPUSnapshot) -> bytes:
    """The ``CORE`` NT_PRSTATUS note of one vCPU (x86_64 ``struct elf_prstatus``), as gdb reads it."""
    r = _registers(cpu)
    pr_reg = (
        r["r15"], r["r14"], r["r13"], r["r12"], r["rbp"], r["rbx"], r["r11"], r["r10"], r["r9"], r["r8"],
        r["rax"], r["rcx"], r["rdx"], r["rsi"], r["rdi"], 0, cpu.rip, r["cs"], cpu.rflags, r["rsp"], r["ss"],
        cpu.fs_base, cpu.gs_base, r["ds"], r["es"], r["fs"], r["gs"],
    )  # fmt: skip
    desc = bytearray(_PRSTATUS_SIZE)
    struct.pack_into("<I", desc, _PRSTATUS_PID, cpu_index + 1)
    struct.pack_into("<27Q", desc, _PRSTATUS_REGS, *(value & _U64 for value in pr_reg))
    return _note(b"CORE", NT_PRSTATUS, bytes(desc))


def _segments(cpu: CPUSnapshot) -> bytes:
    """cs, ds, es, fs, gs, ss, ldt, tr, gdt, idt as QEMUCPUSegment (selector, limit, flags, pad, base)."""
    r = _registers(cpu)
    bases = {"fs": cpu.fs_base, "gs": cpu.gs_base}
    out = [
        _SEGMENT.pack(r[name], _FLAT_LIMIT, _CODE64_FLAGS if name == "cs" else _DATA_FLAGS, 0, bases.get(name, 0))
        for name in ("cs", "ds", "es", "fs", "gs", "ss")
    ]
    for selector, base, limit, flags in (cpu.ldtr, cpu.tr):
        out.append(_SEGMENT.pack(selector, limit, flags, 0, base))
    for base, limit in (cpu.gdtr, cpu.idtr):
        out.append(_SEGMENT.pack(0, limit, 0, 0, base))
    return b"".join(out)


def qemu_note(cpu: CPUSnapshot) -> bytes:
    """The ``QEMU`` note of one vCPU: QEMUCPUState, which crash's and QEMU's own scripts read."""
    r = _registers(cpu)
    names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", *(f"r{n}" for n in range(8, 16)))
    head = _QEMU_STATE_HEAD.pack(
        QEMU_CPU_STATE_VERSION, QEMU_CPU_STATE_SIZE, *(r[name] & _U64 for name in names), cpu.rip, cpu.rflags
    )
    cr0, cr2, cr3, cr4 = cpu.cr
    tail = struct.pack("<6Q", cr0, 0, cr2, cr3, cr4, 0)  # CR0-CR4 (no CR1); kernel_gs_base is not visible
    return _note(b"QEMU", 0, head + _segments(cpu) + tail)


def notes(cpus: Sequence[tuple[int, CPUSnapshot]]) -> bytes:
    """Every vCPU's NT_PRSTATUS note, then every vCPU's QEMU note, as QEMU orders them."""
    return b"".join(prstatus_note(index, cpu) for index, cpu in cpus) + b"".join(qemu_note(cpu) for _, cpu in cpus)


def core_head(cpus: Sequence[tuple[int, CPUSnapshot]], ranges: Sequence[MemoryRange]) -> bytes:
    """Everything before the memory: ELF header, section headers, program headers, notes."""
    note_blob = notes(cpus)
    phnum = 1 + len(ranges)
    shoff = _EHDR.size
    phoff = shoff + 2 * _SHDR.size
    notes_offset = phoff + phnum * _PHDR.size
    memory_offset = notes_offset + len(note_blob)
    strtab_offset = memory_offset + sum(r.length for r in ranges)
    ident = b"\x7fELF" + bytes((2, 1, 1))  # ELFCLASS64, little-endian, EV_CURRENT
    header = _EHDR.pack(
        ident, ET_CORE, EM_X86_64, 1, 0, phoff, shoff, 0, _EHDR.size, _PHDR.size, phnum, _SHDR.size, 2, 1
    )
    sections = bytes(_SHDR.size) + _SHDR.pack(1, SHT_STRTAB, 0, 0, strtab_offset, len(SHSTRTAB), 0, 0, 0, 0)
    programs = [_PHDR.pack(PT_NOTE, 0, notes_offset, 0, 0, len(note_blob), len(note_blob), 0)]
    offset = memory_offset
    for r in ranges:
        programs.append(_PHDR.pack(PT_LOAD, 0, offset, r.start, r.start, r.length, r.length, 0))
        offset += r.length
    return header + sections + b"".join(programs) + note_blob
