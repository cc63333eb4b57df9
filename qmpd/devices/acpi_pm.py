"""The ACPI PM1a event and control registers and the PM timer, as QEMU's PIIX4 PM (pc) and ICH9 LPC (q35).

Both chipsets put them at the PM base the firmware programs, 0x600 on QEMU's machines:

====  ====  ==================================================================================
off   size  register
====  ====  ==================================================================================
0     2     PM1_STS: bit 0 timer, bit 8 power button, bit 15 wake (write 1 to clear)
2     2     PM1_EN: which status bits raise the SCI
4     2     PM1_CNT: bit 0 SCI_EN; writing SLP_EN (bit 13) enters the sleep state SLP_TYP (bits 12:10)
8     4     PM_TMR: a 24-bit counter at 3.579545 MHz (read only)
====  ====  ==================================================================================

``system_powerdown`` presses the power button: PWRBTN_STS is set only if the guest enabled PWRBTN_EN (as
QEMU's acpi_pm1_evt_power_down), then the SCI wakes the vCPUs.  A guest that writes SLP_EN with SLP_TYP 0
asks for soft-off (S5), which QEMU turns into a guest shutdown; the other sleep types are suspend states
qmpd does not emulate, and are ignored.  vCPU threads access the registers, so they have a lock; the
callbacks run on the vCPU thread (the board posts them to the event loop).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qmpd.vmstate import U16, fields, integer

if TYPE_CHECKING:
    from qmpd.devices.saved import PM1Registers

#: Where QEMU's firmware (SeaBIOS) puts the PM registers on pc and q35.
PM_BASE = 0x600
#: Registers mapped at PM_BASE.
PM1_LEN = 12
PWRBTN = 1 << 8
SLP_EN = 1 << 13
SLP_TYP_SHIFT = 10
#: SLP_TYP that QEMU's ACPI tables give _S5 (soft-off).
SLP_TYP_SOFT_OFF = 0
PM_TIMER_HZ = 3_579_545
_STS, _EN, _CNT, _TMR = 0, 2, 4, 8


class PM1Block:
    """PM1a_STS, PM1a_EN, PM1a_CNT and PM_TMR."""

    #: Its section of a saved machine (qmpd.vmstate): the registers, not the timer (the host's clock).
    state_name = "pm"
    state_version = 1

    def __init__(self, *, on_sci: Callable[[], None], on_soft_off: Callable[[], None]) -> None:
        self._on_sci = on_sci
        self._on_soft_off = on_soft_off
        self._lock = threading.Lock()
        self.status = 0
        self.enable = 0
        self.control = 0

    def press_power_button(self) -> bool:
        """The power button: True if the guest had enabled it (then the SCI was raised)."""
        with self._lock:
            if not self.enable & PWRBTN:
                return False
            self.status |= PWRBTN
        self._on_sci()
        return True

    def reset_registers(self) -> None:
        """Power-on values (QEMU's acpi_pm1_evt_reset and acpi_pm1_cnt_reset)."""
        with self._lock:
            self.status = self.enable = self.control = 0

    def save_state(self) -> dict[str, Any]:
        with self._lock:
            return {"status": self.status, "enable": self.enable, "control": self.control}

    def check_state(self, state: Any, version: int) -> PM1Registers:
        from qmpd.devices.saved import PM1Registers  # with a restore only

        registers = fields(state, self.state_name)
        status, enable, control = (integer(registers, name, U16, "pm") for name in ("status", "enable", "control"))
        return PM1Registers(status, enable, control)

    def load_state(self, checked: PM1Registers) -> None:
        with self._lock:
            self.status, self.enable, self.control = checked.status, checked.enable, checked.control

    def io_read(self, offset: int, size: int) -> int:
        with self._lock:
            window = b"".join(
                value.to_bytes(2, "little") for value in (self.status, self.enable, self.control, 0)
            ) + _timer().to_bytes(4, "little")
        return int.from_bytes(window[offset : offset + size], "little")

    def io_write(self, offset: int, size: int, value: int) -> None:
        soft_off = False
        with self._lock:
            for register, (mask, written) in _split(offset, size, value).items():
                if register == _STS:
                    self.status &= ~written
                elif register == _EN:
                    self.enable = (self.enable & ~mask) | written
                elif register == _CNT:
                    soft_off = self._write_control((self.control & ~mask) | written)
            fire = bool(self.status & self.enable)
        if fire:
            self._on_sci()
        if soft_off:
            self._on_soft_off()

    def _write_control(self, value: int) -> bool:
        """PM1_CNT (lock held): keep it without SLP_EN; True if the guest asked for soft-off."""
        self.control = value & ~SLP_EN
        return bool(value & SLP_EN) and (value >> SLP_TYP_SHIFT) & 7 == SLP_TYP_SOFT_OFF


def _split(offset: int, size: int, value: int) -> dict[int, tuple[int, int]]:
    """A write of ``size`` bytes at ``offset``, per 16-bit register it touches: (bits written, their value)."""
    registers: dict[int, tuple[int, int]] = {}
    for i in range(size):
        register, shift = (offset + i) & ~1, 8 * ((offset + i) & 1)
        mask, written = registers.get(register, (0, 0))
        registers[register] = (mask | 0xFF << shift, written | (value >> (8 * i) & 0xFF) << shift)
    return registers


def _timer() -> int:
    """The PM timer: 3.579545 MHz since an arbitrary point, 24 bits wide (as QEMU's, TMR_VAL_EXT clear)."""
    return time.monotonic_ns() * PM_TIMER_HZ // 1_000_000_000 & 0xFFFFFF
