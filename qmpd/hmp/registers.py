"""``info registers``: a vCPU's state in the layout of QEMU's x86_cpu_dump_state (64-bit mode).

qmpd's vCPUs always run in long mode, so the 64-bit layout is the one used.
Unicorn does not expose the hidden part of segment registers; the base,
limit and attributes shown are those of the flat 64-bit segments every qmpd
vCPU starts with (FS and GS show their real bases).
"""

from __future__ import annotations

from qmpd.vcpu.snapshot import CPUSnapshot

_GPR_LABELS = (
    "RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP", "R8 ", "R9 ", "R10", "R11", "R12", "R13", "R14", "R15",
)  # fmt: skip
_FLAGS = ((1 << 10, "D"), (1 << 11, "O"), (1 << 7, "S"), (1 << 6, "Z"), (1 << 4, "A"), (1 << 2, "P"), (1 << 0, "C"))
#: (attributes, description) of the flat segments: 64-bit code, data.
_CODE64 = (0x00A09B00, " DPL=0 CS64 [-RA]")
_DATA = (0x00C09300, " DPL=0 DS   [-WA]")
_LDT = (0x00008200, " DPL=0 LDT")
_TSS64_BUSY = (0x00008B00, " DPL=0 TSS64-busy")


def _segment(name: str, selector: int, base: int, limit: int, attributes: tuple[int, str]) -> str:
    flags, text = attributes
    return f"{name:<3}={selector:04x} {base:016x} {limit:08x} {flags & 0x00FFFF00:08x}{text}\n"


def format_registers(index: int, cpu: CPUSnapshot) -> str:
    """The text QEMU prints for one CPU (its ``\\nCPU#n\\n`` header included)."""
    out = [f"\nCPU#{index}\n"]
    for row in range(4):
        cells = [f"{_GPR_LABELS[i]}={cpu.gpr[i]:016x}" for i in range(row * 4, row * 4 + 4)]
        out.append(" ".join(cells) + "\n")
    flags = "".join(letter if cpu.rflags & bit else "-" for bit, letter in _FLAGS)
    cpl = cpu.selectors[1] & 3
    out.append(f"RIP={cpu.rip:016x} RFL={cpu.rflags:08x} [{flags}] CPL={cpl} II=0 A20=1 SMM=0 HLT={int(cpu.halted)}\n")
    bases = {"FS": cpu.fs_base, "GS": cpu.gs_base}
    for name, selector in zip(("ES", "CS", "SS", "DS", "FS", "GS"), cpu.selectors, strict=True):
        attributes = _CODE64 if name == "CS" else _DATA
        out.append(_segment(name, selector, bases.get(name, 0), 0xFFFFFFFF, attributes))
    out.append(_segment("LDT", cpu.ldtr[0], cpu.ldtr[1], cpu.ldtr[2] or 0xFFFF, _LDT))
    out.append(_segment("TR", cpu.tr[0], cpu.tr[1], cpu.tr[2] or 0xFFFF, _TSS64_BUSY))
    out.append(f"GDT=     {cpu.gdtr[0]:016x} {cpu.gdtr[1]:08x}\n")
    out.append(f"IDT=     {cpu.idtr[0]:016x} {cpu.idtr[1]:08x}\n")
    cr0, cr2, cr3, cr4 = cpu.cr
    out.append(f"CR0={cr0:08x} CR2={cr2:016x} CR3={cr3:016x} CR4={cr4:08x}\n")
    out.append("".join(f"DR{n}={cpu.dr[n]:016x} " for n in range(4)) + "\n")
    out.append(f"DR6={cpu.dr[4]:016x} DR7={cpu.dr[5]:016x}\n")
    out.append(f"EFER={cpu.efer:016x}\n")
    # The abridged tag word: bit n set unless register n is empty (full tag 0b11).
    ftw = sum(1 << n for n in range(8) if (cpu.fptag >> (2 * n)) & 3 != 3)
    top = (cpu.fpsw >> 11) & 7
    out.append(f"FCW={cpu.fpcw:04x} FSW={cpu.fpsw:04x} [ST={top}] FTW={ftw:02x} MXCSR={cpu.mxcsr:08x}\n")
    for n, (mantissa, exponent) in enumerate(cpu.fpr):
        out.append(f"FPR{n}={mantissa:016x} {exponent:04x}" + ("\n" if n & 1 else " "))
    for n, value in enumerate(cpu.xmm):
        out.append(f"XMM{n:02d}={value >> 64:016x} {value & 0xFFFF_FFFF_FFFF_FFFF:016x}" + ("\n" if n & 1 else " "))
    return "".join(out)


#: QEMU's x86 monitor_defs order of the general registers (``esp|sp``: either name).
_MONITOR_GPRS = (
    ("eax", 0), ("ecx", 2), ("edx", 3), ("ebx", 1), ("esp", 7), ("sp", 7), ("ebp", 6), ("fp", 6), ("esi", 4),
    ("edi", 5), *((f"r{n}", n) for n in range(8, 16)),
)  # fmt: skip


def monitor_registers(cpu: CPUSnapshot) -> dict[str, int]:
    """The ``$name`` values of HMP expressions (QEMU's x86 monitor_defs): general registers, eflags, eip,
    each segment's ``.base`` and ``.limit``, and ``pc`` (the linear address of the next instruction)."""
    values = {name: cpu.gpr[index] for name, index in _MONITOR_GPRS}
    values.update(eflags=cpu.rflags, eip=cpu.rip, pc=cpu.rip)  # CS's base is 0 in long mode
    bases = {"fs": cpu.fs_base, "gs": cpu.gs_base}
    for name in ("es", "cs", "ss", "ds", "fs", "gs"):
        values[f"{name}.base"] = bases.get(name, 0)
        values[f"{name}.limit"] = 0xFFFFFFFF
    return values
