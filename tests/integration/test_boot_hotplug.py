"""A plug at any moment after spawn ends in the guest's _OST: while the firmware boots, under -S, across a reset.

A management stack plugs whenever it likes (libvirt: right after ``cont``).  The firmware handles every
event already pending when it becomes ready, as an OS that scans the hot-plug block when it enables its GPE
handler, and qmpd keeps the insert event of a CPU plugged while the block was still in legacy mode (QEMU
drops it; see qmpd/devices/acpi_cpuhp.py).  Each plug must be acknowledged within 2 s of the moment both the
plug and the firmware were there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, hmp, start_qmpd, wait_until

SMP = "1,sockets=1,cores=4,threads=1,maxcpus=4"
THREAD_NODE = "/machine/topology/socket[0]/die[0]/core[1]/thread[0]"
ACK_WITHIN = 2.0


def _device_add(client: RawClient) -> None:
    args = {"driver": "Haswell-x86_64-cpu", "id": "cpu1", "socket-id": 0, "core-id": 1, "thread-id": 0}
    assert client.execute("device_add", args) == {"return": {}}


def _cpu_add(client: RawClient) -> None:
    assert client.execute("cpu-add", {"id": 1}) == {"return": {}}


def _cpu_set(client: RawClient) -> None:
    assert hmp(client, "cpu_set 1 online") == ""


def _qom_link(client: RawClient) -> None:
    assert client.execute("object-add", {"qom-type": "Haswell-x86_64-cpu", "id": "t1"}) == {"return": {}}
    assert client.execute("qom-set", {"path": THREAD_NODE, "property": "cpu", "value": "/objects/t1"}) == {"return": {}}


PLUGS: dict[str, Callable[[RawClient], None]] = {
    "device_add": _device_add,
    "cpu-add": _cpu_add,
    "cpu_set": _cpu_set,
    "qom-set": _qom_link,
}


class Boot:
    """A fresh qmpd with the bundled firmware, its spawn time and its console."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.debugcon = tmp_path / "debugcon.txt"
        self.spawned = time.monotonic()
        argv = ["-machine", "pc", "-cpu", "Haswell", "-smp", SMP, "-debugcon", f"file:{self.debugcon}", *extra]
        self.server = start_qmpd(argv, tmp_path)
        self.client = RawClient(self.server.socket_path, timeout=15)
        self.client.negotiate()

    def console(self) -> str:
        return self.debugcon.read_text() if self.debugcon.exists() else ""

    def firmware_up(self) -> bool:
        return "CPU 0 (APIC ID 0) online" in self.console()

    def acknowledged(self, plugged_at: float) -> dict[str, Any]:
        """The insert _OST for slot 1, within ACK_WITHIN of both the plug and the firmware's start."""
        wait_until(self.firmware_up, timeout=15)
        deadline = max(plugged_at, time.monotonic()) + ACK_WITHIN
        while time.monotonic() < deadline:
            for event in self.client.events:
                info = event.get("data", {}).get("info", {})
                if event["event"] == "ACPI_DEVICE_OST" and info.get("slot") == "1" and info.get("source") == 1:
                    return dict(info)
            try:
                message = self.client.message(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if "event" in message:
                self.client.events.append(message)
        raise AssertionError(f"no _OST for slot 1 within {ACK_WITHIN} s; console:\n{self.console()}")

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def _check_online(boot: Boot) -> None:
    info = boot.acknowledged(time.monotonic())
    assert info["status"] == 0
    wait_until(lambda: "CPU 1 (APIC ID 1) online" in boot.console(), timeout=5)
    assert boot.console().count("CPU 1 (APIC ID 1) online") == 1


@pytest.mark.parametrize("delay_ms", range(0, 1001, 50))
def test_a_device_add_at_any_moment_after_spawn_is_acknowledged(tmp_path: Path, delay_ms: int) -> None:
    boot = Boot(tmp_path)
    try:
        time.sleep(max(0.0, boot.spawned + delay_ms / 1000 - time.monotonic()))
        _device_add(boot.client)
        _check_online(boot)
    finally:
        boot.close()


@pytest.mark.parametrize("interface", PLUGS)
@pytest.mark.parametrize("delay_ms", [0, 150, 600])
def test_every_interface_early_in_boot(tmp_path: Path, interface: str, delay_ms: int) -> None:
    boot = Boot(tmp_path)
    try:
        time.sleep(max(0.0, boot.spawned + delay_ms / 1000 - time.monotonic()))
        PLUGS[interface](boot.client)
        _check_online(boot)
    finally:
        boot.close()


@pytest.mark.parametrize("interface", PLUGS)
def test_a_plug_under_prelaunch_is_acknowledged_after_cont(tmp_path: Path, interface: str) -> None:
    boot = Boot(tmp_path, "-S")
    try:
        PLUGS[interface](boot.client)
        time.sleep(0.2)
        assert not boot.console(), "nothing runs before cont"
        assert boot.client.execute("cont") == {"return": {}}
        _check_online(boot)
    finally:
        boot.close()


@pytest.mark.parametrize("interface", PLUGS)
def test_a_plug_while_paused_is_acknowledged_after_cont(tmp_path: Path, interface: str) -> None:
    boot = Boot(tmp_path)
    try:
        wait_until(boot.firmware_up)
        assert boot.client.execute("stop") == {"return": {}}
        PLUGS[interface](boot.client)
        time.sleep(0.2)
        assert not any(e["event"] == "ACPI_DEVICE_OST" for e in boot.client.events)
        assert boot.client.execute("cont") == {"return": {}}
        _check_online(boot)
    finally:
        boot.close()


@pytest.mark.parametrize("interface", PLUGS)
def test_a_plug_just_before_a_reset_is_acknowledged_by_the_rebooted_firmware(tmp_path: Path, interface: str) -> None:
    boot = Boot(tmp_path, "-S")
    try:
        PLUGS[interface](boot.client)
        assert boot.client.execute("system_reset") == {"return": {}}
        assert boot.client.execute("cont") == {"return": {}}
        _check_online(boot)
        # Another reset: the CPU is now present from the start, and comes up without a new event.
        boot.client.events.clear()
        assert boot.client.execute("system_reset") == {"return": {}}
        wait_until(lambda: boot.console().count("CPU 1 (APIC ID 1) online") == 2, timeout=5)
        time.sleep(0.2)
        assert not any(e["event"] == "ACPI_DEVICE_OST" for e in boot.client.events)
    finally:
        boot.close()
