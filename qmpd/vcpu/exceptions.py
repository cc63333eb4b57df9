"""x86 exceptions delivered to the guest, as the CPU would, because Unicorn does not.

Unicorn reports a guest exception to the host (an error or the interrupt hook)
and never looks at the guest's IDT (unicorn-facts Q7).  qmpd does what the
processor does instead: the exception goes through the guest's 64-bit IDT gate
(frame pushed, RIP at the handler, IF cleared for an interrupt gate), a gate
that cannot be used turns it into #GP, two contributory faults into #DF, and a
#DF that cannot be delivered is a triple fault: the CPU shuts down and the
machine resets, as QEMU does ("Triple fault" -> guest-reset).

Reads and writes of physical addresses where nothing is mapped behave like
QEMU's unassigned memory: reads give 0, writes are dropped, no fault.  A fetch
from there reads the all-ones of a master abort, which decodes as an invalid
opcode (#UD).

Simplifications (qmpd's guests run at CPL 0 in one flat code segment): the
gate's selector is not loaded, no privilege change, and the error code pushed
for #GP/#NP/#DF/... is 0.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import unicorn.x86_const as x86
from unicorn import (
    UC_ARCH_X86,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_INSN_INVALID,
    UC_HOOK_INTR,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MODE_64,
    Uc,
    UcError,
)

DIVIDE_ERROR = 0
NMI = 2
BREAKPOINT = 3
INVALID_OPCODE = 6
DOUBLE_FAULT = 8
GENERAL_PROTECTION = 13
PAGE_FAULT = 14
#: Faults that push an error code (when raised by the processor, not by INT n).
WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})

#: Pages of unassigned memory one engine maps (reads 0, writes dropped) before it gives up.
MAX_UNASSIGNED_PAGES = 256
PAGE = 0x1000

_RFLAGS_CLEARED_BY_ANY_GATE = 1 << 8 | 1 << 14 | 1 << 16 | 1 << 17  # TF, NT, RF, VM
_RFLAGS_IF = 1 << 9
_INTERRUPT_GATE = 0xE
_TRAP_GATE = 0xF


class TripleFault(Exception):
    """The CPU could not deliver a double fault: it shuts down."""


def deliver(uc: Uc, vector: int, rip: int, error_code: int | None) -> bool:
    """Enter the guest's handler for ``vector`` (pushed return address ``rip``); False if the gate is unusable."""
    _, idt_base, idt_limit, _ = uc.reg_read(x86.UC_X86_REG_IDTR)
    if vector * 16 + 15 > idt_limit:
        return False
    try:
        gate = bytes(uc.mem_read(idt_base + vector * 16, 16))
    except UcError:
        return False
    low, _selector, ist, flags, middle, high, _ = struct.unpack("<HHBBHII", gate)
    if not flags & 0x80 or flags & 0xF not in (_INTERRUPT_GATE, _TRAP_GATE):
        return False
    old_rsp = uc.reg_read(x86.UC_X86_REG_RSP)
    rsp = old_rsp
    if ist & 7:
        _, tss_base, _, _ = uc.reg_read(x86.UC_X86_REG_TR)
        try:
            (rsp,) = struct.unpack("<Q", bytes(uc.mem_read(tss_base + 0x24 + 8 * ((ist & 7) - 1), 8)))
        except UcError:
            return False
    rflags = uc.reg_read(x86.UC_X86_REG_RFLAGS)
    words = [rip, uc.reg_read(x86.UC_X86_REG_CS), rflags, old_rsp, uc.reg_read(x86.UC_X86_REG_SS)]
    if error_code is not None:
        words.insert(0, error_code)
    rsp = (rsp & ~0xF) - 8 * len(words)
    try:
        uc.mem_write(rsp, struct.pack(f"<{len(words)}Q", *words))
    except UcError:
        return False
    rflags &= ~_RFLAGS_CLEARED_BY_ANY_GATE
    if flags & 0xF == _INTERRUPT_GATE:
        rflags &= ~_RFLAGS_IF
    uc.reg_write(x86.UC_X86_REG_RSP, rsp)
    uc.reg_write(x86.UC_X86_REG_RFLAGS, rflags)
    uc.reg_write(x86.UC_X86_REG_RIP, low | middle << 16 | high << 32)
    return True


def raise_exception(uc: Uc, vector: int, rip: int, *, software: bool = False) -> None:
    """Deliver ``vector`` with the processor's escalation; raises TripleFault when nothing can be delivered.

    An unusable gate is a #GP; a contributory fault (or #PF) while delivering a
    contributory fault (or #PF) is a #DF; a fault while delivering #DF is a triple fault.
    """
    error_code = 0 if vector in WITH_ERROR_CODE and not software else None
    if deliver(uc, vector, rip, error_code):
        return
    if vector == DOUBLE_FAULT:
        raise TripleFault
    benign = vector not in CONTRIBUTORY and vector != PAGE_FAULT
    if benign and deliver(uc, GENERAL_PROTECTION, rip, 0):
        return
    if not deliver(uc, DOUBLE_FAULT, rip, 0):
        raise TripleFault


def is_software_interrupt(uc: Uc, vector: int, rip: int) -> bool:
    """True if the instruction before ``rip`` is INT3 or INT n for ``vector`` (a trap, no error code)."""
    try:
        before = bytes(uc.mem_read(rip - 2, 2))
    except UcError:
        return False
    return before == bytes((0xCD, vector)) or (vector == BREAKPOINT and before[1] == 0xCC)


class UnassignedMemory:
    """Maps unassigned pages on first access, as MMIO that reads 0 and drops writes (QEMU's behaviour)."""

    def __init__(self, uc: Uc, max_pages: int = MAX_UNASSIGNED_PAGES) -> None:
        self._uc = uc
        self._max_pages = max_pages
        self.pages = 0
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED, self._on_unmapped)

    def _on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int, user_data: Any) -> bool:
        if self.pages >= self._max_pages:
            return False  # a guest sweeping the address space: its CPU stops with an emulator error
        page = address & ~(PAGE - 1)
        try:
            uc.mmio_map(page, PAGE, _read_zero, None, _drop_write, None)
        except UcError:
            return False
        self.pages += 1
        return True


def _read_zero(uc: Uc, offset: int, size: int, user_data: Any) -> int:
    return 0


def _drop_write(uc: Uc, offset: int, size: int, value: int, user_data: Any) -> None:
    return None


class InterruptHook:
    """Catches exceptions and INT n that Unicorn reports, and stops emulation so they are delivered outside it.

    Unicorn never resets the CPU's "exception in progress" field, so the next
    contributory fault would come back as #DF and the one after that would stop
    emulation silently; ``clear`` puts the field back after each delivery.
    """

    def __init__(self, uc: Uc) -> None:
        self._uc = uc
        self.pending: int | None = None
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)

    def _on_interrupt(self, uc: Uc, vector: int, user_data: Any) -> None:
        self.pending = vector
        uc.emu_stop()

    def take(self) -> int | None:
        """The vector reported by the last run, if any (and forget it)."""
        vector, self.pending = self.pending, None
        if vector is not None:
            _clear_exception_in_progress(self._uc)
        return vector


def _find_old_exception_offset() -> int | None:
    """Where Unicorn keeps env->old_exception in a saved context: the one word a #DE turns from -1 to 0."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, PAGE)
    uc.mem_write(0, b"\x31\xc9\xf7\xf1\xf4")  # xor ecx, ecx; div ecx; hlt
    uc.hook_add(UC_HOOK_INTR, lambda uc, vector, data: uc.emu_stop())
    uc.reg_write(x86.UC_X86_REG_RSP, PAGE)
    before = uc.context_save()
    uc.emu_start(0, PAGE)
    after = uc.context_save()
    old = ctypes.string_at(before.context, before.size)
    new = ctypes.string_at(after.context, after.size)
    hits = [i for i in range(0, len(old) - 3, 4) if old[i : i + 4] == b"\xff" * 4 and new[i : i + 4] == b"\0" * 4]
    return hits[0] if len(hits) == 1 else None


_offset_cache: list[int | None] = []


def _clear_exception_in_progress(uc: Uc) -> None:
    if not _offset_cache:
        _offset_cache.append(_find_old_exception_offset())
    offset = _offset_cache[0]
    if offset is None:
        return
    context = uc.context_save()
    ctypes.memmove(context.context.value + offset, b"\xff" * 4, 4)
    uc.context_restore(context)


#: Unicorn errors that are guest exceptions, and their vector.
ERROR_VECTORS = {UC_ERR_INSN_INVALID: INVALID_OPCODE, UC_ERR_FETCH_UNMAPPED: INVALID_OPCODE}
