"""One Unicorn instance running one vCPU; created, used and closed by that vCPU's thread only.

The engine boots in 64-bit flat long mode (unicorn-facts Q2) with guest RAM
mapped at physical 0 and the local APIC's registers at 0xFEE00000.  Hooks:
CPUID is answered from the vCPU's own table (raw ctypes, ~3 us), IN/OUT go
to the port bus, and the compiled block hook makes stops exact and cheap.
Without the block hook, slices are counted by Unicorn (exact, slower).

A device that raises in a hook (a device model's bug, a CPUID table that
cannot answer) stops emulation, and ``run`` returns an INTERNAL_ERROR result
naming the device: the vCPU thread survives to report it.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import unicorn.x86_const as x86
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INSN, UC_MODE_64, UC_PROT_ALL, Uc, UcError
from unicorn.unicorn_py3.arch.types import uc_hook_h
from unicorn.unicorn_py3.unicorn import uclib

from qmpd.cpu.cpuid import CPUIDTable
from qmpd.devices.bus import PortBus
from qmpd.devices.ioapic import IOAPIC, IOAPIC_BASE, IOAPIC_SIZE
from qmpd.devices.lapic import LAPIC_BASE, LAPIC_SIZE, LocalAPIC
from qmpd.vcpu import native
from qmpd.vcpu.exceptions import (
    ERROR_VECTORS,
    NMI,
    InterruptHook,
    TripleFault,
    UnassignedMemory,
    is_software_interrupt,
    raise_exception,
)
from qmpd.vcpu.ram import GuestRAM, disable_huge_pages
from qmpd.vcpu.snapshot import GPR_NAMES, MSR_EFER, SEGMENT_NAMES, CPUSnapshot, Exit, HookFailure, RunResult

if TYPE_CHECKING:
    from qmpd.vcpu.runner import Entry

#: emu_start's "until": an address no guest can reach.
UNTIL = 0xFFFF_FFFF_FFFF_FFFF
#: Instructions per slice when Unicorn counts (no block hook).
COUNTED_SLICE = 100_000
#: Translation cache per engine (Unicorn's default is 1 GiB of address space each).
TCG_BUFFER = 32 << 20

_CPUID_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p)
_REGS = (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RBX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX)

_LIVE_LOCK = threading.Lock()


class VCPUEngine:
    """A Unicorn instance for one vCPU."""

    #: Engines created and not yet closed, in the whole process (leak checks, /metrics).
    live = 0

    def __init__(
        self,
        engine_model: str,
        ram: GuestRAM,
        bus: PortBus,
        lapic: LocalAPIC,
        cpuid: CPUIDTable,
        *,
        ioapic: IOAPIC | None = None,
    ) -> None:
        disable_huge_pages()  # before the engine's translation buffer is mapped
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64, cpu=getattr(x86, f"UC_CPU_X86_{engine_model}"))
        self._closed = False
        with _LIVE_LOCK:
            VCPUEngine.live += 1
        self.uc.ctl_set_tcg_buffer_size(TCG_BUFFER)
        self.uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.address)
        self.uc.mmio_map(LAPIC_BASE, LAPIC_SIZE, self._lapic_read, None, self._lapic_write, None)
        self._ioapic = ioapic
        if ioapic is not None:
            self.uc.mmio_map(IOAPIC_BASE, IOAPIC_SIZE, self._ioapic_read, None, self._ioapic_write, None)
        self._bus = bus
        self._lapic = lapic
        self.cpuid = cpuid
        self.uc.hook_add(UC_HOOK_INSN, self._in, None, 1, 0, x86.UC_X86_INS_IN)
        self.uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, x86.UC_X86_INS_OUT)
        #: The first hook failure of the current run (see _fail).
        self._hook_failure: HookFailure | None = None
        self._install_cpuid_hook()
        self._interrupts = InterruptHook(self.uc)
        self.unassigned = UnassignedMemory(self.uc)
        #: Exceptions and INT n delivered to the guest's handlers.
        self.exceptions_delivered = 0
        #: Where the NMI being handled returns to; NMIs are blocked until the guest gets back there (its IRET).
        self.nmi_return: int | None = None
        self._nmi_return_hook: int | None = None
        #: Set by the vCPU's runner (any thread): an NMI waits, so end the run once NMIs are unblocked.
        self.nmi_waiting = False
        self.control = native.BlockControl()
        self._block_hook = native.install_block_hook(self.uc, self.control) if native.available else None

    # -- hooks (run in the vCPU thread, inside emu_start) -------------------------------

    def _fail(self, device: object, access: str, exc: Exception) -> None:
        """A device raised in a hook: remember it (the first one), stop emulation; run() reports it.

        Not re-raised through the binding: a read hook that raises returns nothing to
        Unicorn, which ctypes reports on stderr.
        """
        if self._hook_failure is None:
            failure = HookFailure(type(device).__name__, access)
            failure.__cause__ = exc
            self._hook_failure = failure
        self.uc.emu_stop()

    def _in(self, uc: Uc, port: int, size: int, user_data: Any) -> int:
        try:
            return self._bus.read(port, size)
        except Exception as exc:
            self._fail(self._bus.device_at(port), f"IN from port {port:#x}", exc)
            return 0

    def _out(self, uc: Uc, port: int, size: int, value: int, user_data: Any) -> None:
        try:
            self._bus.write(port, size, value)
        except Exception as exc:
            self._fail(self._bus.device_at(port), f"OUT {value:#x} to port {port:#x}", exc)

    def _lapic_read(self, uc: Uc, offset: int, size: int, user_data: Any) -> int:
        try:
            return self._lapic.mmio_read(offset, size)
        except Exception as exc:
            self._fail(self._lapic, f"MMIO read at {LAPIC_BASE + offset:#x}", exc)
            return 0

    def _lapic_write(self, uc: Uc, offset: int, size: int, value: int, user_data: Any) -> None:
        try:
            self._lapic.mmio_write(offset, size, value)
        except Exception as exc:
            self._fail(self._lapic, f"MMIO write at {LAPIC_BASE + offset:#x}", exc)

    def _ioapic_read(self, uc: Uc, offset: int, size: int, user_data: Any) -> int:
        assert self._ioapic is not None
        try:
            return self._ioapic.mmio_read(offset, size)
        except Exception as exc:
            self._fail(self._ioapic, f"MMIO read at {IOAPIC_BASE + offset:#x}", exc)
            return 0

    def _ioapic_write(self, uc: Uc, offset: int, size: int, value: int, user_data: Any) -> None:
        assert self._ioapic is not None
        try:
            self._ioapic.mmio_write(offset, size, value)
        except Exception as exc:
            self._fail(self._ioapic, f"MMIO write at {IOAPIC_BASE + offset:#x}", exc)

    def _install_cpuid_hook(self) -> None:
        # Raw ctypes (unicorn-facts Q1): 1 register read + 1 batch write, ~3 us per CPUID.
        handle = self.uc._uch
        values = (ctypes.c_uint64 * 4)()
        pointers = (ctypes.c_void_p * 4)(*[ctypes.addressof(values) + 8 * i for i in range(4)])
        regs = (ctypes.c_int * 4)(*_REGS)
        leaf = ctypes.c_uint64()
        subleaf = ctypes.c_uint64()

        def on_cpuid(_uc: int | None, _user: int | None) -> int:
            uclib.uc_reg_read(handle, x86.UC_X86_REG_RAX, ctypes.byref(leaf))
            uclib.uc_reg_read(handle, x86.UC_X86_REG_RCX, ctypes.byref(subleaf))
            try:
                values[:] = list(self.cpuid.lookup(leaf.value, subleaf.value))
            except Exception as exc:  # ctypes would print it and go on
                self._fail(self.cpuid, f"CPUID leaf {leaf.value:#x}.{subleaf.value:#x}", exc)
                return 1
            uclib.uc_reg_write_batch(handle, regs, pointers, 4)
            return 1

        callback = _CPUID_CALLBACK(on_cpuid)
        hook = uc_hook_h()
        status = uclib.uc_hook_add(
            handle,
            ctypes.byref(hook),
            UC_HOOK_INSN,
            ctypes.cast(callback, ctypes.c_void_p),
            None,
            ctypes.c_uint64(1),
            ctypes.c_uint64(0),
            ctypes.c_int(x86.UC_X86_INS_CPUID),
        )
        if status != 0:
            raise RuntimeError(f"uc_hook_add(CPUID) failed with {status}")
        self._cpuid_keepalive = (callback, values, pointers, regs, leaf, subleaf, hook)

    # -- running ----------------------------------------------------------------------

    def set_entry(self, entry: Entry) -> None:
        """Registers for a fresh start (emu_start sets RIP itself)."""
        self.uc.reg_write(x86.UC_X86_REG_RSP, entry.rsp)
        self.uc.reg_write(x86.UC_X86_REG_RDI, entry.rdi)
        self.uc.reg_write(x86.UC_X86_REG_RSI, entry.rsi)
        self.uc.reg_write(x86.UC_X86_REG_RDX, entry.rdx)
        self.uc.reg_write(x86.UC_X86_REG_RCX, entry.rcx)
        self.uc.reg_write(x86.UC_X86_REG_RFLAGS, 0x2)

    def run(self, rip: int, budget: int = 0, *, nmi: bool = False) -> RunResult:
        """Run from ``rip`` until a stop, HLT or fault (or one counted slice).

        Guest exceptions are delivered to the guest's handlers here, between two
        ``emu_start`` calls, and the run goes on at the handler.  With ``nmi`` the
        run begins in the guest's NMI handler (vector 2, returning to ``rip``).
        A hook that raised ends the run with Exit.INTERNAL_ERROR.
        """
        control = self.control
        control.stopped_by_hook = 0
        control.budget = budget
        if nmi:
            try:
                raise_exception(self.uc, NMI, rip)
            except TripleFault:
                return RunResult(Exit.TRIPLE_FAULT, rip, f"triple fault (NMI at {rip:#x})")
            self.exceptions_delivered += 1
            self.block_nmis_until(rip)
            rip = self.uc.reg_read(x86.UC_X86_REG_RIP)
        while True:
            try:
                if self._block_hook is not None:
                    self.uc.emu_start(rip, UNTIL)
                else:
                    self.uc.emu_start(rip, UNTIL, count=COUNTED_SLICE)
                if self._hook_failure is not None:
                    failure, self._hook_failure = self._hook_failure, None
                    raise failure
            except UcError as exc:
                where = self.uc.reg_read(x86.UC_X86_REG_RIP)
                vector = ERROR_VECTORS.get(exc.errno)
                if vector is None:
                    return RunResult(Exit.FAULT, where, str(exc))
                software = False
            except Exception as exc:  # a device's failure, or one of qmpd's hooks raised through the binding
                return self._internal_error(exc)
            else:
                where = self.uc.reg_read(x86.UC_X86_REG_RIP)
                interrupt = self._interrupts.take()
                if interrupt is None:
                    return self._outcome(where)
                vector = interrupt
                software = is_software_interrupt(self.uc, vector, where)
            try:
                raise_exception(self.uc, vector, where, software=software)
            except TripleFault:
                return RunResult(Exit.TRIPLE_FAULT, where, f"triple fault (exception {vector} at {where:#x})")
            self.exceptions_delivered += 1
            rip = self.uc.reg_read(x86.UC_X86_REG_RIP)
            if control.stop or control.stopped_by_hook:
                return RunResult(Exit.STOPPED, rip, None)

    @property
    def nmi_blocked(self) -> bool:
        """An NMI handler has not returned yet: the next NMI waits (as the processor blocks NMIs until IRET)."""
        return self.nmi_return is not None

    def block_nmis_until(self, rip: int) -> None:
        """Block NMIs until the guest executes at ``rip`` again, the interrupted instruction its handler's
        IRET goes back to (Unicorn reports no IRET; a code hook on that one address sees the return)."""
        self._unhook_nmi_return()
        self.nmi_return = rip
        self._nmi_return_hook = self.uc.hook_add(UC_HOOK_CODE, self._nmi_returned, None, rip, rip)
        self.uc.ctl_remove_cache(rip, rip + 1)  # code already translated there gets the hook too

    def _nmi_returned(self, uc: Uc, address: int, size: int, user_data: Any) -> None:
        self._unhook_nmi_return()
        if self.nmi_waiting:
            self.control.stop = 1  # at the next block boundary: the runner delivers the waiting NMI

    def _unhook_nmi_return(self) -> None:
        if self._nmi_return_hook is not None:
            self.uc.hook_del(self._nmi_return_hook)
            self._nmi_return_hook = None
        self.nmi_return = None

    def _internal_error(self, exc: Exception) -> RunResult:
        """The run a raising hook ended (an unwrapped exception came from a hook of qmpd's own)."""
        if isinstance(exc, HookFailure):
            failure = exc
        else:
            failure = HookFailure("qmpd", "a Unicorn hook")
            failure.__cause__ = exc
        where = self.uc.reg_read(x86.UC_X86_REG_RIP)
        return RunResult(Exit.INTERNAL_ERROR, where, f"{failure}: {failure.__cause__!r}", failure)

    def _outcome(self, after: int) -> RunResult:
        """Why an ``emu_start`` that raised nothing returned."""
        control = self.control
        if control.stopped_by_hook:
            return RunResult(Exit.STOPPED, after, None)
        if self._block_hook is None and not self._ends_with_hlt(after):
            return RunResult(Exit.STOPPED if control.stop else Exit.SLICE, after, None)
        return RunResult(Exit.HALTED, after, None)

    def _ends_with_hlt(self, rip: int) -> bool:
        try:
            return bytes(self.uc.mem_read(rip - 1, 1)) == b"\xf4"
        except UcError:
            return False

    def request_stop(self) -> None:
        """Any thread: stop at the next block boundary, or without the block hook at the end of the slice.

        Never ``uc.emu_stop()`` from another thread: it can land after a read-modify-write's store,
        and the instruction then runs again on resume (unicorn-facts Q5).
        """
        self.control.stop = 1

    def clear_stop(self) -> None:
        """Before the next run."""
        self.control.stop = 0

    def flush_translations(self) -> None:
        """Forget translated code (after the host rewrote guest code), and the hook's block counts."""
        self.uc.ctl_flush_tb()
        self.control.forget_blocks()

    def snapshot(self, *, halted: bool) -> CPUSnapshot:
        """The registers (only from this vCPU's thread, while it is not executing)."""
        read = self.uc.reg_read
        ldtr = read(x86.UC_X86_REG_LDTR)
        tr = read(x86.UC_X86_REG_TR)
        gdtr = read(x86.UC_X86_REG_GDTR)
        idtr = read(x86.UC_X86_REG_IDTR)
        return CPUSnapshot(
            gpr=tuple(read(getattr(x86, f"UC_X86_REG_{name.upper()}")) for name in GPR_NAMES),
            rip=read(x86.UC_X86_REG_RIP),
            rflags=read(x86.UC_X86_REG_RFLAGS),
            selectors=tuple(read(getattr(x86, f"UC_X86_REG_{name.upper()}")) for name in SEGMENT_NAMES),
            fs_base=read(x86.UC_X86_REG_FS_BASE),
            gs_base=read(x86.UC_X86_REG_GS_BASE),
            ldtr=(ldtr[0], ldtr[1], ldtr[2], ldtr[3]),
            tr=(tr[0], tr[1], tr[2], tr[3]),
            gdtr=(gdtr[1], gdtr[2]),
            idtr=(idtr[1], idtr[2]),
            cr=tuple(read(getattr(x86, f"UC_X86_REG_CR{n}")) for n in (0, 2, 3, 4)),
            dr=tuple(read(getattr(x86, f"UC_X86_REG_DR{n}")) for n in (0, 1, 2, 3, 6, 7)),
            efer=self.uc.msr_read(MSR_EFER),
            fpcw=read(x86.UC_X86_REG_FPCW),
            fpsw=read(x86.UC_X86_REG_FPSW),
            fptag=read(x86.UC_X86_REG_FPTAG),
            mxcsr=read(x86.UC_X86_REG_MXCSR),
            fpr=tuple(tuple(read(getattr(x86, f"UC_X86_REG_FP{n}"))) for n in range(8)),
            xmm=tuple(read(getattr(x86, f"UC_X86_REG_XMM{n}")) for n in range(16)),
            halted=halted,
        )

    def restore_registers(self, saved: CPUSnapshot) -> None:
        """Load a snapshot taken by ``snapshot`` (a restored vCPU; guest RAM is already in place).

        Control and segment state is written only where it differs from this fresh engine's
        (Unicorn starts in flat long mode, which is what qmpd's guests run in).
        """
        write, read = self.uc.reg_write, self.uc.reg_read
        for name, value in zip(GPR_NAMES, saved.gpr, strict=True):
            write(getattr(x86, f"UC_X86_REG_{name.upper()}"), value)
        write(x86.UC_X86_REG_RIP, saved.rip)
        write(x86.UC_X86_REG_RFLAGS, saved.rflags)
        if self.uc.msr_read(MSR_EFER) != saved.efer:
            self.uc.msr_write(MSR_EFER, saved.efer)
        for number, value in zip((0, 2, 3, 4), saved.cr, strict=True):
            register = getattr(x86, f"UC_X86_REG_CR{number}")
            if read(register) != value:
                write(register, value)
        if (read(x86.UC_X86_REG_GDTR)[1:3]) != tuple(saved.gdtr):
            write(x86.UC_X86_REG_GDTR, (0, saved.gdtr[0], saved.gdtr[1], 0))
        if (read(x86.UC_X86_REG_IDTR)[1:3]) != tuple(saved.idtr):
            write(x86.UC_X86_REG_IDTR, (0, saved.idtr[0], saved.idtr[1], 0))
        for name, value in zip(SEGMENT_NAMES, saved.selectors, strict=True):
            register = getattr(x86, f"UC_X86_REG_{name.upper()}")
            if read(register) != value:
                write(register, value)
        write(x86.UC_X86_REG_FS_BASE, saved.fs_base)
        write(x86.UC_X86_REG_GS_BASE, saved.gs_base)
        for number, value in enumerate(saved.dr[:4]):
            write(getattr(x86, f"UC_X86_REG_DR{number}"), value)
        write(x86.UC_X86_REG_FPCW, saved.fpcw)
        write(x86.UC_X86_REG_FPSW, saved.fpsw)
        write(x86.UC_X86_REG_FPTAG, saved.fptag)
        for number, pair in enumerate(saved.fpr):
            write(getattr(x86, f"UC_X86_REG_FP{number}"), tuple(pair))
        write(x86.UC_X86_REG_MXCSR, saved.mxcsr)
        for number, value in enumerate(saved.xmm):
            write(getattr(x86, f"UC_X86_REG_XMM{number}"), value)

    @property
    def instructions_executed(self) -> int | None:
        """Guest instructions run so far (None without the compiled block hook, which counts them)."""
        return int(self.control.instructions) if self._block_hook is not None else None

    @property
    def blocks_executed(self) -> int:
        """Translated blocks run so far (block hook statistics)."""
        return int(self.control.blocks)

    def close(self) -> None:
        """Release the Unicorn instance now (its thread is not inside emu_start).

        The binding closes the handle from a weakref finalizer; calling it here
        frees the engine at once instead of at some later garbage collection.
        """
        finalizer = getattr(self.uc, "_Uc__finalizer", None)
        if finalizer is not None:
            finalizer()
        if not self._closed:
            self._closed = True
            with _LIVE_LOCK:
                VCPUEngine.live -= 1


EngineFactory = Callable[[], VCPUEngine]
