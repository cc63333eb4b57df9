"""The vCPU manager's runners: dicts the loop changes in place while vCPU threads deliver IPIs and device events."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import pytest

from qmpd.devices.lapic import DELIVERY_FIXED, DEST_ALL_BUT_SELF
from qmpd.vcpu.bridge import LoopBridge
from qmpd.vcpu.engine import VCPUEngine
from qmpd.vcpu.manager import VCPUManager


def _no_engine() -> VCPUEngine:
    raise AssertionError("a powered-off CPU builds no engine")


@pytest.fixture
async def manager() -> AsyncIterator[VCPUManager]:
    bridge = LoopBridge()
    bridge.bind()
    built = VCPUManager(bridge, 16 << 20)
    yield built
    built.shutdown()


def test_runners_is_a_read_only_view_that_plugs_and_unplugs_change(manager: VCPUManager) -> None:
    first = manager.add(0, 0, _no_engine, paused=True)
    view = manager.runners
    second = manager.add(1, 2, _no_engine, paused=True)
    assert dict(view) == {0: first, 1: second}, "a live view: no copy of the roster per plug"
    with pytest.raises(TypeError):
        view[1] = second  # type: ignore[index]
    manager.remove(0)
    assert dict(manager.runners) == {1: second}
    assert not first.alive and second.alive


def test_a_routed_interrupt_wakes_only_its_destination(manager: VCPUManager) -> None:
    runners = [manager.add(index, index * 2, _no_engine, paused=True) for index in range(4)]
    manager.kick_apic(4)
    manager.kick_apic(7)  # no CPU has that APIC ID: nothing happens
    assert [runner._kicked for runner in runners] == [False, False, True, False]
    manager.kick_all()
    assert all(runner._kicked for runner in runners)


def test_vcpu_threads_deliver_while_the_loop_plugs_and_unplugs(manager: VCPUManager) -> None:
    manager.add(0, 0, _no_engine, paused=True)
    errors: list[BaseException] = []
    done = threading.Event()

    def vcpu_thread() -> None:
        while not done.is_set():
            try:
                manager.kick_all()
                manager.send_ipi(0, DEST_ALL_BUT_SELF, 0, DELIVERY_FIXED, 0x30)
            except BaseException as exc:  # e.g. "dictionary changed size during iteration"
                errors.append(exc)
                return

    thread = threading.Thread(target=vcpu_thread)
    thread.start()
    try:
        for round_ in range(100):
            for index in range(1, 9):
                manager.add(index, index * 2, _no_engine, paused=True)
            for index in range(1, 9):
                manager.remove(index)
            assert not errors, f"round {round_}: {errors[0]!r}"
    finally:
        done.set()
        thread.join(timeout=10)
    assert not errors
    assert list(manager.runners) == [0]
