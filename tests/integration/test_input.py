"""inject-nmi and send-key reach the bundled firmware: every CPU takes the NMI, the boot CPU echoes scancodes.

The firmware (examples/firmware/input.S) unmasks LINT1 as NMI on every CPU, counts each NMI its handler
takes through IDT vector 2 and returns with iretq; the boot CPU prints "CPU n (APIC ID m) NMI" per NMI and
"kbd xx" per byte it reads from the i8042 (translated to set 1, as QEMU's default with firmware that sets
the translate bit).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qmpd.migration.stream import read_state
from tests.helpers import hmp, wait_until
from tests.integration.test_hotplug import Guest, running_guest

MACHINES = ["pc", "q35"]
OK = {"return": {}}


def _keys(*names: str) -> dict[str, object]:
    return {"keys": [{"type": "qcode", "data": name} for name in names]}


def _kbd_bytes(guest: Guest) -> list[str]:
    return [line.split()[-1] for line in guest.console().splitlines() if line.startswith("qmpd firmware: kbd ")]


def _nmis(guest: Guest) -> list[str]:
    return [line for line in guest.console().splitlines() if line.endswith(") NMI")]


@pytest.mark.parametrize("machine", MACHINES)
def test_an_nmi_reaches_every_cpu_and_each_goes_on(tmp_path: Path, machine: str) -> None:
    argv = ["-machine", machine, "-cpu", "Haswell", "-smp", "2,maxcpus=4"]
    with running_guest(argv, tmp_path) as guest:
        guest.online(1, 1)
        assert guest.client.execute("inject-nmi") == OK
        wait_until(lambda: len(_nmis(guest)) == 2)
        assert sorted(_nmis(guest)) == [
            "qmpd firmware: CPU 0 (APIC ID 0) NMI",
            "qmpd firmware: CPU 1 (APIC ID 1) NMI",
        ]
        assert hmp(guest.client, "nmi") == ""
        wait_until(lambda: len(_nmis(guest)) == 4)
        # The handlers returned: the CPUs still count, and a hot-plugged CPU takes the next NMI too.
        assert guest.client.execute("device_add", {"driver": "Haswell-x86_64-cpu", "id": "c2", "socket-id": 0,
                                                   "core-id": 2, "thread-id": 0}) == OK  # fmt: skip
        guest.online(2, 2)
        assert guest.client.execute("inject-nmi") == OK
        wait_until(lambda: "qmpd firmware: CPU 2 (APIC ID 2) NMI" in _nmis(guest))
        wait_until(lambda: len(_nmis(guest)) == 7)
        assert guest.client.execute("query-status")["return"]["status"] == "running"
        assert "exception" not in guest.console()


def test_an_nmi_while_stopped_is_taken_when_the_guest_runs_again(tmp_path: Path) -> None:
    with running_guest(["-machine", "pc", "-cpu", "Haswell", "-smp", "2"], tmp_path) as guest:
        guest.online(1, 1)
        assert guest.client.execute("stop") == OK
        assert guest.client.execute("inject-nmi") == OK
        time.sleep(0.2)
        assert _nmis(guest) == []
        assert guest.client.execute("cont") == OK
        wait_until(lambda: len(_nmis(guest)) == 2)


def test_an_nmi_after_a_reset_before_the_firmware_unmasks_lint1_is_ignored(tmp_path: Path) -> None:
    """At power-on LINT1 is masked (as QEMU's): an NMI then goes nowhere and the guest boots normally."""
    with running_guest(["-machine", "pc", "-cpu", "Haswell"], tmp_path) as guest:
        assert guest.client.execute("system_reset") == OK
        assert guest.client.execute("inject-nmi") == OK
        wait_until(lambda: guest.console().count("qmpd firmware: booting") == 2)
        assert guest.client.execute("inject-nmi") == OK
        wait_until(lambda: len(_nmis(guest)) >= 1)
        time.sleep(0.3)
        assert _nmis(guest) == ["qmpd firmware: CPU 0 (APIC ID 0) NMI"], "the first NMI was not kept for later"
        assert guest.console().count("qmpd firmware: booting") == 2 and "exception" not in guest.console()


@pytest.mark.parametrize("machine", MACHINES)
def test_send_key_scancodes_reach_the_guest_translated_to_set_1(tmp_path: Path, machine: str) -> None:
    with running_guest(["-machine", machine, "-cpu", "Haswell"], tmp_path) as guest:
        assert guest.client.execute("send-key", _keys("a")) == OK
        wait_until(lambda: _kbd_bytes(guest) == ["1e", "9e"])
        # Pressed in order, released in reverse; an extended key with its 0xE0 prefix; a key number.
        keys = _keys("ctrl", "kp_enter")
        keys["keys"].append({"type": "number", "data": 0x10})  # type: ignore[union-attr]
        assert guest.client.execute("send-key", keys) == OK
        wait_until(lambda: len(_kbd_bytes(guest)) == 2 + 8)
        assert _kbd_bytes(guest)[2:] == ["1d", "e0", "1c", "10", "90", "e0", "9c", "9d"]
        assert hmp(guest.client, "sendkey shift-0x1e 20") == ""
        wait_until(lambda: _kbd_bytes(guest)[-4:] == ["2a", "1e", "9e", "aa"])


def test_send_key_while_stopped_reaches_no_one(tmp_path: Path) -> None:
    """As QEMU: a guest that is not running gets no key events."""
    with running_guest(["-machine", "pc", "-cpu", "Haswell"], tmp_path) as guest:
        assert guest.client.execute("stop") == OK
        assert guest.client.execute("send-key", _keys("b")) == OK
        assert guest.client.execute("cont") == OK
        assert guest.client.execute("send-key", _keys("c")) == OK
        wait_until(lambda: _kbd_bytes(guest) == ["2e", "ae"])


def test_the_keyboard_translation_and_lint1_travel_with_a_saved_machine(tmp_path: Path) -> None:
    """The firmware set the i8042's translate bit and unmasked LINT1 at boot, once: a restored guest that
    lost them would get set 2 bytes ("1c f0 1c") and no NMIs."""
    state = tmp_path / "input.state"
    argv = ["-machine", "pc", "-cpu", "Haswell", "-smp", "2"]
    (tmp_path / "source").mkdir()
    (tmp_path / "target").mkdir()
    with running_guest(argv, tmp_path / "source") as source:
        source.online(1, 1)
        assert source.client.execute("migrate", {"uri": f"file:{state}"}) == OK
        wait_until(lambda: source.client.execute("query-migrate")["return"].get("status") == "completed")
    saved = read_state(str(state))[0]
    assert saved["i8042"]["keyboard"]["translate"] is True and saved["i8042"]["mode"] == 0x60
    assert [cpu["lapic"]["lint1"] for cpu in saved["cpus"]] == [0x400, 0x400]
    with running_guest([*argv, "-incoming", f"file:{state}"], tmp_path / "target", wait_online=False) as target:
        wait_until(lambda: target.client.execute("query-migrate")["return"].get("status") == "completed")
        assert target.client.execute("send-key", _keys("a")) == OK
        wait_until(lambda: _kbd_bytes(target)[-2:] == ["1e", "9e"])
        assert target.client.execute("inject-nmi") == OK
        wait_until(lambda: len(_nmis(target)) == 2)
