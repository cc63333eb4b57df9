"""The small fixed devices of the pc and q35 boards: reset control (0xCF9), the i8042 reset pulse, pvpanic."""

from __future__ import annotations

import pytest

from qmpd.config import DeviceConfig, MachineConfig
from qmpd.devices.i8042 import I8042
from qmpd.devices.pvpanic import PVPanic
from qmpd.devices.reset import ResetControl
from qmpd.machine.spec import SpecError, build_spec


def test_reset_control_resets_on_bit_2_and_keeps_the_others() -> None:
    resets: list[None] = []
    register = ResetControl(lambda: resets.append(None), kept_bits=0x2)
    register.io_write(0, 1, 0x0B)
    assert register.io_read(0, 1) == 0x2 and resets == []
    register.io_write(0, 1, 0x06)
    assert len(resets) == 1 and register.io_read(0, 1) == 0x2, "a reset request leaves the register alone"
    register.reset_registers()
    assert register.io_read(0, 1) == 0


def test_keyboard_controller_resets_only_on_its_pulse_command() -> None:
    resets: list[None] = []
    controller = I8042(lambda: resets.append(None))
    line = controller.command_port
    for command in (0xAD, 0xAE, 0xD1, 0xFF):
        line.io_write(0, 1, command)
    controller.data_port.io_write(0, 1, 0xCF)  # the output port written after 0xD1, reset bit kept
    assert resets == [] and line.io_read(0, 1) == 0x18
    line.io_write(0, 1, 0xFE)
    assert len(resets) == 1


def test_pvpanic_reports_what_it_supports_and_a_panic_wins() -> None:
    seen: list[str] = []
    device = PVPanic(lambda: seen.append("panic"), lambda: seen.append("crashloaded"))
    assert device.io_read(0, 1) == 3
    device.io_write(0, 1, 3)
    device.io_write(0, 1, 2)
    device.io_write(0, 1, 4)
    assert seen == ["panic", "crashloaded"]
    only_panic = PVPanic(lambda: seen.append("panic"), lambda: seen.append("crashloaded"), events=1)
    only_panic.io_write(0, 1, 2)
    assert seen == ["panic", "crashloaded"], "an event the device does not offer is ignored"


@pytest.mark.parametrize("port", ["0xcf9", "0x60", "0x64"])
def test_a_device_cannot_take_the_boards_reset_ports(port: str) -> None:
    config = MachineConfig(devices=(DeviceConfig("isa-debug-exit", (("iobase", port), ("iosize", "1"))),))
    with pytest.raises(SpecError, match=f"I/O port {port} is already used by"):
        build_spec(config)
    assert build_spec(config._replace(machine_type="none")).port_devices
