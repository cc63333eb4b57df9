"""The I/O port bus: which device answers which port.

vCPU threads call it from their IN/OUT hooks; each device guards its own
state with its own lock.  An unassigned port reads as all ones and ignores
writes, as on a PC.
"""

from __future__ import annotations

from typing import Protocol


class PortDevice(Protocol):
    """A device with I/O ports."""

    def io_read(self, offset: int, size: int) -> int: ...

    def io_write(self, offset: int, size: int, value: int) -> None: ...


class PortBus:
    """Port number -> (device, offset)."""

    def __init__(self) -> None:
        self._ports: dict[int, tuple[PortDevice, int]] = {}

    def add(self, base: int, length: int, device: PortDevice) -> None:
        """Give ``device`` the ports base..base+length-1."""
        for port in range(base, base + length):
            if port in self._ports:
                raise ValueError(f"I/O port {port:#x} is already taken")
            self._ports[port] = (device, port - base)

    def remove(self, device: PortDevice) -> None:
        """Take every port of ``device`` away."""
        for port in [p for p, (d, _) in self._ports.items() if d is device]:
            del self._ports[port]

    def device_at(self, port: int) -> PortDevice | None:
        """The device answering ``port`` (None if unassigned)."""
        target = self._ports.get(port)
        return target[0] if target is not None else None

    def read(self, port: int, size: int) -> int:
        """IN from ``port``."""
        target = self._ports.get(port)
        if target is None:
            return (1 << (8 * size)) - 1
        device, offset = target
        return device.io_read(offset, size) & ((1 << (8 * size)) - 1)

    def write(self, port: int, size: int, value: int) -> None:
        """OUT to ``port``."""
        target = self._ports.get(port)
        if target is not None:
            device, offset = target
            device.io_write(offset, size, value & ((1 << (8 * size)) - 1))
