"""One real Unicorn vCPU engine, without the daemon: hand-assembled x86-64 code in a 16 MiB GuestRAM.

What the engine must guarantee to the vCPU thread: CPUID answered from the
vCPU's own table (vendor, APIC ID), IN/OUT reaching the port bus, the local
APIC's registers at 0xFEE00000, HLT reported with the right RIP, guest
exceptions delivered through the guest's IDT as the processor does,
and stops requested from another thread landing on a block boundary, so that
a read-modify-write instruction never runs twice across a pause.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import unicorn.x86_const as x86

from qmpd.config import MachineConfig
from qmpd.cpu.cpuid import CPUIDTable, build_cpuid
from qmpd.cpu.models import CPUModel
from qmpd.devices.bus import PortBus
from qmpd.devices.lapic import DELIVERY_STARTUP, DEST_FIELD, LocalAPIC
from qmpd.events import EventBus
from qmpd.machine.machine import Machine
from qmpd.machine.qom_tree import new_object
from qmpd.qapi.schema import Schema
from qmpd.vcpu import native
from qmpd.vcpu.engine import VCPUEngine
from qmpd.vcpu.exceptions import MAX_UNASSIGNED_PAGES
from qmpd.vcpu.ram import GuestRAM
from qmpd.vcpu.runner import Entry
from qmpd.vcpu.snapshot import Exit

CODE = 0x10000
APIC_ID = 3
RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP = range(8)
needs_block_hook = pytest.mark.skipif(
    not native.available,
    reason="qmpd/vcpu/_blockhook.so is not built: without it a stop is Unicorn's emu_stop and reported as a SLICE",
)


@dataclass
class CPUParts:
    """What attach_cpu takes from a realized CPU: the engine model and its CPUID table."""

    model: CPUModel
    identity: dict[str, object]
    level: int
    table: CPUIDTable


@pytest.fixture(scope="module")
def parts() -> CPUParts:
    """The default CPU (qemu64) of a 1-CPU pc machine, CPUID built for APIC ID 3 as Board.attach_cpu does."""

    async def build() -> CPUParts:  # a machine is built on its event loop
        machine = Machine(MachineConfig(start_paused=True, ram_size=16 << 20), EventBus(Schema.load(), strict=True))
        try:
            cpu = machine.cpu_slots.cpus[0]
            levels = {name: cpu.level(name) for name in ("level", "xlevel", "xlevel2", "level-func7")}
            model = cpu.engine()
            table = build_cpuid(model, cpu.identity, cpu.guest_features(), levels, machine.spec.topology, APIC_ID)
            return CPUParts(model, dict(cpu.identity), levels["level"], table)
        finally:
            machine.close()

    return asyncio.run(build())


@dataclass
class Port:
    """A port device that records accesses and answers reads with ``value``."""

    value: int = 0
    reads: list[tuple[int, int]] = field(default_factory=list)
    writes: list[tuple[int, int, int]] = field(default_factory=list)

    def io_read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return self.value

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


@dataclass
class Rig:
    ram: GuestRAM
    bus: PortBus
    lapic: LocalAPIC
    engine: VCPUEngine
    ipis: list[tuple[int, int, int, int, int]]

    def load(self, code: str, address: int = CODE) -> None:
        self.ram.write(address, bytes.fromhex(code.replace(" ", "")))

    def gpr(self, index: int) -> int:
        return self.engine.snapshot(halted=True).gpr[index]


@pytest.fixture
def rig(parts: CPUParts) -> Iterator[Rig]:
    ram = GuestRAM(16 << 20)
    bus = PortBus()
    lapic = new_object("apic")
    assert isinstance(lapic, LocalAPIC)
    lapic.apic_id = APIC_ID
    ipis: list[tuple[int, int, int, int, int]] = []
    lapic.send_ipi = lambda *ipi: ipis.append(ipi)
    engine = VCPUEngine(parts.model.engine, ram, bus, lapic, parts.table)
    yield Rig(ram, bus, lapic, engine, ipis)
    engine.close()


def stop_later(engine: VCPUEngine, delay: float) -> threading.Thread:
    """request_stop() from another thread after ``delay`` seconds (wherever the guest then is)."""

    def stopper() -> None:
        time.sleep(delay)
        engine.request_stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    return thread


def stop_after_blocks(engine: VCPUEngine, blocks: int) -> threading.Thread:
    """request_stop() from another thread once the guest has run ``blocks`` more blocks (load-independent)."""
    target = engine.blocks_executed + blocks

    def stopper() -> None:
        deadline = time.monotonic() + 10
        while engine.blocks_executed < target and time.monotonic() < deadline:
            time.sleep(0.0005)
        engine.request_stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    return thread


# -- CPUID ----------------------------------------------------------------------------------------


def test_cpuid_leaf0_vendor_and_level(rig: Rig, parts: CPUParts) -> None:
    rig.load("31 c0  0f a2  f4")  # xor eax,eax; cpuid; hlt
    result = rig.engine.run(CODE)
    assert result.exit is Exit.HALTED and result.rip == CODE + 5
    snapshot = rig.engine.snapshot(halted=True)
    eax, ebx, ecx, edx = snapshot.gpr[:4]
    vendor = b"".join(value.to_bytes(4, "little") for value in (ebx, edx, ecx)).decode()
    assert vendor == "AuthenticAMD" == parts.identity["vendor"], "qemu64 has QEMU's AMD vendor"
    assert eax == parts.level == 0xD


def test_cpuid_leaf1_carries_this_vcpus_apic_id(rig: Rig, parts: CPUParts) -> None:
    rig.load("b8 01 00 00 00  0f a2  f4")  # mov eax,1; cpuid; hlt
    rig.engine.run(CODE)
    eax, ebx = rig.gpr(RAX), rig.gpr(RBX)
    assert ebx >> 24 == APIC_ID, "Unicorn's own CPUID would say 0"
    family, model, stepping = (int(str(parts.identity[key])) for key in ("family", "model", "stepping"))
    assert (family, model, stepping) == (15, 107, 1), "QEMU's qemu64 (Unicorn's own says 6, 6, 3)"
    assert eax == 0x60FB1


def test_cpuid_leaf_0b_x2apic_id(rig: Rig) -> None:
    rig.load("b8 0b 00 00 00  31 c9  0f a2  f4")  # mov eax,0xb; xor ecx,ecx; cpuid; hlt
    rig.engine.run(CODE)
    assert rig.gpr(RDX) == APIC_ID
    assert rig.gpr(RCX) == 0x100, "level 0 is the SMT level"


# -- ports and the local APIC ----------------------------------------------------------------------


def test_in_and_out_reach_the_port_bus(rig: Rig) -> None:
    debugcon = Port()
    wide = Port(value=0xCAFE_BABE)
    rig.bus.add(0xE9, 1, debugcon)
    rig.bus.add(0x1234, 4, wide)
    rig.load(
        "b0 41"  # mov al, 'A'
        "e6 e9"  # out 0xe9, al
        "66 ba 34 12"  # mov dx, 0x1234
        "b8 78 56 34 12"  # mov eax, 0x12345678
        "ef"  # out dx, eax
        "ed"  # in eax, dx
        "89 c3"  # mov ebx, eax
        "31 c0"  # xor eax, eax
        "e4 80"  # in al, 0x80 (nothing there)
        "f4"  # hlt
    )
    result = rig.engine.run(CODE)
    assert result.exit is Exit.HALTED
    assert debugcon.writes == [(0, 1, 0x41)]
    assert wide.writes == [(0, 4, 0x1234_5678)] and wide.reads == [(0, 4)]
    assert rig.gpr(RBX) == 0xCAFE_BABE
    assert rig.gpr(RAX) == 0xFF, "an unassigned port reads as all ones"


def test_local_apic_registers_and_startup_ipi(rig: Rig) -> None:
    rig.load(
        "bb 00 00 e0 fe"  # mov ebx, 0xfee00000
        "8b 43 20"  # mov eax, [rbx+0x20]   ID
        "8b 4b 30"  # mov ecx, [rbx+0x30]   version
        "c7 83 10 03 00 00 00 00 00 01"  # mov dword [rbx+0x310], 0x01000000
        "c7 83 00 03 00 00 08 46 00 00"  # mov dword [rbx+0x300], 0x4608: STARTUP vector 8
        "f4"
    )
    assert rig.engine.run(CODE).exit is Exit.HALTED
    assert rig.gpr(RAX) == APIC_ID << 24
    assert rig.gpr(RCX) == 0x0005_0014
    assert rig.ipis == [(APIC_ID, DEST_FIELD, 1, DELIVERY_STARTUP, 8)]


# -- HLT, faults, state ---------------------------------------------------------------------------


def test_hlt_reports_the_address_after_it(rig: Rig) -> None:
    rig.load("90 90 f4")
    assert rig.engine.run(CODE) == (Exit.HALTED, CODE + 3, None, None)


IDT = 0x1000
HANDLER = 0x20000
STACK = 0x8000


def gate(target: int, *, kind: int = 0xE, ist: int = 0, present: bool = True) -> bytes:
    """A 64-bit IDT gate (0xE interrupt, 0xF trap)."""
    flags = kind | (0x80 if present else 0)
    return struct.pack("<HHBBHII", target & 0xFFFF, 0, ist, flags, target >> 16 & 0xFFFF, target >> 32, 0)


def set_idt(rig: Rig, gates: dict[int, bytes], limit: int = 256 * 16 - 1) -> None:
    for vector, entry in gates.items():
        rig.ram.write(IDT + vector * 16, entry)
    rig.engine.uc.reg_write(x86.UC_X86_REG_IDTR, (0, IDT, limit, 0))
    rig.engine.uc.reg_write(x86.UC_X86_REG_RSP, STACK + 8)  # not 16-aligned: delivery aligns it


def frame(rig: Rig, words: int) -> list[int]:
    rsp = rig.gpr(RSP)
    return list(struct.unpack(f"<{words}Q", rig.ram.read(rsp, 8 * words)))


def test_ud2_goes_to_the_guests_handler_with_the_processors_frame(rig: Rig) -> None:
    set_idt(rig, {6: gate(HANDLER)})
    rig.load("fb 90 0f 0b")  # sti; nop; ud2
    rig.load("f4", HANDLER)
    result = rig.engine.run(CODE)
    assert result == (Exit.HALTED, HANDLER + 1, None, None)
    rip, cs, rflags, rsp, ss = frame(rig, 5)
    assert rip == CODE + 2, "a fault pushes the faulting instruction's address"
    assert rflags & 1 << 9, "the pushed RFLAGS has IF as the guest set it"
    assert rsp == STACK + 8 and (cs, ss) == (0, 0)
    assert rig.gpr(RSP) == STACK - 40, "the stack was aligned to 16 bytes first"
    assert not rig.engine.snapshot(halted=True).rflags & 1 << 9, "an interrupt gate clears IF"
    assert rig.engine.exceptions_delivered == 1


def test_trap_gate_keeps_if_and_int_n_pushes_the_next_instruction(rig: Rig) -> None:
    set_idt(rig, {0x80: gate(HANDLER, kind=0xF), 13: gate(HANDLER + 0x100, kind=0xF)})
    rig.load("fb cd 80")  # sti; int 0x80
    rig.load("f4", HANDLER)
    assert rig.engine.run(CODE).exit is Exit.HALTED
    assert frame(rig, 1) == [CODE + 3]
    assert rig.engine.snapshot(halted=True).rflags & 1 << 9
    rig.load("cd 0d", CODE + 0x40)  # int 0x0d: software, so no error code although #GP has one
    rig.load("f4", HANDLER + 0x100)
    set_idt(rig, {})
    assert rig.engine.run(CODE + 0x40).rip == HANDLER + 0x101
    assert frame(rig, 2)[0] == CODE + 0x42


def test_repeated_divide_errors_each_reach_the_divide_handler(rig: Rig) -> None:
    """Unicorn would report the second as #DF and silently stop at the third (unicorn-facts Q7)."""
    set_idt(rig, {0: gate(HANDLER)})  # no #DF gate: a double fault would be a triple fault
    # r15 = where to go on; three times: lea r15,[rip+2]; div ecx (ecx = 0); then hlt
    step = "4c 8d 3d 02 00 00 00  f7 f1"
    rig.load("31 c9  31 db " + step * 3 + " f4")
    rig.load("48 ff c3  48 c7 c4 00 80 00 00  41 ff e7", HANDLER)  # inc rbx; mov rsp, 0x8000; jmp r15
    result = rig.engine.run(CODE)
    assert result.exit is Exit.HALTED, result
    assert rig.gpr(RBX) == 3


def test_unusable_gate_escalates_to_general_protection_then_double_fault(rig: Rig) -> None:
    set_idt(rig, {6: gate(HANDLER, present=False), 8: gate(HANDLER + 0x100)})
    rig.load("0f 0b")
    rig.load("f4", HANDLER + 0x100)
    assert rig.engine.run(CODE).rip == HANDLER + 0x101
    assert frame(rig, 2) == [0, CODE], "#DF pushes error code 0, then the faulting address"
    set_idt(rig, {6: gate(HANDLER, present=False), 8: b"\0" * 16, 13: gate(HANDLER + 0x200)})
    rig.load("f4", HANDLER + 0x200)
    assert rig.engine.run(CODE).rip == HANDLER + 0x201, "#UD is benign: its failed delivery is a plain #GP"


def test_no_idt_is_a_triple_fault(rig: Rig) -> None:
    rig.load("90  0f 0b")
    result = rig.engine.run(CODE)
    assert result.exit is Exit.TRIPLE_FAULT
    assert result.rip == CODE + 1
    assert result.error == f"triple fault (exception 6 at {CODE + 1:#x})"


def test_an_nmi_enters_gate_2_before_the_next_instruction_whatever_if_says(rig: Rig) -> None:
    set_idt(rig, {2: gate(HANDLER)})
    rig.load("fa 90 f4")  # cli; nop; hlt
    rig.load("f4", HANDLER)
    result = rig.engine.run(CODE + 1, nmi=True)
    assert result == (Exit.HALTED, HANDLER + 1, None, None)
    rip, _cs, rflags, rsp, _ss = frame(rig, 5)
    assert rip == CODE + 1, "no error code; it returns to where the CPU was"
    assert rsp == STACK + 8 and rig.engine.exceptions_delivered == 1
    assert rflags == 0x2, "interrupts were off: an NMI is taken anyway"


def test_an_nmi_without_a_gate_escalates_like_an_exception(rig: Rig) -> None:
    set_idt(rig, {8: gate(HANDLER + 0x100)})
    rig.load("f4", HANDLER + 0x100)
    rig.load("90 f4")
    assert rig.engine.run(CODE, nmi=True).rip == HANDLER + 0x101, "gate 2 absent: #GP absent too: #DF"
    set_idt(rig, {})
    rig.engine.uc.reg_write(x86.UC_X86_REG_IDTR, (0, 0, 0, 0))
    result = rig.engine.run(CODE, nmi=True)
    assert result.exit is Exit.TRIPLE_FAULT and result.error == f"triple fault (NMI at {CODE:#x})"


#: lgdt; far return into a 64-bit code segment (0x8); ss = 0x10; rbx = 0; idle: hlt; jmp idle.  At +0x40 the
#: NMI handler: inc rbx; hlt; iretq.  The GDT at +0x48, its descriptor at +0x60 (iretq needs real segments).
NMI_GUEST = (
    "0f0115590000006a08488d05030000005048cb66b810008ed031dbf4ebfd" + "00" * 34
    + "48ffc3f448cf6690" + "0000000000000000ffff0000009aaf00ffff00000092cf00" + "1700" + "4800010000000000"
)  # fmt: skip
IDLE, NMI_HANDLER = CODE + 0x1B, CODE + 0x40


@needs_block_hook
def test_nmis_stay_blocked_until_the_handler_returns_then_a_waiting_one_is_taken(rig: Rig) -> None:
    set_idt(rig, {2: gate(NMI_HANDLER)})
    rig.engine.uc.reg_write(x86.UC_X86_REG_RSP, STACK)
    rig.load(NMI_GUEST)
    assert rig.engine.run(CODE) == (Exit.HALTED, IDLE + 1, None, None)
    result = rig.engine.run(IDLE + 1, nmi=True)
    assert result == (Exit.HALTED, NMI_HANDLER + 4, None, None), "in the handler, halted"
    assert rig.gpr(RBX) == 1 and rig.engine.nmi_blocked and rig.engine.nmi_return == IDLE + 1
    rig.engine.nmi_waiting = True  # a second NMI came meanwhile: the runner cannot deliver it yet
    result = rig.engine.run(NMI_HANDLER + 4)
    assert result.exit is Exit.STOPPED and not rig.engine.nmi_blocked, "iretq went back: unblocked, and it stopped"
    rig.engine.clear_stop()  # as the runner does before each run
    rig.engine.nmi_waiting = False
    assert rig.engine.run(result.rip, nmi=True).rip == NMI_HANDLER + 4
    assert rig.gpr(RBX) == 2


def test_unassigned_memory_reads_zero_and_drops_writes_as_in_qemu(rig: Rig) -> None:
    # mov rax, 0x4000000000; mov qword [rax], -1; mov rbx, [rax]; mov rcx, [0x40000008]; hlt  (RAM is 16 MiB)
    rig.load("48 b8 00 00 00 00 40 00 00 00  48 c7 00 ff ff ff ff  48 8b 18  48 8b 0c 25 08 00 00 40  f4")
    rig.engine.uc.reg_write(x86.UC_X86_REG_RBX, 7)
    rig.engine.uc.reg_write(x86.UC_X86_REG_RCX, 7)
    assert rig.engine.run(CODE).exit is Exit.HALTED
    assert (rig.gpr(RBX), rig.gpr(RCX)) == (0, 0)
    assert rig.engine.unassigned.pages == 2


def test_fetch_from_unassigned_memory_is_an_invalid_opcode(rig: Rig) -> None:
    set_idt(rig, {6: gate(HANDLER)})
    rig.load("48 b8 00 00 00 00 50 00 00 00  ff e0")  # mov rax, 0x5000000000; jmp rax
    rig.load("f4", HANDLER)
    assert rig.engine.run(CODE).rip == HANDLER + 1
    assert frame(rig, 1) == [0x50_0000_0000]


def test_a_guest_sweeping_unassigned_memory_stops_with_an_emulator_error(rig: Rig) -> None:
    # rax = 0x4000000000; loop: mov rbx, [rax]; add rax, 0x1000; jmp loop
    rig.load("48 b8 00 00 00 00 40 00 00 00  48 8b 18  48 05 00 10 00 00  eb f5")
    result = rig.engine.run(CODE)
    assert result.exit is Exit.FAULT
    assert result.error is not None and "UC_ERR_READ_UNMAPPED" in result.error
    assert rig.engine.unassigned.pages == MAX_UNASSIGNED_PAGES


def test_boots_in_flat_long_mode_without_paging(rig: Rig) -> None:
    rig.load("f4")
    rig.engine.run(CODE)
    snapshot = rig.engine.snapshot(halted=True)
    assert snapshot.halted
    assert snapshot.efer & 0x500 == 0x500, "LME and LMA"
    assert snapshot.cr[0] & 1 == 1 and snapshot.cr[0] & 1 << 31 == 0, "PE on, PG off: virtual = physical"


def test_entry_registers_and_stack(rig: Rig) -> None:
    rig.engine.set_entry(Entry(rip=CODE, rsp=0x8000, rdi=1, rsi=APIC_ID, rdx=0xAF00, rcx=0xAFE0))
    rig.load("e8 00 00 00 00  58  f4")  # call next; pop rax; hlt
    rig.engine.run(CODE)
    snapshot = rig.engine.snapshot(halted=True)
    assert snapshot.gpr[RAX] == CODE + 5, "the return address pushed by the call"
    assert snapshot.gpr[RSP] == 0x8000
    assert int.from_bytes(rig.ram.read(0x8000 - 8, 8), "little") == CODE + 5, "the stack is guest RAM"
    assert (snapshot.gpr[RDI], snapshot.gpr[RSI], snapshot.gpr[RDX], snapshot.gpr[RCX]) == (1, APIC_ID, 0xAF00, 0xAFE0)


def test_flush_translations_runs_rewritten_code(rig: Rig) -> None:
    rig.load("b8 01 00 00 00  f4")  # mov eax,1; hlt
    rig.engine.run(CODE)
    assert rig.gpr(RAX) == 1
    rig.load("b8 02 00 00 00  f4")
    rig.engine.flush_translations()
    rig.engine.run(CODE)
    assert rig.gpr(RAX) == 2


# -- stops from another thread ----------------------------------------------------------------------


@needs_block_hook
def test_request_stop_ends_an_infinite_loop(rig: Rig) -> None:
    rig.load("eb fe")  # jmp $
    rig.engine.clear_stop()
    thread = stop_after_blocks(rig.engine, 1000)
    result = rig.engine.run(CODE)
    thread.join()
    assert result == (Exit.STOPPED, CODE, None, None)
    assert rig.engine.blocks_executed >= 1000


@needs_block_hook
def test_a_pending_stop_lands_before_the_first_instruction(rig: Rig) -> None:
    rig.load("48 ff c1  eb fe")  # inc rcx; jmp $
    rig.engine.request_stop()
    assert rig.engine.run(CODE) == (Exit.STOPPED, CODE, None, None)
    assert rig.gpr(RCX) == 0
    assert rig.engine.run(CODE).exit is Exit.STOPPED, "a stop stays requested until clear_stop()"
    rig.engine.clear_stop()
    thread = stop_after_blocks(rig.engine, 10)
    result = rig.engine.run(CODE)
    thread.join()
    assert result == (Exit.STOPPED, CODE + 3, None, None), "stopped at the start of the jmp $ block"
    assert rig.gpr(RCX) == 1


@needs_block_hook
def test_200_stops_and_resumes_never_repeat_an_instruction(rig: Rig) -> None:
    counter = 0x10_0000
    loop = CODE + 7
    rig.load(
        "bb 00 00 10 00"  # mov ebx, 0x100000
        "31 c9"  # xor ecx, ecx
        "48 ff 03"  # loop: inc qword [rbx]
        "48 ff c1"  # inc rcx
        "eb f8"  # jmp loop
    )
    rip = CODE
    for round_number in range(200):
        rig.engine.clear_stop()
        thread = stop_later(rig.engine, 0.0001 * (round_number % 5))
        result = rig.engine.run(rip)
        thread.join()
        assert result.exit is Exit.STOPPED, result
        assert result.rip in (CODE, loop), hex(result.rip)
        rip = result.rip
    memory_count = rig.ram.read_u64(counter)
    assert memory_count > 0
    assert memory_count == rig.gpr(RCX), "every inc [rbx] ran exactly as often as the inc rcx after it"


def test_without_the_block_hook_counted_slices_stop_exactly(parts: CPUParts, monkeypatch: pytest.MonkeyPatch) -> None:
    """No C compiler at install time: stops wait for the end of a counted slice, and stay exact."""
    monkeypatch.setattr(native, "available", False)
    ram = GuestRAM(16 << 20)
    lapic = new_object("apic")
    assert isinstance(lapic, LocalAPIC)
    engine = VCPUEngine(parts.model.engine, ram, PortBus(), lapic, parts.table)
    try:
        ram.write(CODE, bytes.fromhex("bb0000100031c948ff0348ffc1ebf8"))
        rip, stops = CODE, 0
        for round_number in range(100):
            engine.clear_stop()
            thread = stop_later(engine, 0.0001 * (round_number % 5))
            result = engine.run(rip)
            thread.join()
            assert result.exit in (Exit.STOPPED, Exit.SLICE), result
            stops += result.exit is Exit.STOPPED
            rip = result.rip
        assert stops > 0
        assert ram.read_u64(0x10_0000) == engine.snapshot(halted=False).gpr[RCX] > 0
    finally:
        engine.close()


@needs_block_hook
def test_instructions_are_counted_exactly(rig: Rig) -> None:
    # mov ecx, 1000; loop: dec ecx; jnz loop; mov eax, 7; hlt  ->  1 + 2 * 1000 + 1 + 1 instructions
    rig.load("b9 e8 03 00 00  ff c9  75 fc  b8 07 00 00 00  f4")
    assert rig.engine.instructions_executed == 0
    assert rig.engine.run(CODE).exit is Exit.HALTED
    assert rig.engine.instructions_executed == 2003
    rig.engine.run(CODE)
    assert rig.engine.instructions_executed == 4006, "cached block counts are reused"
    rig.load("b9 02 00 00 00  ff c9  75 fc  90 90 f4")  # rewritten code at the same address
    rig.engine.flush_translations()
    rig.engine.run(CODE)
    assert rig.engine.instructions_executed == 4006 + 1 + 4 + 3
    rig.load("b9 02 00 00 00  ff c9  75 fc  0f 1f 00 f4")  # same block sizes, one instruction fewer
    rig.engine.flush_translations()
    rig.engine.run(CODE)
    assert rig.engine.instructions_executed == 4014 + 1 + 4 + 2


def test_registers_survive_a_snapshot_and_restore(rig: Rig, parts: CPUParts) -> None:
    # mov rax, 0x1122334455667788; mov r15, 7; fld1; fldpi; hlt
    rig.load("48 b8 88 77 66 55 44 33 22 11  49 c7 c7 07 00 00 00  d9 e8  d9 eb  f4")
    assert rig.engine.run(CODE).exit is Exit.HALTED
    saved = rig.engine.snapshot(halted=True)
    fresh = VCPUEngine(parts.model.engine, rig.ram, rig.bus, rig.lapic, parts.table)
    try:
        fresh.restore_registers(saved)
        again = fresh.snapshot(halted=True)
    finally:
        fresh.close()
    assert again == saved
    assert again.gpr[RAX] == 0x1122334455667788 and again.rip == CODE + 22
    assert again.fpr != saved.powered_off().fpr, "the x87 stack (1, pi) came back"
