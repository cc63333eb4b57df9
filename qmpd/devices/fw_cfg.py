"""QEMU's fw_cfg as pc and q35 have it (type fw_cfg_io, ``/machine/fw_cfg``): how a firmware reads its configuration.

Registers (QEMU 7.2's I/O layout):

- 0x510, 16-bit write: the selector (an item key; the offset goes back to 0).  A byte read of
  0x510 or 0x511 reads the next byte of the selected item (0 past its end, for an unknown key,
  or for an item that has no data).  Byte writes are ignored (QEMU dropped write support in 2.4).
  Any other access is invalid: it reads 0 and writes nothing.
- 0x514-0x51b, the DMA interface (big-endian): reading gives "QEMU CFG"; a 32-bit write at 0x514
  sets the high half of a descriptor's guest address, a 32-bit write at 0x518 its low half and
  starts the transfer.  The descriptor (control, length, address; big-endian) may select an item,
  then read, skip or write ``length`` bytes; the device writes the control word back, 0 when
  done, with the error bit when guest memory could not be reached (what lies in RAM is written,
  as QEMU's) or a write was asked for (every item here is read-only).

The items are fixed at start (``fw_cfg_items``): the signature, the feature bits (traditional
interface and DMA), the UUID, RAM size, boot and maximum CPU counts, the boot-menu flag, the file
directory (0x19: a big-endian count, then 64-byte entries sorted by name) and its files: the
``-fw_cfg`` options.  They are configuration, not state: a migration target is started with the
same options (as QEMU's); only the selector, the offset and the DMA address half are saved.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from qmpd.vmstate import U16, U32, U64, fields, integer

#: The selector/data ports and the DMA address register.
FW_CFG_PORT = 0x510
FW_CFG_PORT_LEN = 2
FW_CFG_DMA_PORT = 0x514
FW_CFG_DMA_LEN = 8

#: Item keys QEMU's x86 firmware interface defines (those qmpd fills).
SIGNATURE, ID, UUID, RAM_SIZE, NOGRAPHIC, NB_CPUS, BOOT_MENU, MAX_CPUS = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x0E, 0x0F
FILE_DIR = 0x19
FILE_FIRST = 0x20
#: QEMU 7.2's default number of file slots (the ``x-file-slots`` property).
FILE_SLOTS = 32
#: Key bits: write channel (ignored for reads), arch-local items; the rest is the item number.
WRITE_CHANNEL = 0x4000
ARCH_LOCAL = 0x8000
ENTRY_MASK = 0x3FFF
#: A file name is at most this long (the directory entry holds it with its NUL).
MAX_NAME = 55
#: ID feature bits.
FEATURE_TRADITIONAL = 1
FEATURE_DMA = 2
#: DMA control bits.
DMA_ERROR, DMA_READ, DMA_SKIP, DMA_SELECT, DMA_WRITE = 0x01, 0x02, 0x04, 0x08, 0x10
DMA_SIGNATURE = b"QEMU CFG"
_DESCRIPTOR = 16
_ZEROS = bytes(1 << 16)


class GuestMemory(Protocol):
    """What a DMA transfer touches (qmpd.vcpu.ram.GuestRAM): RAM from 0 to ``size``; ValueError outside it."""

    size: int

    def read(self, address: int, length: int) -> bytes: ...

    def write(self, address: int, data: bytes) -> None: ...

    def contains(self, address: int, length: int) -> bool: ...


class MachineFacts:
    """What the standard items say about the machine."""

    __slots__ = ("apic_id_limit", "boot_cpus", "nographic", "ram_size", "uuid")

    def __init__(self, uuid: bytes, nographic: bool, boot_cpus: int, apic_id_limit: int, ram_size: int) -> None:
        #: -uuid's 16 bytes (zeros without it).
        self.uuid = uuid
        #: -nographic given (QEMU's NOGRAPHIC item follows the option, not the display).
        self.nographic = nographic
        self.boot_cpus = boot_cpus
        #: QEMU's apic_id_limit: the highest possible APIC ID plus one.
        self.apic_id_limit = apic_id_limit
        self.ram_size = ram_size


def fw_cfg_items(facts: MachineFacts, files: Sequence[tuple[str, bytes]]) -> dict[int, bytes]:
    """The items a guest can select, by key; ``files`` (names unique, at most FILE_SLOTS) in any order."""
    items = {
        SIGNATURE: b"QEMU",
        ID: (FEATURE_TRADITIONAL | FEATURE_DMA).to_bytes(4, "little"),
        UUID: facts.uuid,
        RAM_SIZE: facts.ram_size.to_bytes(8, "little"),
        NOGRAPHIC: int(facts.nographic).to_bytes(2, "little"),
        NB_CPUS: facts.boot_cpus.to_bytes(2, "little"),
        BOOT_MENU: (0).to_bytes(2, "little"),
        MAX_CPUS: min(facts.apic_id_limit, U16).to_bytes(2, "little"),
    }
    assert len(files) <= FILE_SLOTS
    directory = bytearray(len(files).to_bytes(4, "big"))
    for index, (name, data) in enumerate(sorted(files)):
        key = FILE_FIRST + index
        items[key] = data
        encoded = name.encode()
        assert len(encoded) <= MAX_NAME
        directory += len(data).to_bytes(4, "big") + key.to_bytes(2, "big") + bytes(2) + encoded.ljust(56, b"\0")
    items[FILE_DIR] = bytes(directory)
    return items


class FwCfg:
    """The device: fixed items, and the selector, offset and DMA address a guest changes (under a lock)."""

    def __init__(self, items: Mapping[int, bytes], memory: GuestMemory) -> None:
        self._items = dict(items)
        self._memory = memory
        self._lock = threading.Lock()
        #: The selected key (None: an invalid one was selected) and the offset in it.
        self._selected: int | None = 0
        self._offset = 0
        self._dma_address = 0
        #: The two port ranges to put on the bus: 0x510-0x511 and 0x514-0x51b.
        self.ports = _Ports(self, 0)
        self.dma_ports = _Ports(self, FW_CFG_DMA_PORT - FW_CFG_PORT)

    def reset_registers(self) -> None:
        """A machine reset selects the signature, as QEMU's."""
        with self._lock:
            self._select(0)

    # -- the state a migration carries (qmpd.vmstate) ------------------------------------------

    state_name = "fw_cfg"
    state_version = 1

    def save_state(self) -> dict[str, Any]:
        with self._lock:
            selected = U16 if self._selected is None else self._selected
            return {"selector": selected, "offset": self._offset, "dma_address": self._dma_address}

    def check_state(self, state: Any, version: int) -> tuple[int, int, int]:
        registers = fields(state, self.state_name)
        return (
            integer(registers, "selector", U16, self.state_name),
            integer(registers, "offset", U32, self.state_name),
            integer(registers, "dma_address", U64, self.state_name),
        )

    def load_state(self, checked: tuple[int, int, int]) -> None:
        selector, offset, dma_address = checked
        with self._lock:
            self._select(selector)
            self._offset = offset
            self._dma_address = dma_address

    # -- guest side (vCPU threads) ------------------------------------------------------------

    def io_read(self, offset: int, size: int) -> int:
        """Offsets 0-1: the data byte; 4-11: the DMA signature (as the guest sees big-endian bytes)."""
        if offset >= FW_CFG_DMA_PORT - FW_CFG_PORT:
            start = offset - (FW_CFG_DMA_PORT - FW_CFG_PORT)
            return int.from_bytes(DMA_SIGNATURE[start : start + size], "little")
        if size != 1:
            return 0
        with self._lock:
            data = self._data()
            if self._offset >= len(data):
                return 0
            self._offset += 1
            return data[self._offset - 1]

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset >= FW_CFG_DMA_PORT - FW_CFG_PORT:
            self._dma_write(offset - (FW_CFG_DMA_PORT - FW_CFG_PORT), size, value)
        elif size == 2:
            with self._lock:
                self._select(value)

    def _select(self, key: int) -> None:
        """Lock held: QEMU's fw_cfg_select (an item number past the file slots is invalid)."""
        self._offset = 0
        self._selected = key if key & ENTRY_MASK < FILE_FIRST + FILE_SLOTS else None

    def _data(self) -> bytes:
        """Lock held: the selected item's bytes (empty when it has none)."""
        if self._selected is None:
            return b""
        return self._items.get(self._selected & ~WRITE_CHANNEL, b"")

    def _dma_write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset not in (0, 4):
            return
        value = int.from_bytes(value.to_bytes(4, "little"), "big")  # a big-endian register
        with self._lock:
            if offset == 0:
                self._dma_address = value << 32
                return
            address = self._dma_address | value
            self._dma_address = 0
            self._transfer(address)

    def _transfer(self, address: int) -> None:
        """Lock held: run the descriptor at ``address`` and write its control word back."""
        try:
            descriptor = self._memory.read(address, _DESCRIPTOR)
        except ValueError:
            self._write_control(address, DMA_ERROR)
            return
        control = int.from_bytes(descriptor[0:4], "big")
        length = int.from_bytes(descriptor[4:8], "big")
        target = int.from_bytes(descriptor[8:16], "big")
        if control & DMA_SELECT:
            self._select(control >> 16)
        if not control & (DMA_READ | DMA_WRITE | DMA_SKIP):
            length = 0
        read = bool(control & DMA_READ)
        write = not read and bool(control & DMA_WRITE)
        status = self._move(target, length, read=read, write=write)
        self._write_control(address, status)

    def _move(self, target: int, length: int, *, read: bool, write: bool) -> int:
        """Lock held: read, write or skip ``length`` bytes of the selected item; the control word after it.

        A read whose target is partly outside RAM writes the part inside and sets the error bit, as QEMU's.
        """
        if length == 0:
            return 0
        data = self._data()
        part = min(length, max(0, len(data) - self._offset))
        if write:
            return DMA_ERROR  # no item here is writable
        if not read:
            self._offset += part
            return 0
        room = max(0, min(length, self._memory.size - target))
        if min(part, room):
            self._memory.write(target, data[self._offset : self._offset + min(part, room)])
        self._offset += part
        if room < part:
            return DMA_ERROR  # QEMU stops at the failed copy: no zeros after it
        for start in range(target + part, target + room, len(_ZEROS)):  # past the item: zeros
            self._memory.write(start, _ZEROS[: min(len(_ZEROS), target + room - start)])
        return 0 if room == length else DMA_ERROR

    def _write_control(self, address: int, control: int) -> None:
        if self._memory.contains(address, 4):  # else the descriptor itself is outside RAM: nowhere to report
            self._memory.write(address, control.to_bytes(4, "big"))


class _Ports:
    """One of FwCfg's port ranges, as a bus device (offsets shifted into FwCfg's)."""

    def __init__(self, device: FwCfg, shift: int) -> None:
        self._device = device
        self._shift = shift

    def io_read(self, offset: int, size: int) -> int:
        return self._device.io_read(offset + self._shift, size)

    def io_write(self, offset: int, size: int, value: int) -> None:
        self._device.io_write(offset + self._shift, size, value)
