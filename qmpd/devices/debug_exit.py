"""isa-debug-exit: a guest write ends the emulator with status (value << 1) | 1, as QEMU's."""

from __future__ import annotations

from collections.abc import Callable


class DebugExit:
    """The device; ``on_exit`` receives the process exit status (called from a vCPU thread)."""

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def io_read(self, offset: int, size: int) -> int:
        return 0

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._on_exit(((value << 1) | 1) & 0xFF)
