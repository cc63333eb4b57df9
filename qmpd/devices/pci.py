"""PCI configuration space of the functions a firmware touches (qmpd.devices.chipsets), served to the guest.

Mechanism #1 (ports 0xCF8/0xCFC): a dword written to CONFIG_ADDRESS selects bus, device, function
and register; CONFIG_DATA (0xCFC-0xCFF) reads and writes that register.  Only a dword access at
0xCF8 reaches CONFIG_ADDRESS (a byte at 0xCF9 is the reset control register), as on QEMU.

qmpd has no PCI bus: it answers for the host bridge and for the function holding the ACPI PM
registers, with the bytes QEMU 7.2 shows a guest (read on QEMU by the bundled firmware's
PCI_DUMP variant; tests/differential/test_firmware_diff.py compares them), and all ones for every
other function (as for an empty slot).  Of the registers, only those that place the PM I/O space
can be written: the PM base and its enable bit, PIIX4's PMBA/PMREGMISC (pc, 00:01.3) or ICH9's
PMBASE/ACPI_CNTL (q35, 00:1f.0).  Other writes are ignored (QEMU would keep some of them; no
firmware of ours writes them).  When the PM I/O space moves or is turned on or off, ``on_pm_base``
is called with its new base (None: off); vCPU threads do the writes, so the state has a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from qmpd.devices.chipsets import Chipset
from qmpd.vmstate import U32, fields, integer

#: The ports of CONFIG_ADDRESS (one dword register) and CONFIG_DATA.
CONFIG_ADDRESS_PORT = 0xCF8
CONFIG_DATA_PORT = 0xCFC
_ENABLE = 1 << 31


class PCIConfig:
    """CONFIG_ADDRESS and CONFIG_DATA over the host bridge and the PM function of one chipset.

    Without ACPI (-no-acpi) the PM function is absent, as QEMU's pc builds no PIIX4 PM then.
    """

    def __init__(self, chipset: Chipset, on_pm_base: Callable[[int | None], None], *, with_pm: bool = True) -> None:
        self._chipset = chipset
        self._on_pm_base = on_pm_base
        self._with_pm = with_pm
        self._lock = threading.Lock()
        self.address = 0
        self._pm = bytearray(256)
        #: The two port ranges to put on the bus: 0xCF8 (one dword) and 0xCFC-0xCFF.
        self.address_port = _Ports(self, 0)
        self.data_port = _Ports(self, 4)
        self.reset_registers()

    def reset_registers(self) -> None:
        """Power-on values: the PM I/O space off (the caller unmaps it)."""
        with self._lock:
            self.address = 0
            self._pm = _config_bytes(self._chipset.pm_config)

    # -- the state a migration carries (qmpd.vmstate) ------------------------------------------

    state_name = "pci"
    state_version = 1

    def save_state(self) -> dict[str, Any]:
        base, enable = self.pm_registers
        return {"pm_base": base, "pm_enable": enable}

    def check_state(self, state: Any, version: int) -> tuple[int, int]:
        registers = fields(state, self.state_name)
        return integer(registers, "pm_base", U32, "pci"), integer(registers, "pm_enable", U32, "pci")

    def load_state(self, checked: tuple[int, int]) -> None:
        self.load_pm_registers(*checked)

    @property
    def pm_registers(self) -> tuple[int, int]:
        """The PM base register and the enable register, as the guest wrote them."""
        function = self._chipset.pm_function
        with self._lock:
            return self._dword(function.base_offset), self._dword(function.enable_offset)

    def load_pm_registers(self, base: int, enable: int) -> None:
        """Put the PM registers back (a restore) and place the PM I/O space accordingly."""
        function = self._chipset.pm_function
        with self._lock:
            self._pm[function.base_offset : function.base_offset + 4] = base.to_bytes(4, "little")
            self._pm[function.enable_offset : function.enable_offset + 4] = enable.to_bytes(4, "little")
            where = self._pm_base()
        self._on_pm_base(where)

    # -- guest side (vCPU threads) ------------------------------------------------------------

    def io_read(self, offset: int, size: int) -> int:
        """CONFIG_ADDRESS at offset 0, CONFIG_DATA at offsets 4-7 (see _Ports)."""
        with self._lock:
            if offset < 4:
                return self.address if offset == 0 and size == 4 else 0xFFFFFFFF
            config = self._selected()
            if config is None:
                return (1 << (8 * size)) - 1
            register = (self.address & 0xFC) + offset - 4
            return int.from_bytes(config[register : register + size], "little")

    def io_write(self, offset: int, size: int, value: int) -> None:
        moved = False
        with self._lock:
            if offset < 4:
                if offset == 0 and size == 4:
                    self.address = value
                return
            if self._selected() is not self._pm:
                return
            register = (self.address & 0xFC) + offset - 4
            before = self._pm_base()
            for index in range(size):
                self._write_pm_byte(register + index, value >> (8 * index) & 0xFF)
            after = self._pm_base()
            moved = after != before
        if moved:
            self._on_pm_base(after)

    def _selected(self) -> bytearray | None:
        """The config bytes CONFIG_ADDRESS selects (lock held), or None for an absent function."""
        if not self.address & _ENABLE or (self.address >> 16) & 0xFF:
            return None
        slot = ((self.address >> 11) & 0x1F, (self.address >> 8) & 0x7)
        if slot == (0, 0):
            return _config_bytes(self._chipset.host_bridge)
        if slot == self._chipset.pm_function.slot and self._with_pm:
            return self._pm
        return None

    def _write_pm_byte(self, register: int, byte: int) -> None:
        function = self._chipset.pm_function
        base = function.base_offset
        if base <= register < base + 2:
            mask = (function.base_mask >> (8 * (register - base))) & 0xFF
            self._pm[register] = (self._pm[register] & ~mask & 0xFF) | (byte & mask)
        elif register == function.enable_offset:
            bit = function.enable_bit
            self._pm[register] = (self._pm[register] & ~bit) | (byte & bit)

    def _dword(self, offset: int) -> int:
        return int.from_bytes(self._pm[offset : offset + 4], "little")

    def _pm_base(self) -> int | None:
        """Where the PM I/O space is now (lock held), or None while it is off."""
        function = self._chipset.pm_function
        if not self._pm[function.enable_offset] & function.enable_bit:
            return None
        return self._dword(function.base_offset) & function.base_mask


class _Ports:
    """One of the two port ranges of PCIConfig, as a bus device (offsets shifted into PCIConfig's)."""

    def __init__(self, config: PCIConfig, shift: int) -> None:
        self._config = config
        self._shift = shift

    def io_read(self, offset: int, size: int) -> int:
        return self._config.io_read(offset + self._shift, size)

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._config.io_write(offset + self._shift, size, value)


def _config_bytes(dwords: dict[int, int]) -> bytearray:
    config = bytearray(256)
    for offset, value in dwords.items():
        config[offset : offset + 4] = value.to_bytes(4, "little")
    return config
