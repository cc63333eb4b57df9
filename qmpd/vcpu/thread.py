"""A vCPU's host thread.

Every realized CPU has its own thread, as under QEMU's multi-threaded TCG, and
query-cpus-fast reports that thread's native id.  The thread parks until it
is asked to stop; guest execution (qmpd.vcpu.engine) runs inside it.
"""

from __future__ import annotations

import threading


class VCPUThread:
    """One vCPU's thread (named "CPU N/TCG" like QEMU's with debug-threads=on)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._wake = threading.Condition()
        self._stopping = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"CPU {index}/TCG", daemon=True)

    def start(self) -> None:
        """Start the thread and wait until its native id is known."""
        self._thread.start()
        self._started.wait()

    @property
    def native_id(self) -> int:
        """The kernel thread id (thread-id in query-cpus-fast)."""
        native = self._thread.native_id
        assert native is not None
        return native

    def _run(self) -> None:
        self._started.set()
        with self._wake:
            while not self._stopping:
                self._wake.wait()

    def stop(self) -> None:
        """Ask the thread to end and wait for it."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join()
