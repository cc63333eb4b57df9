"""What a vCPU's engine reports, without the engine: its exits, its run results, its registers.

Apart from qmpd.vcpu.engine so that the machine, dumps, HMP and migration can name a CPU's state
without importing Unicorn (its shared library and ctypes prototypes cost a start-up that never
runs a vCPU, such as libvirt's probe, tens of milliseconds).
"""

# Annotations are not postponed here: its NamedTuples are made at every start (tests/unit/test_startup_imports.py).

import enum
from typing import Any, NamedTuple

from qmpd.vmstate import U64, U128, boolean, fields, integer, integers, invalid, items


class Exit(enum.Enum):
    """Why emu_start returned."""

    STOPPED = "stopped"  # a stop was requested (pause, budget, INIT, exit)
    HALTED = "halted"  # the guest executed HLT
    SLICE = "slice"  # a counted slice ended (no block hook)
    FAULT = "fault"  # Unicorn reported an error qmpd cannot turn into a guest exception
    TRIPLE_FAULT = "triple-fault"  # an exception nothing could handle: the CPU shut down
    INTERNAL_ERROR = "internal-error"  # a hook raised (a device model's bug): emulation cannot go on


class HookFailure(Exception):
    """A hook raised inside emu_start (its ``__cause__``): qmpd cannot go on emulating this vCPU."""

    def __init__(self, device: str, access: str) -> None:
        super().__init__(f"{device} failed on {access}")
        #: What raised (a device's class name) and the guest access that reached it.
        self.device = device
        self.access = access


class RunResult(NamedTuple):
    """Outcome of one run."""

    exit: Exit
    rip: int
    error: str | None
    #: Set for Exit.INTERNAL_ERROR: what raised, with the original exception as its cause.
    failure: HookFailure | None = None


#: General registers in QEMU's ``info registers`` order.
GPR_NAMES = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip
SEGMENT_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
MSR_EFER = 0xC0000080


#: The registers' section of a saved CPU (qmpd.vmstate): CPUSnapshot.save_state and check_state.
REGISTERS_STATE_NAME = "registers"
REGISTERS_STATE_VERSION = 1
#: Each register field of CPUSnapshot: None for one integer, else the tuple's length (pairs for fpr).
_REGISTER_SHAPES: dict[str, int | None] = {
    "gpr": 16, "rip": None, "rflags": None, "selectors": 6, "fs_base": None, "gs_base": None, "ldtr": 4,
    "tr": 4, "gdtr": 2, "idtr": 2, "cr": 4, "dr": 6, "efer": None, "fpcw": None, "fpsw": None,
    "fptag": None, "mxcsr": None, "fpr": 8, "xmm": 16,
}  # fmt: skip


class CPUSnapshot(NamedTuple):
    """A vCPU's architectural state at one instant (for ``info registers`` and address translation)."""

    gpr: tuple[int, ...]
    rip: int
    rflags: int
    #: Selectors of ES, CS, SS, DS, FS, GS, then the FS and GS bases.
    selectors: tuple[int, ...]
    fs_base: int
    gs_base: int
    #: (selector, base, limit, flags) of LDTR and TR; (base, limit) of GDTR and IDTR.
    ldtr: tuple[int, int, int, int]
    tr: tuple[int, int, int, int]
    gdtr: tuple[int, int]
    idtr: tuple[int, int]
    cr: tuple[int, int, int, int]  # CR0, CR2, CR3, CR4
    dr: tuple[int, ...]  # DR0-DR3, DR6, DR7
    efer: int
    fpcw: int
    fpsw: int
    fptag: int
    mxcsr: int
    fpr: tuple[tuple[int, int], ...]
    xmm: tuple[int, ...]
    halted: bool

    def save_state(self) -> dict[str, Any]:
        """The registers as a saved CPU's section (JSON lists for the tuples)."""
        return self._asdict()

    @staticmethod
    def check_state(state: Any, version: int, where: str = REGISTERS_STATE_NAME) -> "CPUSnapshot":
        """A saved CPU's registers, every field's shape and range checked."""
        registers = fields(state, where)
        values: dict[str, Any] = {}
        for name, length in _REGISTER_SHAPES.items():
            if length is None:
                values[name] = integer(registers, name, U64, where)
                continue
            entries = items(registers, name, length, where)
            if len(entries) != length:
                raise invalid(f"{where}.{name}", f"expected {length} values")
            if name == "fpr":
                values[name] = tuple(integers(entry, 2, U64, f"{where}.fpr") for entry in entries)
            else:
                values[name] = integers(entries, length, U128 if name == "xmm" else U64, f"{where}.{name}")
        values["halted"] = boolean(registers, "halted", where)
        return CPUSnapshot(**values)

    @staticmethod
    def powered_off() -> "CPUSnapshot":
        """A CPU that has not started: registers at their power-on values, halted."""
        return CPUSnapshot(
            (0,) * 16, 0, 2, (0,) * 6, 0, 0, (0, 0, 0xFFFF, 0x8200), (0, 0, 0xFFFF, 0x8B00), (0, 0xFFFF),
            (0, 0xFFFF), (0x60000010, 0, 0, 0), (0, 0, 0, 0, 0xFFFF0FF0, 0x400), 0, 0x37F, 0, 0xFFFF, 0x1F80,
            ((0, 0),) * 8, (0,) * 16, True,
        )  # fmt: skip
