"""The devices' saved sections as their owners check them (qmpd.vmstate): made with a restore only.

Each device module saves, checks and loads its own section; the checked forms live here so that
a start, which never restores, does not create their classes (a NamedTuple takes ~0.2 ms to
create, and a start loads every device module).  A renamed field changes here and in its device.
"""

# Annotations are not postponed here: typing.NamedTuple would compile each one (tests/unit/test_startup_imports.py).

from typing import NamedTuple

from qmpd.devices.lapic import LVT_MASKED


class SavedSlot(NamedTuple):
    """One slot of a saved hot-plug block (qmpd.devices.acpi_cpuhp), checked."""

    device_id: str | None
    present: bool
    is_inserting: bool
    is_removing: bool
    fw_remove: bool
    ost_event: int
    ost_status: int


class SavedHotplugBlock(NamedTuple):
    """A saved hot-plug block and its GPE registers, checked."""

    legacy: bool
    selector: int
    command: int
    slots: tuple[SavedSlot, ...]
    gpe_status: int
    gpe_enable: int


class PM1Registers(NamedTuple):
    """The PM1 registers of a saved machine (qmpd.devices.acpi_pm), checked."""

    status: int
    enable: int
    control: int


class SavedKeyboard(NamedTuple):
    """A saved keyboard (qmpd.devices.ps2), checked."""

    scan_enabled: bool
    translate: bool
    scancode_set: int
    modifiers: int
    leds: int
    write_cmd: int
    need_high_bit: bool
    replies: tuple[int, ...]
    queue: tuple[int, ...]


class SavedI8042(NamedTuple):
    """A saved controller (qmpd.devices.i8042) and keyboard, checked."""

    status: int
    mode: int
    outport: int
    write_cmd: int
    pending: int
    source: int
    cbdata: int
    obdata: int
    keyboard: SavedKeyboard


class APICRegisters(NamedTuple):
    """The registers of a saved local APIC (qmpd.devices.lapic), checked."""

    tpr: int
    svr: int
    ldr: int
    dfr: int
    icr_low: int
    icr_high: int
    lint0: int = LVT_MASKED
    lint1: int = LVT_MASKED
