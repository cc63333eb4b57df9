"""Each owner saves, checks and loads its own section (qmpd.vmstate): a round trip gives the same
section back, a wrong field is refused by name before anything changes, and a section newer than
this qmpd is refused by the migration's check."""

from __future__ import annotations

from typing import Any

import pytest

from qmpd.devices.acpi_cpuhp import CPUHotplugBlock, GPEBlock
from qmpd.devices.acpi_pm import PM1Block
from qmpd.devices.chipsets import Q35_ICH9
from qmpd.devices.lapic import LocalAPIC
from qmpd.devices.pci import PCIConfig
from qmpd.machine.qom_tree import new_object
from qmpd.vcpu.runner import VCPURunner
from qmpd.vcpu.snapshot import CPUSnapshot
from qmpd.vmstate import StateError, check_version


def _hotplug_block() -> CPUHotplugBlock:
    return CPUHotplugBlock([0, 1, 2], GPEBlock(4, lambda: None), on_eject=lambda index: None, on_ost=lambda info: None)


def _pm_block() -> PM1Block:
    return PM1Block(on_sci=lambda: None, on_soft_off=lambda: None)


def _runner() -> VCPURunner:
    def no_engine() -> Any:
        raise AssertionError("a runner that never starts needs no engine")

    return VCPURunner(0, 0, no_engine, on_crash=lambda index, reason: None)


def test_the_hot_plug_block_round_trips_its_slots_and_gpe_registers() -> None:
    source = _hotplug_block()
    source.plug(1, "vcpu1", hotplugged=True)
    source.io_write(0, 4, 0)  # modern mode
    source.io_write(0, 4, 1)  # selector 1
    saved = source.save_state()
    target = _hotplug_block()
    target.load_state(target.check_state(saved, target.state_version))
    assert target.save_state() == saved
    assert target.slots[1].present and target.slots[1].device_id == "vcpu1" and not target.legacy
    assert target.gpe.registers() == source.gpe.registers() == (4, 0)


def test_the_pm_block_round_trips_its_registers() -> None:
    source = PM1Block(on_sci=lambda: None, on_soft_off=lambda: None)
    source.io_write(2, 2, 0x100)
    target = PM1Block(on_sci=lambda: None, on_soft_off=lambda: None)
    target.load_state(target.check_state(source.save_state(), 1))
    assert target.save_state() == {"status": 0, "enable": 0x100, "control": 0}


def test_pci_config_round_trips_the_pm_base_and_places_the_pm_space() -> None:
    placed: list[int | None] = []
    source = PCIConfig(Q35_ICH9, placed.append)
    source.load_pm_registers(0x681, 0x80)
    target = PCIConfig(Q35_ICH9, placed.append)
    target.load_state(target.check_state(source.save_state(), 1))
    assert target.save_state() == {"pm_base": 0x681, "pm_enable": 0x80}
    assert placed == [0x680, 0x680]
    with pytest.raises(StateError, match=r"'pci\.pm_base'"):
        target.check_state({"pm_base": 1 << 32, "pm_enable": 0}, 1)


def test_a_local_apic_round_trips_its_registers() -> None:
    source, target = new_object("apic"), new_object("apic")
    assert isinstance(source, LocalAPIC) and isinstance(target, LocalAPIC)
    source.mmio_write(0x80, 4, 0x20)
    source.mmio_write(0x310, 4, 0x01000000)
    target.load_state(LocalAPIC.check_state(source.save_state(), 1))
    assert target.save_state() == source.save_state() and target.tpr == 0x20


def test_a_runner_round_trips_its_run_state() -> None:
    source, target = _runner(), _runner()
    saved = source.save_state()
    assert saved == {
        "state": "powered-off",
        "wait_sipi": True,
        "rip": 0,
        "kicked": False,
        "fault": None,
        "engine": False,
        "nmi": False,
        "nmi_return": None,
    }
    target.load_state(VCPURunner.check_state({**saved, "rip": 0x1000, "kicked": True, "nmi": True}, 2))
    assert target.save_state() == {**saved, "rip": 0x1000, "kicked": True, "nmi": True}
    target.load_state(VCPURunner.check_state({**saved, "nmi": True}, 1))
    assert target.save_state()["nmi"] is False, "version 1 had no pending NMI"


def test_registers_round_trip_through_json_lists() -> None:
    snapshot = CPUSnapshot.powered_off()
    as_json: dict[str, Any] = {
        name: [list(item) if isinstance(item, tuple) else item for item in value] if isinstance(value, tuple) else value
        for name, value in snapshot.save_state().items()
    }
    assert CPUSnapshot.check_state(as_json, 1) == snapshot


@pytest.mark.parametrize(
    ("check", "state", "named"),
    [
        (lambda state: _hotplug_block().check_state(state, 1), "slots-short", "'cpuhp.slots': expected 3 slots"),
        (lambda state: _hotplug_block().check_state(state, 1), "gpe-wide", "'cpuhp.gpe.status'"),
        (
            lambda state: PM1Block(on_sci=lambda: None, on_soft_off=lambda: None).check_state(state, 1),
            {},
            "'pm.status'",
        ),
        (lambda state: LocalAPIC.check_state(state, 1, "cpus[1].lapic"), {"tpr": 1}, "'cpus[1].lapic.svr'"),
        (lambda state: VCPURunner.check_state(state, 1), {"state": "exited"}, "'runner.state': unknown vCPU state"),
        (lambda state: CPUSnapshot.check_state(state, 1), {"gpr": [0] * 15}, "'registers.gpr'"),
    ],
)
def test_a_wrong_field_is_refused_by_name(check: Any, state: Any, named: str) -> None:
    if state == "slots-short":
        state = {**_hotplug_block().save_state(), "slots": []}
    elif state == "gpe-wide":
        state = {**_hotplug_block().save_state(), "gpe": {"status": 1 << 16, "enable": 0}}
    with pytest.raises(StateError, match=named.replace("[", r"\[").replace("]", r"\]")):
        check(state)


def test_a_section_newer_than_this_qmpd_is_refused() -> None:
    assert check_version("lapic", 1, 1) == 1
    with pytest.raises(StateError, match="'lapic' state has version 2; this qmpd reads up to version 1"):
        check_version("lapic", 2, 1)
    with pytest.raises(StateError, match=r"'state_versions\.lapic': expected a positive integer"):
        check_version("lapic", True, 1)
