"""The i8042 and its PS/2 keyboard, register by register, and send-key's queue.

Expected bytes are the PS/2 scancode sets (set 2 make/break with 0xF0, 0xE0 for extended keys) and the
8042's translation to set 1; the controller's replies and status bits are QEMU 7.2's hw/input/pckbd.c.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from qmpd.commands.input import key_names
from qmpd.devices.i8042 import I8042, STATUS_OBF
from qmpd.devices.ps2 import QUEUE_SIZE, TRANSLATION, PS2Keyboard, key_tables
from qmpd.machine.keys import QUEUE_LIMIT, KeyInjector

DATA, STATUS = 0, 0  # each port is its own device at offset 0


def controller() -> tuple[I8042, list[None]]:
    resets: list[None] = []
    return I8042(lambda: resets.append(None)), resets


def drain(device: I8042) -> list[int]:
    out = []
    while device.command_port.io_read(STATUS, 1) & STATUS_OBF:
        out.append(device.data_port.io_read(DATA, 1))
    return out


def command(device: I8042, value: int, data: int | None = None) -> None:
    device.command_port.io_write(STATUS, 1, value)
    if data is not None:
        device.data_port.io_write(DATA, 1, data)


def test_power_on_status_and_an_idle_data_port() -> None:
    device, _ = controller()
    assert device.command_port.io_read(STATUS, 1) == 0x18
    assert drain(device) == []
    command(device, 0x20)
    assert drain(device) == [0x03], "command byte: keyboard and mouse interrupts on, no translation"


def test_untranslated_set_2_until_the_command_byte_asks() -> None:
    device, _ = controller()
    device.key("a", True)
    device.key("a", False)
    assert drain(device) == [0x1C, 0xF0, 0x1C]
    command(device, 0x60, 0x61)
    device.key("a", True)
    device.key("a", False)
    device.key("kp_enter", True)
    device.key("kp_enter", False)
    assert drain(device) == [0x1E, 0x9E, 0xE0, 0x1C, 0xE0, 0x9C]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["print"], [0xE0, 0x2A, 0xE0, 0x37, 0xE0, 0xB7, 0xE0, 0xAA]),
        (["pause"], [0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]),
        (["ctrl", "pause"], [0x1D, 0xE0, 0x46, 0xE0, 0xC6, 0x9D]),
        (["shift", "print"], [0x2A, 0xE0, 0x37, 0xE0, 0xB7, 0xAA]),
        (["alt", "print"], [0x38, 0xB8, 0x38, 0x54, 0xD4, 0xB8, 0x38, 0xB8]),
    ],
)
def test_the_special_keys_translated(keys: list[str], expected: list[int]) -> None:
    device, _ = controller()
    command(device, 0x60, 0x40)
    for key in keys:
        device.key(key, True)
    for key in reversed(keys):
        device.key(key, False)
    assert drain(device) == expected


def test_the_queue_holds_sixteen_bytes_and_drops_each_byte_beyond() -> None:
    device, _ = controller()
    for _ in range(20):
        device.key("a", True)
    assert drain(device) == [0x1C] * QUEUE_SIZE
    for _ in range(QUEUE_SIZE // 2 - 1):
        device.key("right", True)  # E0 74: two bytes each
    device.key("a", True)
    device.key("right", True)
    assert drain(device) == [0xE0, 0x74] * 7 + [0x1C, 0xE0], "byte by byte, as QEMU's ps2_queue: 0x74 was lost"


def test_keyboard_commands_get_their_replies_before_waiting_scancodes() -> None:
    device, _ = controller()
    device.key("a", True)
    device.data_port.io_write(DATA, 1, 0xF2)  # identify
    assert drain(device) == [0xFA, 0xAB, 0x83, 0x1C], "replies go ahead of waiting scancodes"
    device.data_port.io_write(DATA, 1, 0xF0)
    device.data_port.io_write(DATA, 1, 0x00)  # which scancode set?
    assert drain(device) == [0xFA, 0x02], "an unread reply goes when the next byte is written"
    device.data_port.io_write(DATA, 1, 0xF0)
    device.data_port.io_write(DATA, 1, 0x01)  # set 1
    device.key("kp_enter", True)
    device.key("kp_enter", False)
    assert drain(device) == [0xFA, 0xE0, 0x1C, 0xE0, 0x9C]
    device.data_port.io_write(DATA, 1, 0xFF)
    assert drain(device) == [0xFA, 0xAA]
    device.data_port.io_write(DATA, 1, 0xF5)  # reset and disable scanning
    device.key("a", True)
    assert drain(device) == [0xFA], "no key while scanning is off"


def test_controller_commands_and_a_disabled_keyboard() -> None:
    device, resets = controller()
    command(device, 0xAA)
    assert drain(device) == [0x55] and device.command_port.io_read(STATUS, 1) & 0x04
    command(device, 0xAD)
    device.key("a", True)
    assert drain(device) == [], "keyboard bytes wait while its interface is disabled"
    command(device, 0xAE)
    assert drain(device) == [0x1C]
    command(device, 0xD2, 0x42)
    assert drain(device) == [0x42]
    assert device.data_port.io_read(DATA, 1) == 0x42, "an empty buffer reads its last byte again"
    command(device, 0xD0)
    assert drain(device) == [0xCF]
    assert resets == []
    command(device, 0xD1, 0xCE)
    command(device, 0xF0)  # pulse bits 3:0, bit 0 among them
    command(device, 0xFE)
    assert len(resets) == 3


def test_a_reset_brings_back_power_on_values() -> None:
    device, _ = controller()
    command(device, 0x60, 0x40)
    device.key("a", True)
    device.reset_registers()
    assert drain(device) == [] and device.keyboard.translate is False and device.mode == 0x03


def test_state_round_trips_and_is_checked() -> None:
    device, _ = controller()
    command(device, 0x60, 0x41)
    device.key("b", True)
    saved = device.save_state()
    other, _ = controller()
    other.load_state(other.check_state(saved, 1))
    assert other.save_state() == saved
    assert drain(other) == [0x30]
    with pytest.raises(Exception, match=r"'i8042.keyboard.scancode_set'"):
        other.check_state({**saved, "keyboard": {**saved["keyboard"], "scancode_set": 4}}, 1)


def test_tables() -> None:
    assert TRANSLATION[0x1C] == 0x1E and TRANSLATION[0x5A] == 0x1C and TRANSLATION[0x83] == 0x41
    assert key_tables().sets[2]["a"] == 0x1C and key_tables().sets[2]["kp_enter"] == 0xE05A
    assert len(key_tables().names) == 150 and key_tables().names[0] == "unmapped"
    assert key_names([{"type": "number", "data": 0x1E}, {"type": "number", "data": 0x9C}]) == ["a", "kp_enter"]
    assert key_names([{"type": "number", "data": -1}, {"type": "qcode", "data": "esc"}]) == ["unmapped", "esc"]
    keyboard = PS2Keyboard()
    keyboard.key("unmapped", True)
    assert not keyboard.has_data, "a key without a scancode sends nothing"


def test_send_key_presses_in_order_releases_in_reverse_and_waits_hold_time() -> None:
    async def scenario() -> tuple[list[tuple[str, bool, float]], int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        seen: list[tuple[str, bool, float]] = []
        keys = KeyInjector(lambda qcode, down: seen.append((qcode, down, loop.time() - start)), lambda: True)
        keys.send_keys(["ctrl", "sysrq"], 30)
        assert [(q, d) for q, d, _ in seen] == [("ctrl", True)], "the first event goes at once"
        waiting = keys.waiting
        await asyncio.sleep(0.2)
        return seen, waiting

    seen, waiting = asyncio.run(scenario())
    assert [(q, d) for q, d, _ in seen] == [("ctrl", True), ("print", True), ("print", False), ("ctrl", False)]
    assert waiting == 4 + 3 * 2, "four delays and three events (an event counts twice, as QEMU's)"
    gaps = [b[2] - a[2] for a, b in itertools.pairwise(seen)]
    assert all(gap >= 0.028 for gap in gaps), gaps


def test_send_key_queue_is_bounded_and_a_stopped_guest_gets_nothing() -> None:
    async def scenario() -> tuple[int, list[str]]:
        running = [True]
        seen: list[str] = []
        keys = KeyInjector(lambda qcode, down: seen.append(qcode), lambda: running[0])
        for _ in range(400):
            keys.send_keys(["a"], 100_000)
        most = keys.waiting
        keys.close()
        running[0] = False
        keys.send_keys(["b"], None)
        return most, seen

    most, seen = asyncio.run(scenario())
    assert most <= QUEUE_LIMIT and seen == ["a"]
