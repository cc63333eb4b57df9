"""Kernel names for vCPU threads, as QEMU's debug-threads gives them (``CPU 0/TCG``).

Apart from qmpd.vcpu.native (the block hook, bound to Unicorn's library): a vCPU thread is
named when it starts, which under ``-S`` is long before any engine exists.
"""

from __future__ import annotations

import ctypes

_PR_SET_NAME = 15
_LIBC = ctypes.CDLL(None, use_errno=True)


def name_thread(name: str) -> None:
    """Give the calling thread its kernel name (``ps -T``, /proc/.../comm), as QEMU's debug-threads does."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
