"""QEMU's ACPI CPU hot-plug register block (docs/specs/acpi_cpu_hotplug.rst), legacy and modern.

At start the block is in legacy mode: a read-only 32-byte bitmap of present
CPUs by APIC ID.  Writing 0 at offset 0 switches it to the modern 12-byte
interface at the same base (QEMU's cpu_status_write):

====  ========================================  ===========================================
off   read                                      write
====  ========================================  ===========================================
0     command data 2 (cmd 3: arch ID >> 32)     CPU selector
4     flags: 0 enabled, 1 insert, 2 remove,     control: 1 clear insert, 2 clear remove,
      4 firmware-eject                          3 eject, 4 hand the eject to firmware
5     0                                         command: 0 next CPU with an event, 1 OST
                                                event, 2 OST status, 3 arch ID
8     command data (cmd 0: selector, cmd 3:     cmd 1: OST event; cmd 2: OST status
      arch ID low 32 bits)                      (sends ACPI_DEVICE_OST)
====  ========================================  ===========================================

With the selector out of range every read is 0 and every write but the
selector's is ignored.  Control bits are tested in that order, first set bit
wins.  Plugging a hot-plugged CPU sets ``insert``, an unplug request sets
``remove``; both raise GPE0 status bit 2 and the SCI (which wakes the vCPUs).
Eject (not for the boot CPU, not for an empty slot) asks the machine to
unplug the CPU.  vCPU threads access it, so its state has a lock; what the
machine must do goes through the callbacks (which post to the event loop).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qmpd.vmstate import U8, U32, boolean, fields, integer, invalid, items, optional_string

if TYPE_CHECKING:
    from qmpd.devices.saved import SavedHotplugBlock, SavedSlot

#: Modern block length and legacy bitmap length.
MODERN_LEN = 12
LEGACY_LEN = 32
#: GPE0 status bit QEMU sets for CPU hot-plug (ACPI_CPU_HOTPLUG_STATUS).
GPE_CPU_HOTPLUG = 4


class CPUSlot:
    """One possible CPU, as the block sees it (a plain class with slots: vCPU threads read and write it
    under the block's lock; a dataclass took ~0.5 ms to create at every start)."""

    __slots__ = (
        "arch_id",
        "device_id",
        "fw_remove",
        "is_inserting",
        "is_removing",
        "ost_event",
        "ost_status",
        "present",
    )

    def __init__(self, arch_id: int) -> None:
        self.arch_id = arch_id
        self.device_id: str | None = None
        self.present = False
        self.is_inserting = False
        self.is_removing = False
        self.fw_remove = False
        self.ost_event = 0
        self.ost_status = 0

    def __repr__(self) -> str:
        return "CPUSlot(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


#: The per-slot fields of a saved hot-plug block, in CPUSlot.
_SLOT_FLAGS = ("present", "is_inserting", "is_removing", "fw_remove")
_SLOT_OST = ("ost_event", "ost_status")


class GPEBlock:
    """GPE0 status and enable registers (status bits are write-1-to-clear)."""

    def __init__(self, length: int, on_sci: Callable[[], None]) -> None:
        self.half = length // 2
        self.status = 0
        self.enable = 0
        self._on_sci = on_sci
        self._lock = threading.Lock()

    @property
    def register_mask(self) -> int:
        """All bits of the status (or enable) register."""
        return (1 << (8 * self.half)) - 1

    def registers(self) -> tuple[int, int]:
        """Status and enable."""
        with self._lock:
            return self.status, self.enable

    def set_registers(self, status: int, enable: int) -> None:
        with self._lock:
            self.status, self.enable = status, enable

    def raise_event(self, bit: int) -> None:
        """Set a status bit; signal the SCI if it is enabled."""
        with self._lock:
            self.status |= bit
            fire = bool(self.enable & bit)
        if fire:
            self._on_sci()

    def io_read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset < self.half:
                return self.status >> (8 * offset)
            return self.enable >> (8 * (offset - self.half))

    def io_write(self, offset: int, size: int, value: int) -> None:
        fire = False
        with self._lock:
            if offset < self.half:
                self.status &= ~(value << (8 * offset))
            else:
                shift = 8 * (offset - self.half)
                mask = ((1 << (8 * size)) - 1) << shift
                self.enable = (self.enable & ~mask) | (value << shift & mask)
                fire = bool(self.enable & self.status)
        if fire:
            self._on_sci()


class CPUHotplugBlock:
    """The register block and its slots (one per possible CPU, by cpu index)."""

    #: Its section of a saved machine (qmpd.vmstate), with the GPE registers.
    state_name = "cpuhp"
    state_version = 1

    def __init__(
        self,
        arch_ids: list[int],
        gpe: GPEBlock,
        *,
        on_eject: Callable[[int], None],
        on_ost: Callable[[dict[str, object]], None],
        on_mode_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.slots = [CPUSlot(arch_id) for arch_id in arch_ids]
        #: Slots with an insert, remove or firmware-remove event: the scan looks only at these
        #: (a walk over 1024 slots per command 0 made 1023 plugs O(n^2)).
        self._events: set[int] = set()
        self.gpe = gpe
        self.legacy = True
        self.selector = 0
        self.command = 0
        self._on_eject = on_eject
        self._on_ost = on_ost
        self._on_mode_change = on_mode_change
        self._lock = threading.Lock()

    # -- machine side ----------------------------------------------------------------------

    def plug(self, index: int, device_id: str | None, *, hotplugged: bool) -> None:
        """A CPU was realized in slot ``index`` (acpi_cpu_plug_cb)."""
        with self._lock:
            slot = self.slots[index]
            slot.present = True
            slot.device_id = device_id
            # Deliberately unlike QEMU: a CPU hot-plugged while the block is still in legacy mode (under -S,
            # or before the firmware is up) keeps its insert event for after the switch to the modern
            # interface.  QEMU drops it there, so a guest sees a present CPU with no event and never
            # reports _OST for it: a management stack that plugs at start-up would wait for nothing.
            slot.is_inserting = hotplugged
            self._note(index)
        if hotplugged:
            self.gpe.raise_event(GPE_CPU_HOTPLUG)

    def request_unplug(self, index: int) -> None:
        """device_del of the CPU in slot ``index`` (acpi_cpu_unplug_request_cb); ignored once it is ejected."""
        with self._lock:
            slot = self.slots[index]
            if not slot.present:
                return
            slot.is_removing = True
            self._note(index)
        self.gpe.raise_event(GPE_CPU_HOTPLUG)

    def unplug(self, index: int) -> None:
        """The CPU is gone (acpi_cpu_unplug_cb)."""
        with self._lock:
            slot = self.slots[index]
            slot.present = False
            slot.is_inserting = slot.is_removing = slot.fw_remove = False
            slot.device_id = None
            self._note(index)

    def ospm_status(self) -> list[dict[str, object]]:
        """query-acpi-ospm-status: every slot in modern mode, nothing in legacy mode."""
        if self.legacy:
            return []
        with self._lock:
            return [self._ost_info(index) for index in range(len(self.slots))]

    def _ost_info(self, index: int) -> dict[str, object]:
        slot = self.slots[index]
        info: dict[str, object] = {}
        if slot.device_id is not None:
            info["device"] = slot.device_id
        info.update({"slot": str(index), "slot-type": "CPU", "source": slot.ost_event, "status": slot.ost_status})
        return info

    # -- saved state (qmpd.vmstate) ---------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        status, enable = self.gpe.registers()
        with self._lock:
            slots = [
                {
                    **{name: getattr(slot, name) for name in (*_SLOT_FLAGS, *_SLOT_OST)},
                    "device_id": slot.device_id,
                }
                for slot in self.slots
            ]
            return {
                "legacy": self.legacy,
                "selector": self.selector,
                "command": self.command,
                "slots": slots,
                "gpe": {"status": status, "enable": enable},
            }

    def check_state(self, state: Any, version: int) -> SavedHotplugBlock:
        from qmpd.devices.saved import SavedHotplugBlock  # with a restore only

        block = fields(state, "cpuhp")
        entries = items(block, "slots", len(self.slots), "cpuhp")
        if len(entries) != len(self.slots):
            raise invalid("cpuhp.slots", f"expected {len(self.slots)} slots")
        registers = fields(block.get("gpe"), "cpuhp.gpe")
        width = self.gpe.register_mask
        return SavedHotplugBlock(
            legacy=boolean(block, "legacy", "cpuhp"),
            selector=integer(block, "selector", U32, "cpuhp"),
            command=integer(block, "command", U8, "cpuhp"),
            slots=tuple(_saved_slot(fields(entry, f"cpuhp.slots[{n}]"), f"cpuhp.slots[{n}]")
                        for n, entry in enumerate(entries)),
            gpe_status=integer(registers, "status", width, "cpuhp.gpe"),
            gpe_enable=integer(registers, "enable", width, "cpuhp.gpe"),
        )  # fmt: skip

    def load_state(self, checked: SavedHotplugBlock) -> None:
        with self._lock:
            self.legacy, self.selector, self.command = checked.legacy, checked.selector, checked.command
            for slot, saved in zip(self.slots, checked.slots, strict=True):
                slot.device_id = saved.device_id
                slot.present, slot.is_inserting = saved.present, saved.is_inserting
                slot.is_removing, slot.fw_remove = saved.is_removing, saved.fw_remove
                slot.ost_event, slot.ost_status = saved.ost_event, saved.ost_status
            self._events = {index for index in range(len(self.slots)) if self._has_event(self.slots[index])}
        self.gpe.set_registers(checked.gpe_status, checked.gpe_enable)

    # -- guest side (vCPU threads) ------------------------------------------------------------

    def io_read(self, offset: int, size: int) -> int:
        with self._lock:
            if self.legacy:
                return self._legacy_byte(offset) if offset < LEGACY_LEN else 0
            if offset >= MODERN_LEN or self.selector >= len(self.slots):
                return 0
            slot = self.slots[self.selector]
            if offset == 0:
                return slot.arch_id >> 32 if self.command == 3 else 0
            if offset == 4:
                return (
                    int(slot.present)
                    | int(slot.is_inserting) << 1
                    | int(slot.is_removing) << 2
                    | int(slot.fw_remove) << 4
                )
            if offset == 8:
                if self.command == 0:
                    return self.selector
                if self.command == 3:
                    return slot.arch_id & 0xFFFFFFFF
            return 0

    def _legacy_byte(self, offset: int) -> int:
        value = 0
        for slot in self.slots:
            if slot.present and slot.arch_id // 8 == offset:
                value |= 1 << (slot.arch_id % 8)
        return value

    def io_write(self, offset: int, size: int, value: int) -> None:
        eject: int | None = None
        ost: dict[str, object] | None = None
        switched = False
        with self._lock:
            if self.legacy:
                if offset == 0 and value == 0:
                    self.legacy = False
                    switched = True
            elif offset == 0:
                self.selector = value
            elif self.selector < len(self.slots):
                slot = self.slots[self.selector]
                if offset == 4:
                    if value & 2:
                        slot.is_inserting = False
                    elif value & 4:
                        slot.is_removing = False
                    elif value & 8:
                        if slot.present and self.selector != 0:
                            eject = self.selector
                            # QEMU unplugs here, synchronously: the slot is empty from now on, even
                            # before the machine (on the event loop) has taken the CPU away.
                            slot.present = slot.is_inserting = slot.is_removing = slot.fw_remove = False
                    elif value & 16 and slot.present and self.selector != 0:
                        slot.fw_remove = True
                    self._note(self.selector)
                elif offset == 5:
                    if value < 4:
                        self.command = value
                        if value == 0:
                            self._scan()
                elif offset == 8:
                    if self.command == 1:
                        slot.ost_event = value
                    elif self.command == 2:
                        slot.ost_status = value
                        ost = self._ost_info(self.selector)
        if switched:
            self._on_mode_change()
        if ost is not None:
            self._on_ost(ost)
        if eject is not None:
            self._on_eject(eject)

    def _scan(self) -> None:
        """QEMU's CPHP_GET_NEXT_CPU_WITH_EVENT_CMD: the first slot with an event from the selector on,
        wrapping around; the selector stays if there is none."""
        if self._events:
            count, start = len(self.slots), self.selector
            self.selector = min(self._events, key=lambda index: (index - start) % count)

    @staticmethod
    def _has_event(slot: CPUSlot) -> bool:
        return slot.is_inserting or slot.is_removing or slot.fw_remove

    def _note(self, index: int) -> None:
        """Keep ``_events`` in step with slot ``index``'s flags (under the lock)."""
        if self._has_event(self.slots[index]):
            self._events.add(index)
        else:
            self._events.discard(index)


def _saved_slot(slot: dict[str, Any], where: str) -> SavedSlot:
    from qmpd.devices.saved import SavedSlot

    device_id = optional_string(slot, "device_id", where)
    present, inserting, removing, fw_remove = (boolean(slot, name, where) for name in _SLOT_FLAGS)
    ost_event, ost_status = (integer(slot, name, U32, where) for name in _SLOT_OST)
    return SavedSlot(device_id, present, inserting, removing, fw_remove, ost_event, ost_status)
