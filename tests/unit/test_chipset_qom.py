"""The chipset devices qmpd emulates sit at QEMU 7.2's /machine/unattached paths (read on QEMU with each setting)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest

from qmpd.config import MachineConfig
from qmpd.errors import GenericError
from qmpd.events import EventBus
from qmpd.machine.machine import Machine
from qmpd.machine.qdev import DeviceOptions, qdev_device_add
from qmpd.qapi.schema import Schema

SCHEMA = Schema.load()


def _with_machine(machine_type: str, check: Callable[[Machine], None], acpi: bool = True, **settings: Any) -> None:
    """Build a paused machine on a loop (its bridge needs one), run ``check`` on it, close it."""
    config = MachineConfig(
        machine_type=machine_type, start_paused=True, acpi=acpi, machine_settings=tuple(settings.items())
    )

    async def run() -> None:
        machine = Machine(config, EventBus(SCHEMA))
        try:
            check(machine)
        finally:
            machine.close()

    asyncio.run(run())


def _types(machine: Machine) -> dict[str, str]:
    return {name: child.type_name for name, child in machine.qom.unattached.children()}


@pytest.mark.parametrize(
    ("machine_type", "settings", "acpi", "expected", "count"),
    [
        ("pc", {}, True, {"device[13]": "i8042", "device[18]": "PIIX4_PM"}, 27),
        ("pc", {"hpet": False}, True, {"device[12]": "i8042", "device[17]": "PIIX4_PM"}, 26),
        ("pc", {"i8042": False}, True, {"device[14]": "PIIX4_PM"}, 23),
        ("pc", {"vmport": "off"}, True, {"device[13]": "i8042", "device[16]": "PIIX4_PM"}, 25),
        ("pc", {}, False, {"device[13]": "i8042"}, 18),
        ("q35", {}, True, {"device[2]": "ICH9-LPC", "device[11]": "i8042"}, 25),
        ("q35", {"smbus": False}, True, {"device[2]": "ICH9-LPC", "device[11]": "i8042"}, 16),
        ("q35", {"sata": False}, True, {"device[2]": "ICH9-LPC", "device[11]": "i8042"}, 24),
    ],
)
def test_objects_at_qemus_numbers(
    machine_type: str, settings: dict[str, Any], acpi: bool, expected: dict[str, str], count: int
) -> None:
    def check(machine: Machine) -> None:
        types = _types(machine)
        assert {name: kind for name, kind in types.items() if kind not in ("qemu64-x86_64-cpu", "kvmvapic")} == expected
        assert machine.qom.unattached_count == count, "the next unattached device takes QEMU's next number"
        pm = next((name for name, kind in expected.items() if kind in ("PIIX4_PM", "ICH9-LPC")), None)
        link = machine.qom.machine.link_target("acpi-device")
        assert link is (machine.qom.unattached.child(pm) if pm is not None else None)

    _with_machine(machine_type, check, acpi, **settings)


def test_the_pm_function_reads_qmpds_acpi_block() -> None:
    def check(machine: Machine) -> None:
        pm = machine.qom.unattached.child("device[18]")
        assert pm is not None
        assert pm.get_property("cpu-hotplug-legacy") is True and pm.get_property("pm_io_base") == 0
        machine._board.pm_io_base = 0x600
        assert pm.get_property("pm_io_base") == 0x600
        i8042 = machine.qom.unattached.child("device[13]")
        keyboard = i8042.child("ps2kbd") if i8042 is not None else None
        assert keyboard is not None and keyboard.type_name == "ps2-kbd" and keyboard.get_property("realized") is True

    _with_machine("pc", check)


@pytest.mark.parametrize(
    ("machine_type", "arguments", "desc"),
    [
        ("pc", {}, "Bus 'isa.0' does not support hotplugging"),
        ("q35", {"bus": "isa.0"}, "Bus 'isa.0' does not support hotplugging"),
        ("none", {}, "No 'ISA' bus found for device 'i8042'"),
        ("pc", {"bus": "pci.0"}, "Device 'i8042' can't go on PCI bus"),
    ],
)
def test_device_add_of_an_i8042_is_refused_as_qemu_refuses_it(
    machine_type: str, arguments: dict[str, str], desc: str
) -> None:
    def check(machine: Machine) -> None:
        options = tuple({"driver": "i8042", **arguments}.items())
        with pytest.raises(GenericError, match=f"^{re.escape(desc)}$"):
            qdev_device_add(machine, DeviceOptions(None, options))
        assert machine.qom.peripheral_anon.child_count() == 0

    _with_machine(machine_type, check)
