"""Kernel names for vCPU threads, as QEMU's debug-threads gives them (``CPU 0/TCG``).

Apart from qmpd.vcpu.native (the block hook, bound to Unicorn's library): a vCPU thread is
named when it starts, which under ``-S`` is long before any engine exists.  The name is written
to the thread's /proc comm file, which sets what prctl(PR_SET_NAME) sets, without ctypes (~3 ms
of a start's imports).
"""

from __future__ import annotations

#: The kernel keeps 15 bytes of a name (TASK_COMM_LEN less its NUL).
COMM_BYTES = 15


def name_thread(name: str) -> None:
    """Give the calling thread its kernel name (``ps -T``, /proc/.../comm), as QEMU's debug-threads does;
    without /proc the thread keeps its name."""
    try:
        with open("/proc/thread-self/comm", "wb", buffering=0) as comm:
            comm.write(name.encode()[:COMM_BYTES])
    except OSError:
        pass
