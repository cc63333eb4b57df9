"""The two ways a PC guest resets itself, as QEMU's pc and q35 boards decode them.

- The reset control register at port 0xCF9 (PIIX3 RCR / ICH9 RST_CNT): writing
  a value with bit 2 set resets the machine; bits 1 (and 3 on ICH9) are kept.
- The keyboard controller's "pulse reset line" command: 0xFE written to port
  0x64.  qmpd has no i8042; only this command is decoded, and the status port
  reads as an idle controller (command/unlocked bits set, no data).
Either becomes QEMU's guest reset request (RESET guest-reset, or -action reboot).
"""

from __future__ import annotations

from collections.abc import Callable

RESET_CONTROL_PORT = 0xCF9
KEYBOARD_COMMAND_PORT = 0x64
_RESET_BIT = 4
_PULSE_RESET = 0xFE
_IDLE_STATUS = 0x18


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


class KeyboardResetLine:
    """Port 0x64: the i8042's reset pulse command."""

    def __init__(self, on_reset: Callable[[], None]) -> None:
        self._on_reset = on_reset

    def io_read(self, offset: int, size: int) -> int:
        return _IDLE_STATUS

    def io_write(self, offset: int, size: int, value: int) -> None:
        if value & 0xFF == _PULSE_RESET:
            self._on_reset()
