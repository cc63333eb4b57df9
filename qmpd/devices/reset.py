"""The reset control register of QEMU's pc and q35 boards, port 0xCF9 (PIIX3 RCR / ICH9 RST_CNT).

Writing a value with bit 2 set resets the machine; bits 1 (and 3 on ICH9) are
kept.  It becomes QEMU's guest reset request (RESET guest-reset, or -action
reboot), as does the other way a PC guest resets itself, the keyboard
controller's reset pulse (qmpd.devices.i8042).
"""

from __future__ import annotations

from collections.abc import Callable

RESET_CONTROL_PORT = 0xCF9
_RESET_BIT = 4


class ResetControl:
    """Port 0xCF9; ``on_reset`` runs on a vCPU thread (the board posts it to the loop)."""

    def __init__(self, on_reset: Callable[[], None], kept_bits: int) -> None:
        self._on_reset = on_reset
        self._kept_bits = kept_bits
        self._value = 0

    def io_read(self, offset: int, size: int) -> int:
        return self._value

    def io_write(self, offset: int, size: int, value: int) -> None:
        if value & _RESET_BIT:
            self._on_reset()
            return
        self._value = value & self._kept_bits

    def reset_registers(self) -> None:
        self._value = 0
