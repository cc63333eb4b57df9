"""The PCI functions a firmware finds on each chipset, as QEMU 7.2 shows them (qmpd.devices.pci serves them).

Read on QEMU 7.2 by the bundled firmware's PCI_DUMP variant; tests/differential/test_firmware_diff.py
compares what a guest reads on both emulators.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).


class PMFunction:
    """Where a chipset keeps the PM base and the bit that turns the PM I/O space on."""

    __slots__ = ("base_mask", "base_offset", "enable_bit", "enable_offset", "slot")

    def __init__(
        self, slot: tuple[int, int], base_offset: int, base_mask: int, enable_offset: int, enable_bit: int
    ) -> None:
        #: (device, function) on bus 0.
        self.slot = slot
        #: Config offset of the PM base, and the bits of it that hold the base.
        self.base_offset = base_offset
        self.base_mask = base_mask
        #: Config offset and bit of the enable.
        self.enable_offset = enable_offset
        self.enable_bit = enable_bit


class Chipset:
    """The functions a guest finds on one machine type: non-zero dwords of their config space at reset."""

    __slots__ = ("host_bridge", "pm_config", "pm_function")

    def __init__(self, host_bridge: dict[int, int], pm_function: PMFunction, pm_config: dict[int, int]) -> None:
        self.host_bridge = host_bridge
        self.pm_function = pm_function
        self.pm_config = pm_config


_SUBSYSTEM = 0x11001AF4  # Red Hat / QEMU, on every function

#: pc: the i440FX host bridge and the PIIX4 PM function (00:01.3).
I440FX_PIIX4 = Chipset(
    host_bridge={0x00: 0x12378086, 0x08: 0x06000002, 0x2C: _SUBSYSTEM, 0x54: 0x10000000, 0x70: 0x00020000},
    pm_function=PMFunction(slot=(1, 3), base_offset=0x40, base_mask=0xFFC0, enable_offset=0x80, enable_bit=0x01),
    pm_config={
        0x00: 0x71138086,
        0x04: 0x02800000,
        0x08: 0x06800003,
        0x2C: _SUBSYSTEM,
        0x3C: 0x00000100,
        0x40: 0x00000001,
        0x5C: 0x10000000,
        0x60: 0x60000000,
        0x90: 0x0000B101,
        0xD0: 0x00090000,
    },
)
#: q35: the Q35 MCH and the ICH9 LPC bridge (00:1f.0).
Q35_ICH9 = Chipset(
    host_bridge={
        0x00: 0x29C08086,
        0x08: 0x06000000,
        0x2C: _SUBSYSTEM,
        0x50: 0x10,
        0x60: 0xB0000000,
        0x9C: 0x380200,
    },
    pm_function=PMFunction(slot=(31, 0), base_offset=0x40, base_mask=0xFF80, enable_offset=0x44, enable_bit=0x80),
    pm_config={
        0x00: 0x29188086,
        0x08: 0x06010002,
        0x0C: 0x00800000,
        0x2C: _SUBSYSTEM,
        0x40: 0x00000001,
        0x60: 0x80808080,
        0x68: 0x80808080,
    },
)
