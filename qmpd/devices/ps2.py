"""The PS/2 keyboard behind the i8042, as QEMU 7.2's: key events in, scancode bytes out.

A key event (a QKeyCode going down or up, from ``send-key``) becomes the make or
break code of the keyboard's scancode set (2 at power-on; a guest may choose 1
or 3 with command 0xF0): an 0xE0 prefix for extended keys, 0xF0 before a set 2
or 3 break code, Pause and Print Screen as their special sequences in set 2.
When the i8042 asks for translation (its command byte's bit 6, as firmware
sets it), each set 2 byte goes through the 8042's translation table and a
break code comes out as one byte with bit 7 set: set 1 codes.

The queue holds QEMU's 16 bytes (PS2_QUEUE_SIZE); a byte that does not fit is
dropped (byte by byte, as QEMU's ps2_queue).  Replies to keyboard commands go ahead of the queued
scancodes and are dropped when the next command comes, as QEMU's.  The i8042
owns the lock; every method here runs under it.
"""

# Annotations are not postponed here: its records are made at every start (tests/unit/test_startup_imports.py).

import functools
import json
import os
from collections import deque
from typing import TYPE_CHECKING, Any

from qmpd.vmstate import U8, boolean, fields, integer, integers, invalid, items

if TYPE_CHECKING:
    from qmpd.devices.saved import SavedKeyboard

#: QEMU's PS2_QUEUE_SIZE: scancode bytes (and replies) waiting for the guest.
QUEUE_SIZE = 16

ACK, RESEND, ID, POWER_ON_OK, ECHO = 0xFA, 0xFE, 0xAB, 0xAA, 0xEE
_SET_LEDS, _SCANCODE, _SET_RATE, _SET_MAKE_BREAK = 0xED, 0xF0, 0xF3, 0xFC
_MOD_CTRL_L, _MOD_SHIFT_L, _MOD_ALT_L, _MOD_CTRL_R, _MOD_SHIFT_R, _MOD_ALT_R = (1 << n for n in range(6))
_MODIFIERS = {
    "ctrl": _MOD_CTRL_L,
    "ctrl_r": _MOD_CTRL_R,
    "shift": _MOD_SHIFT_L,
    "shift_r": _MOD_SHIFT_R,
    "alt": _MOD_ALT_L,
    "alt_r": _MOD_ALT_R,
}

#: The 8042's scancode translation (set 2 byte -> set 1 byte), a fact of the hardware.
TRANSLATION = bytes.fromhex(
    "ff43413f3d3b3c58644442403e0f2959"
    "65382a701d10025a66712c1f1e11035b"
    "672e2d201205045c68392f211413065d"
    "693130232215075e6a7232241608095f"
    "6b332517180b0a606c34352627190c61"
    "6d7328741a0d626e3a361c1b752b6376"
    "55567778797a0e7b7c4f7d4b477e7f6f"
    "5253504c4d480145574e514a37494654"
    "8081824154858687"
) + bytes(range(0x88, 0x100))


class KeyTables:
    """QEMU's key tables (tools/gen_keymaps.py): scancodes per set by QKeyCode, QKeyCodes by key number."""

    __slots__ = ("names", "numbers", "sets")

    def __init__(self, sets: dict[int, dict[str, int]], numbers: dict[int, str], names: tuple[str, ...]) -> None:
        self.sets = sets
        self.numbers = numbers
        #: Every QKeyCode, in QEMU's order.
        self.names = names

    def qcode_of_number(self, number: int) -> str:
        """The QKeyCode a send-key ``number`` key means (``unmapped`` if none)."""
        return self.numbers.get(number, "unmapped")


def load_tables() -> KeyTables:
    """The tables tools/gen_keymaps.py wrote (read with os.path: importlib.resources would load pathlib and
    tempfile on every start, which tests/unit/test_startup_imports.py keeps off)."""
    with open(os.path.join(os.path.dirname(__file__), "data", "keymaps.json"), encoding="utf-8") as file:
        data = json.load(file)
    return KeyTables(
        sets={1: data["set1"], 2: data["set2"], 3: data["set3"]},
        numbers={int(number): name for number, name in data["numbers"].items()},
        names=tuple(data["qcodes"]),
    )


@functools.cache
def key_tables() -> KeyTables:
    """The tables, read with their first use (a key sent), not at every start (~2 ms of JSON)."""
    return load_tables()


class PS2Keyboard:
    """The keyboard's state and queue (called by the i8042, under its lock)."""

    def __init__(self, tables: KeyTables | None = None) -> None:
        #: The tables given, or None: key_tables() at the first key.
        self._tables = tables
        self.replies: deque[int] = deque()
        self.queue: deque[int] = deque()
        self.reset()

    def reset(self) -> None:
        """Power-on (QEMU's ps2_kbd_reset): scanning on, set 2, no translation, nothing queued."""
        self.scan_enabled = True
        self.translate = False
        self.scancode_set = 2
        self.modifiers = 0
        self.leds = 0
        self.write_cmd = -1
        self.need_high_bit = False
        self.replies.clear()
        self.queue.clear()

    @property
    def has_data(self) -> bool:
        return bool(self.replies or self.queue)

    def read(self) -> int:
        """The next byte for the guest (the caller checked has_data)."""
        return self.replies.popleft() if self.replies else self.queue.popleft()

    # -- keys ---------------------------------------------------------------------------------

    def key(self, qcode: str, down: bool) -> None:
        """A key going down or up (QEMU's ps2_keyboard_event); ignored while scanning is off."""
        if not self.scan_enabled:
            return
        modifier = _MODIFIERS.get(qcode, 0)
        self.modifiers = self.modifiers | modifier if down else self.modifiers & ~modifier
        for code in self._codes(qcode, down):
            self._put(code)

    def _codes(self, qcode: str, down: bool) -> list[int]:
        """The scancode bytes of one key event in the current set, before translation."""
        if self.scancode_set == 2 and qcode == "pause":
            if not down:
                return []
            if self.modifiers & (_MOD_CTRL_L | _MOD_CTRL_R):
                return [0xE0, 0x7E, 0xE0, 0xF0, 0x7E]
            return [0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77]
        if self.scancode_set == 2 and qcode == "print":
            return self._print_screen(down)
        if self.scancode_set in (1, 2) and qcode in ("lang1", "lang2") and not down:
            return []  # these keys send no break code
        code = (self._tables or key_tables()).sets[self.scancode_set].get(qcode, 0)
        if not code:
            return []
        if self.scancode_set == 1:
            return ([code >> 8] if code > 0xFF else []) + [(code & 0xFF) | (0 if down else 0x80)]
        prefix = [code >> 8] if code > 0xFF else []
        return prefix + ([] if down else [0xF0]) + [code & 0xFF]

    def _print_screen(self, down: bool) -> list[int]:
        if self.modifiers & _MOD_ALT_L:
            return [0xF0, 0x11, 0x11, 0x84] if down else [0xF0, 0x84, 0xF0, 0x11, 0x11]
        if self.modifiers & _MOD_ALT_R:
            return [0xE0, 0xF0, 0x11, 0xE0, 0x11, 0x84] if down else [0xF0, 0x84, 0xE0, 0xF0, 0x11, 0xE0, 0x11]
        if self.modifiers & (_MOD_SHIFT_L | _MOD_CTRL_L | _MOD_SHIFT_R | _MOD_CTRL_R):
            return [0xE0, 0x7C] if down else [0xE0, 0xF0, 0x7C]
        return [0xE0, 0x12, 0xE0, 0x7C] if down else [0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12]

    def _put(self, code: int) -> None:
        """One scancode byte, translated to set 1 if the i8042 asks (QEMU's ps2_put_keycode)."""
        if self.translate:
            if code == 0xF0:
                self.need_high_bit = True
                return
            if self.need_high_bit:
                code = TRANSLATION[code] | 0x80
                self.need_high_bit = False
            else:
                code = TRANSLATION[code]
        if len(self.replies) + len(self.queue) < QUEUE_SIZE:
            self.queue.append(code)

    # -- commands from the guest (through the i8042's data port) ------------------------------

    def write(self, value: int) -> None:
        """A command byte, or a command's argument (QEMU's ps2_write_keyboard)."""
        self.replies.clear()  # unread replies to the previous command go
        command, self.write_cmd = self.write_cmd, -1
        if command == _SCANCODE:
            if value == 0:
                self.replies.extend((ACK, TRANSLATION[self.scancode_set] if self.translate else self.scancode_set))
            elif 1 <= value <= 3:
                self.scancode_set = value
                self.replies.append(ACK)
            else:
                self.replies.append(RESEND)
            return
        if command == _SET_LEDS:
            self.leds = value
            self.replies.append(ACK)
            return
        if command in (_SET_RATE, _SET_MAKE_BREAK):
            self.replies.append(ACK)
            return
        self._command(value)

    def _command(self, value: int) -> None:
        if value == 0x00:
            self.replies.append(ACK)
        elif value == 0x05:
            self.replies.append(RESEND)
        elif value == 0xF2:  # identify: an MF2 keyboard
            self.replies.extend((ACK, ID, 0x41 if self.translate else 0x83))
        elif value == ECHO:
            self.replies.append(ECHO)
        elif value == 0xF4:  # enable scanning
            self.scan_enabled = True
            self.replies.append(ACK)
        elif value in (_SCANCODE, _SET_LEDS, _SET_RATE, _SET_MAKE_BREAK):
            self.write_cmd = value
            self.replies.append(ACK)
        elif value in (0xF5, 0xF6):  # reset and disable / enable scanning
            self._reset_keyboard()
            self.scan_enabled = value == 0xF6
            self.replies.append(ACK)
        elif value == 0xFF:  # reset: ACK, then the self-test passed
            self._reset_keyboard()
            self.replies.extend((ACK, POWER_ON_OK))
        elif value == 0xFA:  # all keys typematic/make/break
            self.replies.append(ACK)
        else:
            self.replies.append(RESEND)

    def _reset_keyboard(self) -> None:
        """The keyboard's own reset command (translation stays the i8042's choice)."""
        self.scan_enabled = True
        self.scancode_set = 2
        self.leds = 0
        self.replies.clear()
        self.queue.clear()

    # -- saved state ----------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        return {
            "scan_enabled": self.scan_enabled,
            "translate": self.translate,
            "scancode_set": self.scancode_set,
            "modifiers": self.modifiers,
            "leds": self.leds,
            "write_cmd": self.write_cmd & 0xFF if self.write_cmd >= 0 else 0,
            "need_high_bit": self.need_high_bit,
            "replies": list(self.replies),
            "queue": list(self.queue),
        }

    @staticmethod
    def check_state(state: Any, where: str) -> "SavedKeyboard":
        from qmpd.devices.saved import SavedKeyboard  # with a restore only

        saved = fields(state, where)
        scancode_set = integer(saved, "scancode_set", U8, where)
        if not 1 <= scancode_set <= 3:
            raise invalid(f"{where}.scancode_set", "expected 1, 2 or 3")
        replies = items(saved, "replies", QUEUE_SIZE, where)
        queue = items(saved, "queue", QUEUE_SIZE, where)
        if len(replies) + len(queue) > QUEUE_SIZE:
            raise invalid(f"{where}.queue", f"more than {QUEUE_SIZE} bytes waiting")
        return SavedKeyboard(
            scan_enabled=boolean(saved, "scan_enabled", where),
            translate=boolean(saved, "translate", where),
            scancode_set=scancode_set,
            modifiers=integer(saved, "modifiers", 0x3F, where),
            leds=integer(saved, "leds", U8, where),
            write_cmd=integer(saved, "write_cmd", U8, where),
            need_high_bit=boolean(saved, "need_high_bit", where),
            replies=integers(replies, len(replies), U8, f"{where}.replies"),
            queue=integers(queue, len(queue), U8, f"{where}.queue"),
        )

    def load_state(self, saved: "SavedKeyboard") -> None:
        self.scan_enabled, self.translate = saved.scan_enabled, saved.translate
        self.scancode_set, self.modifiers, self.leds = saved.scancode_set, saved.modifiers, saved.leds
        self.write_cmd = saved.write_cmd or -1
        self.need_high_bit = saved.need_high_bit
        self.replies = deque(saved.replies)
        self.queue = deque(saved.queue)
