"""PCI configuration space as QEMU 7.2's pc and q35 show it to a guest, and the PM I/O space it places."""

from __future__ import annotations

import pytest

from qmpd.devices.chipsets import I440FX_PIIX4, Q35_ICH9, Chipset
from qmpd.devices.pci import PCIConfig
from qmpd.vcpu.loader import ROM_MAGIC, ROM_TRAILER, FirmwareError, parse_image

PC, Q35 = I440FX_PIIX4, Q35_ICH9


def address(device: int, function: int, register: int, bus: int = 0) -> int:
    return 1 << 31 | bus << 16 | device << 11 | function << 8 | register


class Placed:
    def __init__(self) -> None:
        self.bases: list[int | None] = []


def make(chipset: Chipset = PC, *, with_pm: bool = True) -> tuple[PCIConfig, Placed]:
    placed = Placed()
    return PCIConfig(chipset, placed.bases.append, with_pm=with_pm), placed


def read(config: PCIConfig, where: int, size: int = 4, offset: int = 0) -> int:
    config.address_port.io_write(0, 4, where)
    return config.data_port.io_read(offset, size)


def write(config: PCIConfig, where: int, value: int, size: int = 4, offset: int = 0) -> None:
    config.address_port.io_write(0, 4, where)
    config.data_port.io_write(offset, size, value)


@pytest.mark.parametrize(
    ("chipset", "pm", "ids"),
    [(PC, (1, 3), (0x12378086, 0x71138086)), (Q35, (31, 0), (0x29C08086, 0x29188086))],
    ids=["pc", "q35"],
)
def test_ids_and_absent_functions(chipset: Chipset, pm: tuple[int, int], ids: tuple[int, int]) -> None:
    config, _ = make(chipset)
    assert read(config, address(0, 0, 0)) == ids[0]
    assert read(config, address(*pm, 0)) == ids[1]
    assert read(config, address(0, 0, 0x2C)) == 0x11001AF4
    assert read(config, address(0, 0, 0), size=2, offset=2) == ids[0] >> 16
    assert read(config, address(2, 0, 0)) == 0xFFFFFFFF, "no other function answers"
    assert read(config, address(0, 0, 0, bus=1)) == 0xFFFFFFFF
    assert read(config, address(0, 0, 0) & ~(1 << 31)) == 0xFFFFFFFF, "without the enable bit"
    assert config.address_port.io_read(0, 4) == address(0, 0, 0) & ~(1 << 31)


def test_the_pm_space_is_placed_when_based_and_enabled_on_pc() -> None:
    config, placed = make(PC)
    pm = address(1, 3, 0x40)
    assert read(config, pm) == 1, "PMBA reads its I/O-space bit"
    write(config, pm, 0x601)
    assert placed.bases == [] and read(config, pm) == 0x601
    write(config, address(1, 3, 0x80), 1, size=1)
    assert placed.bases == [0x600]
    write(config, pm, 0xB03F)  # the low 6 bits are not the base's
    assert placed.bases == [0x600, 0xB000] and read(config, pm) == 0xB001
    write(config, address(1, 3, 0x80), 0, size=1)
    assert placed.bases[-1] is None
    write(config, address(0, 0, 0), 0)  # the host bridge is read-only here
    assert read(config, address(0, 0, 0)) == 0x12378086
    config.reset_registers()
    assert read(config, pm) == 1 and config.pm_registers == (1, 0)


def test_q35_enables_with_acpi_cntl_and_bases_on_128_bytes() -> None:
    config, placed = make(Q35)
    write(config, address(31, 0, 0x40), 0x6FF)
    write(config, address(31, 0, 0x44), 0x80, size=1)
    assert placed.bases == [0x680]
    base, enable = config.pm_registers
    other, moved = make(Q35)
    other.load_pm_registers(base, enable)
    assert moved.bases == [0x680] and read(other, address(31, 0, 0x40)) == 0x681


def test_without_acpi_the_pm_function_is_absent() -> None:
    config, placed = make(PC, with_pm=False)
    assert read(config, address(1, 3, 0)) == 0xFFFFFFFF
    write(config, address(1, 3, 0x80), 1, size=1)
    assert placed.bases == []


def test_only_a_dword_at_0xcf8_is_config_address() -> None:
    config, _ = make(PC)
    config.address_port.io_write(0, 4, address(0, 0, 0))
    config.address_port.io_write(0, 1, 0)
    assert config.address_port.io_read(0, 4) == address(0, 0, 0)


def _rom(payload: bytes, *, trailer: bool = True, load: int = 0x10000, entry: int = 0x10000) -> bytes:
    image = bytearray(64 << 10)
    image[: len(payload)] = payload
    if trailer:
        image[-16 - ROM_TRAILER.size : -16] = ROM_TRAILER.pack(ROM_MAGIC, 0, len(payload), load, entry)
    image[-16] = 0xEA
    return bytes(image)


def test_a_bios_rom_is_mapped_below_1_mib_and_its_payload_loaded() -> None:
    firmware = parse_image("rom", _rom(b"\x90" * 100))
    assert firmware.rom and firmware.entry == 0x10000
    alias, payload = firmware.segments
    assert (alias.address, len(alias.data)) == (0xF0000, 64 << 10)
    assert (payload.address, payload.data) == (0x10000, b"\x90" * 100)


def test_a_bios_rom_without_a_64_bit_entry_is_refused_clearly() -> None:
    with pytest.raises(FirmwareError, match="cannot run 16-bit code"):
        parse_image("seabios.bin", _rom(b"", trailer=False))
    with pytest.raises(FirmwareError, match="outside its payload"):
        parse_image("rom", _rom(b"\x90" * 100, entry=0x20000))
    flat = parse_image("flat", b"\x90" * 100)
    assert not flat.rom and flat.segments[0].address == 0x10000
