"""The compiled block hook (_blockhook.c) and the per-vCPU control block it reads.

Loaded with ctypes; Unicorn's ``uc_emu_stop`` is handed to it once.  If the
shared object is missing (no compiler at install time), ``available`` is
False and engines fall back to Unicorn's counted slices, which are exact
too, but cost a call per guest instruction.
"""

from __future__ import annotations

import ctypes
import os

from unicorn import UC_HOOK_BLOCK, Uc
from unicorn.unicorn_const import UC_CTL_IO_READ_WRITE, UC_CTL_TB_REQUEST_CACHE
from unicorn.unicorn_py3.arch.types import uc_hook_h
from unicorn.unicorn_py3.unicorn import uclib

from qmpd.log import get_logger

log = get_logger(__name__)


#: QMPD_TB_ENTRIES x sizeof(struct qmpd_tb_entry) in _blockhook.c.
TB_TABLE_BYTES = 1024 * 16
#: uc_ctl's code for "request the translation block at an address" (read+write, two arguments).
_REQUEST_CACHE = (UC_CTL_IO_READ_WRITE << 30) | (2 << 26) | UC_CTL_TB_REQUEST_CACHE


class BlockControl(ctypes.Structure):
    """``struct qmpd_vcpu_control``: shared between the loop side and the C hook."""

    _fields_ = [
        ("stop", ctypes.c_int32),
        ("stopped_by_hook", ctypes.c_int32),
        ("budget", ctypes.c_int64),
        ("blocks", ctypes.c_uint64),
        ("instructions", ctypes.c_uint64),
        ("tbs", ctypes.c_void_p),
        ("last_address", ctypes.c_uint64),
        ("last_size", ctypes.c_uint32),
        ("last_icount", ctypes.c_uint32),
        # 128 bytes in all: each vCPU writes its counters every block; padding keeps two vCPUs'
        # control blocks off one cache line (false sharing halves two-vCPU throughput).
        ("pad", ctypes.c_uint8 * 72),
    ]

    def __init__(self) -> None:
        super().__init__()
        #: The hook's (address, size) -> instruction count table; kept alive with the control block.
        self.tb_table = (ctypes.c_uint8 * TB_TABLE_BYTES)()
        self.tbs = ctypes.cast(self.tb_table, ctypes.c_void_p).value

    def forget_blocks(self) -> None:
        """Drop the cached instruction counts (the code they describe was rewritten)."""
        self.last_icount = 0
        ctypes.memset(self.tb_table, 0, TB_TABLE_BYTES)


def _load() -> ctypes.CDLL | None:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_blockhook.so")
    try:
        library = ctypes.CDLL(path)
    except OSError:
        log.warning("vcpu.blockhook_missing", path=path, fallback="counted slices")
        return None
    library.qmpd_blockhook_init(
        ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p),
        ctypes.cast(uclib.uc_ctl, ctypes.c_void_p),
        ctypes.c_uint32(_REQUEST_CACHE),
    )
    return library


_LIBRARY = _load()
#: Whether exact, cheap block-boundary stops are available.
available = _LIBRARY is not None


def install_block_hook(uc: Uc, control: BlockControl) -> uc_hook_h:
    """Hook every block of ``uc`` with the C stopper reading ``control``."""
    assert _LIBRARY is not None
    handle = uc_hook_h()
    status = uclib.uc_hook_add(
        uc._uch,
        ctypes.byref(handle),
        UC_HOOK_BLOCK,
        ctypes.cast(_LIBRARY.qmpd_block_hook, ctypes.c_void_p),
        ctypes.cast(ctypes.pointer(control), ctypes.c_void_p),
        ctypes.c_uint64(1),
        ctypes.c_uint64(0),
    )
    if status != 0:
        raise RuntimeError(f"uc_hook_add(UC_HOOK_BLOCK) failed with {status}")
    return handle
