"""The i8042 keyboard controller of QEMU's pc and q35 boards: ports 0x60 (data) and 0x64 (status/command).

Reading the status port tells whether a byte waits in the output buffer (OBF,
bit 0); reading the data port takes it.  The byte comes from the PS/2 keyboard
(qmpd.devices.ps2) or is the controller's own reply to a command (0x20 read
command byte, 0xAA self test, ...).  Writing 0x60 to the command port and then
a byte to the data port sets the command byte, whose bit 6 makes the keyboard's
scancodes come out translated to set 1 and bit 4 holds keyboard bytes back; a
byte written to the data port without a command goes to the keyboard.

Pulsing the output port's bit 0 (0xFE, and every 0xF0-0xFF command with bit 0
clear, or writing the output port with bit 0 clear) resets the machine, as
QEMU does.  QEMU also raises IRQ1 when a keyboard byte waits; qmpd has no
interrupt controller for it, so guests poll OBF (the bundled firmware does, on
both emulators).  There is no PS/2 mouse: mouse commands are accepted and get
no answer.

vCPU threads reach the ports and the event loop sends keys, so one lock guards
the controller and its keyboard; ``on_reset`` runs on a vCPU thread (the board
posts it to the loop).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qmpd.devices.ps2 import PS2Keyboard
from qmpd.vmstate import U8, fields, integer

if TYPE_CHECKING:
    from qmpd.devices.saved import SavedI8042

DATA_PORT = 0x60
COMMAND_PORT = 0x64

STATUS_OBF = 0x01
STATUS_SELFTEST = 0x04
STATUS_CMD = 0x08
STATUS_UNLOCKED = 0x10
STATUS_MOUSE_OBF = 0x20
MODE_KBD_INT = 0x01
MODE_MOUSE_INT = 0x02
MODE_DISABLE_KBD = 0x10
MODE_DISABLE_MOUSE = 0x20
MODE_TRANSLATE = 0x40
OUT_RESET, OUT_A20, OUT_ONES, OUT_OBF, OUT_MOUSE_OBF = 0x01, 0x02, 0xCC, 0x10, 0x20
#: What waits for the output buffer (QEMU's pending bits): a controller reply, keyboard data.
_PENDING_CTRL = 0x04
_PENDING_KBD = MODE_DISABLE_KBD
_PENDING_ANY = _PENDING_CTRL | _PENDING_KBD
#: Commands that take a byte through the data port next.
_WRITE_MODE, _WRITE_OBUF, _WRITE_AUX_OBUF, _WRITE_OUTPORT, _WRITE_MOUSE = 0x60, 0xD2, 0xD3, 0xD1, 0xD4


class _Port:
    """One of the controller's two ports on the port bus."""

    def __init__(self, read: Callable[[], int], write: Callable[[int], None]) -> None:
        self._read = read
        self._write = write

    def io_read(self, offset: int, size: int) -> int:
        return self._read()

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._write(value & 0xFF)


class I8042:
    """The controller (QEMU's KBDState with its extended state) and its keyboard."""

    #: Its section of a saved machine (qmpd.vmstate).
    state_name = "i8042"
    state_version = 1

    def __init__(self, on_reset: Callable[[], None], keyboard: PS2Keyboard | None = None) -> None:
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self.keyboard = keyboard or PS2Keyboard()
        self.data_port = _Port(self._read_data, self._write_data)
        self.command_port = _Port(self._read_status, self._write_command)
        self.obdata = 0
        self.cbdata = 0
        #: Where the byte in the output buffer comes from (_PENDING_CTRL or _PENDING_KBD): QEMU's obsrc.
        self.source = 0
        self.reset_registers()

    def reset_registers(self) -> None:
        """Power-on (QEMU's kbd_reset and ps2_kbd_reset)."""
        with self._lock:
            self.mode = MODE_KBD_INT | MODE_MOUSE_INT
            self.status = STATUS_CMD | STATUS_UNLOCKED
            self.outport = OUT_RESET | OUT_A20 | OUT_ONES
            self.write_cmd = 0
            self.pending = 0
            self.keyboard.reset()

    # -- the event loop's side ----------------------------------------------------------------

    def key(self, qcode: str, down: bool) -> None:
        """A key event for the keyboard (send-key)."""
        with self._lock:
            self.keyboard.key(qcode, down)
            self._keyboard_changed()

    # -- output buffer (lock held) ------------------------------------------------------------

    def _keyboard_changed(self) -> None:
        if self.keyboard.has_data:
            self.pending |= _PENDING_KBD
        else:
            self.pending &= ~_PENDING_KBD
        self._fill_if_empty()

    def _waiting(self) -> int:
        """Pending sources the controller may deliver (keyboard bytes wait while it is disabled)."""
        return self.pending & ~(self.mode & MODE_DISABLE_KBD)

    def _fill_if_empty(self) -> None:
        """QEMU's kbd_safe_update_irq: fill the output buffer if it is empty and something waits."""
        if not self.status & STATUS_OBF and self._waiting():
            self._fill()

    def _fill(self) -> None:
        """QEMU's kbd_update_irq: OBF reflects whether something waits (the controller's reply first)."""
        self.status &= ~(STATUS_OBF | STATUS_MOUSE_OBF)
        self.outport &= ~(OUT_OBF | OUT_MOUSE_OBF)
        waiting = self._waiting()
        if waiting:
            self.status |= STATUS_OBF
            self.outport |= OUT_OBF
            self.source = _PENDING_CTRL if waiting & _PENDING_CTRL else _PENDING_KBD

    def _queue_reply(self, value: int) -> None:
        """A byte from the controller itself."""
        self.cbdata = value & 0xFF
        self.pending |= _PENDING_CTRL
        self._fill_if_empty()

    # -- the guest's side (vCPU threads) ------------------------------------------------------

    def _read_status(self) -> int:
        with self._lock:
            return self.status

    def _read_data(self) -> int:
        with self._lock:
            if self.status & STATUS_OBF:
                self.status &= ~(STATUS_OBF | STATUS_MOUSE_OBF)
                self.outport &= ~(OUT_OBF | OUT_MOUSE_OBF)
                if self.source == _PENDING_CTRL:
                    self.obdata = self.cbdata
                    self.pending &= ~_PENDING_CTRL
                    if self._waiting():
                        self._fill()
                elif self.keyboard.has_data:
                    self.obdata = self.keyboard.read()
                    self._keyboard_changed()
            return self.obdata

    def _write_command(self, value: int) -> None:
        reset = False
        with self._lock:
            if value & 0xF0 == 0xF0:  # pulse output port bits: only bit 0 (reset) does anything
                reset = not value & 1
            elif value == 0x20:
                self._queue_reply(self.mode)
            elif value in (_WRITE_MODE, _WRITE_OBUF, _WRITE_AUX_OBUF, _WRITE_MOUSE, _WRITE_OUTPORT):
                self.write_cmd = value
            elif value == 0xA7:
                self.mode |= MODE_DISABLE_MOUSE
            elif value == 0xA8:
                self.mode &= ~MODE_DISABLE_MOUSE
                self._fill_if_empty()
            elif value in (0xA9, 0xAB):  # mouse / keyboard interface test: passed
                self._queue_reply(0x00)
            elif value == 0xAA:  # self test: passed
                self.status |= STATUS_SELFTEST
                self._queue_reply(0x55)
            elif value == 0xAD:
                self.mode |= MODE_DISABLE_KBD
            elif value == 0xAE:
                self.mode &= ~MODE_DISABLE_KBD
                self._fill_if_empty()
            elif value == 0xC0:
                self._queue_reply(0x80)
            elif value == 0xD0:
                self._queue_reply(self.outport)
            elif value == 0xDF:
                self.outport |= OUT_A20
            elif value == 0xDD:
                self.outport &= ~OUT_A20
        if reset:
            self._on_reset()

    def _write_data(self, value: int) -> None:
        reset = False
        with self._lock:
            command, self.write_cmd = self.write_cmd, 0
            if command == 0:
                self.keyboard.write(value)
                self.mode &= ~MODE_DISABLE_KBD  # sending to the keyboard enables it again
                self._keyboard_changed()
            elif command == _WRITE_MODE:
                self.mode = value
                self.keyboard.translate = bool(value & MODE_TRANSLATE)
                self._fill_if_empty()
            elif command == _WRITE_OBUF:
                self._queue_reply(value)
            elif command == _WRITE_OUTPORT:
                self.outport = value
                reset = not value & OUT_RESET
            elif command == _WRITE_MOUSE:
                self.mode &= ~MODE_DISABLE_MOUSE  # no mouse answers
        if reset:
            self._on_reset()

    # -- saved state ------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "status": self.status,
                "mode": self.mode,
                "outport": self.outport,
                "write_cmd": self.write_cmd,
                "pending": self.pending,
                "source": self.source,
                "cbdata": self.cbdata,
                "obdata": self.obdata,
                "keyboard": self.keyboard.save_state(),
            }

    def check_state(self, state: Any, version: int) -> SavedI8042:
        from qmpd.devices.saved import SavedI8042  # with a restore only

        saved = fields(state, self.state_name)
        values = {name: integer(saved, name, U8, self.state_name) for name in ("status", "mode", "outport")}
        return SavedI8042(
            **values,
            write_cmd=integer(saved, "write_cmd", U8, self.state_name),
            pending=integer(saved, "pending", U8, self.state_name) & _PENDING_ANY,
            source=integer(saved, "source", U8, self.state_name) & _PENDING_ANY,
            cbdata=integer(saved, "cbdata", U8, self.state_name),
            obdata=integer(saved, "obdata", U8, self.state_name),
            keyboard=PS2Keyboard.check_state(saved.get("keyboard"), f"{self.state_name}.keyboard"),
        )

    def load_state(self, checked: SavedI8042) -> None:
        with self._lock:
            self.status, self.mode, self.outport = checked.status, checked.mode, checked.outport
            self.write_cmd, self.pending, self.source = checked.write_cmd, checked.pending, checked.source
            self.cbdata, self.obdata = checked.cbdata, checked.obdata
            self.keyboard.load_state(checked.keyboard)
