"""A hook that raises inside a vCPU (a device's bug) is a contained emulation failure, as QEMU reports one.

The guest (a flat image) touches something once: a port device, the CPUID
table or the local APIC, which raises.  The vCPU thread survives; the traceback
is logged with the cpu index and the device; the machine stops in run state
``internal-error`` with STOP (QEMU's report when its accelerator cannot go on
emulating); ``cont`` is refused until ``system_reset``, after which the guest
runs again (the device works now) and halts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from qmpd.config import MachineConfig
from qmpd.cpu.cpuid import CPUIDTable
from qmpd.devices.lapic import LocalAPIC
from qmpd.errors import GenericError
from qmpd.events import EventBus
from qmpd.machine.machine import Machine
from qmpd.machine.runstate import RunState, ShutdownCause
from qmpd.qapi.schema import Schema
from qmpd.vcpu.runner import VCPUState

PORT = 0xE7
#: Each guest does its one access, then halts for good (hlt; jmp back to the hlt).
GUESTS = {
    "out": "b0 2a e6 e7",  # mov al, 0x2a; out 0xe7, al
    "in": "e4 e7",  # in al, 0xe7
    "cpuid": "31 c0 31 c9 0f a2",  # xor eax, eax; xor ecx, ecx; cpuid
    "mmio": "48 b8 20 00 e0 fe 00 00 00 00 8b 00",  # movabs rax, 0xfee00020; mov eax, [rax]
}
HALT = "f4 eb fd"
#: The device the log names for each guest.
DEVICES = {"out": "FaultyPort", "in": "FaultyPort", "cpuid": "CPUIDTable", "mmio": "LocalAPIC"}


class FaultyPort:
    """A port device with a bug until it is fixed; then it records what the guest did."""

    def __init__(self) -> None:
        self.broken = True
        self.accesses: list[str] = []

    def _check(self) -> None:
        if self.broken:
            raise ValueError("a device bug")

    def io_read(self, offset: int, size: int) -> int:
        self._check()
        self.accesses.append("in")
        return 0

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._check()
        self.accesses.append(f"out {value:#x}")


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


@pytest.fixture
async def faulty(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Machine, FaultyPort, list[tuple[str, Any]]]]:
    kind: str = request.param
    image = tmp_path / "guest.bin"
    image.write_bytes(bytes.fromhex((GUESTS[kind] + HALT).replace(" ", "")))
    device = FaultyPort()
    if kind == "cpuid":
        lookup = CPUIDTable.lookup

        def broken_lookup(table: CPUIDTable, leaf: int, subleaf: int) -> Any:
            device._check()
            device.accesses.append("cpuid")
            return lookup(table, leaf, subleaf)

        monkeypatch.setattr(CPUIDTable, "lookup", broken_lookup)
    elif kind == "mmio":
        mmio_read = LocalAPIC.mmio_read

        def broken_mmio_read(lapic: LocalAPIC, offset: int, size: int) -> int:
            device._check()
            device.accesses.append("mmio")
            return mmio_read(lapic, offset, size)

        monkeypatch.setattr(LocalAPIC, "mmio_read", broken_mmio_read)
    events = EventBus(Schema.load(), strict=True)
    seen: list[tuple[str, Any]] = []

    def observe(name: str, data: Mapping[str, Any] | None) -> None:
        seen.append((name, data))

    events.observers.append(observe)
    machine = Machine(MachineConfig(bios=str(image), ram_size=16 << 20, start_paused=True), events)
    machine._board.bus.add(PORT, 1, device)  # a faulty device, where a real one would sit
    try:
        yield machine, device, seen
    finally:
        machine.close()


@pytest.mark.parametrize("faulty", list(GUESTS), indirect=True)
async def test_a_raising_hook_stops_the_machine_in_internal_error_and_a_reset_recovers(
    faulty: tuple[Machine, FaultyPort, list[tuple[str, Any]]], request: pytest.FixtureRequest
) -> None:
    machine, device, seen = faulty
    kind = request.node.callspec.params["faulty"]
    runner = machine.cpu_slots.runner(machine.cpu_slots.boot_index)
    with structlog.testing.capture_logs() as logs:
        machine.cont()
        await _until(lambda: machine.runstate is RunState.INTERNAL_ERROR, "the machine stops")
    assert [name for name, _ in seen] == ["RESUME", "STOP"]
    assert runner.alive and runner.state is VCPUState.CRASHED, "the vCPU thread survived, stopped"
    failures = [entry for entry in logs if entry["event"] == "vcpu.internal_error"]
    assert len(failures) == 1
    assert failures[0]["cpu"] == machine.cpu_slots.boot_index and failures[0]["device"] == DEVICES[kind]
    assert isinstance(failures[0]["exc_info"].__cause__, ValueError), "logged with the device's traceback"
    with pytest.raises(GenericError, match=r"^Resetting the Virtual Machine is required$"):
        machine.cont()
    assert device.accesses == []

    device.broken = False
    await machine.system_reset(ShutdownCause.HOST_QMP_SYSTEM_RESET)
    assert machine.runstate is RunState.PRELAUNCH
    machine.cont()
    await _until(lambda: runner.state is VCPUState.HALTED, "the guest runs again and halts")
    assert machine.runstate is RunState.RUNNING
    assert device.accesses == [{"out": "out 0x2a"}.get(kind, kind)]
    assert [name for name, _ in seen] == ["RESUME", "STOP", "RESET", "RESUME"]
