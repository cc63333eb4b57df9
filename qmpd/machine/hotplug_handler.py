"""QEMU's HotplugHandler interface, and the checks every unplug request passes first.

The pc and q35 machines are the hot-plug handler of their CPUs (QEMU's
``generic-pc-machine`` implements ``hotplug-handler``).  The three ways of
plugging a CPU (qdev's device_add, the legacy cpu-add/cpu_set, the QOM
topology links) all call it through this interface; none of them knows how a
CPU is realized or how the guest is told.
"""

from __future__ import annotations

from typing import Protocol

from qmpd.errors import GenericError
from qmpd.qom.device import Device
from qmpd.qom.object import Object


class HotplugHandler(Protocol):
    """pre_plug -> plug when a device comes; unplug_request -> (the guest ejects) -> unplug when it goes."""

    def pre_plug(self, device: Device) -> None:
        """Refuse a device the machine cannot take (QEMU's checks and texts); changes nothing."""

    def plug(self, device: Device) -> None:
        """Realize and wire the device; on failure nothing changed."""

    def unplug_request(self, device: Device) -> None:
        """Ask the guest to release a plugged device."""

    def unplug(self, device: Device) -> None:
        """The guest released the device: take it out of service and out of the tree."""


def request_unplug(handler: HotplugHandler, device: Object, name: str) -> None:
    """QEMU's qdev_unplug: the checks of any device, then the handler's own."""
    if not isinstance(device, Device):
        raise GenericError(f"{name} is not a hotpluggable device")
    if device.fixed_bus is not None:
        raise GenericError(f"Bus '{device.fixed_bus}' does not support hotplugging")
    if not device.hotpluggable:
        raise GenericError(f"Device '{device.type_name}' does not support hotplugging")
    if not device.realized:
        raise GenericError(f"{name} is not a hotpluggable device")
    handler.unplug_request(device)
