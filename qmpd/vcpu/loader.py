"""Firmware images: a PC BIOS ROM with a 64-bit entry, an ELF64 executable, or a flat binary.

- A PC BIOS ROM (what ``qemu-system-x86_64 -bios`` takes: a multiple of 64 KiB, at most 16 MiB,
  ending in a reset vector) is mapped as QEMU maps it below 1 MiB: its last 128 KiB (or all of a
  smaller one) end at 1 MiB.  qmpd cannot run its 16-bit code, so the image must say where its
  64-bit code goes and starts: ROM_TRAILER, 24 bytes just below the reset vector, holds the magic
  ``QMPDLM64``, then the payload's offset in the image, its length, its load address and its entry
  (four little-endian u32).  qmpd does what the image's real-mode stub does on QEMU (copies the
  payload) and starts the boot CPU at the entry in 64-bit mode.  The firmware itself finds the
  machine (PCI configuration space, CPUID), as it must on QEMU.
- ELF64 images are loaded segment by segment at their physical addresses (p_paddr) and start at
  e_entry; anything else is a flat binary loaded at FLAT_LOAD_ADDRESS and started there.  These
  start as if a firmware had run before them (qmpd's boot protocol registers, the PM I/O space
  already placed), as a ``-kernel`` image starts on QEMU after SeaBIOS.
The image is kept so that a reset can restore it, as QEMU restores its ROMs.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # ram.py needs ctypes and mmap; the loader runs before the greeting, guest RAM later
    from qmpd.vcpu.ram import GuestRAM

#: Where a flat binary is placed (below 1 MiB, so that STARTUP IPI vectors can reach it).
FLAT_LOAD_ADDRESS = 0x10000
#: Boot stack per possible CPU, counted down from the top of RAM (the image must end below them all).
STACK_SIZE = 16 << 10
_PT_LOAD = 1
#: The 64-bit entry a PC BIOS ROM declares for qmpd: magic, payload offset, length, load address, entry.
ROM_MAGIC = b"QMPDLM64"
ROM_TRAILER = struct.Struct("<8sIIII")
#: The trailer ends where the reset vector (the ROM's last 16 bytes) begins.
_TRAILER_END = 16
_ROM_ALIGN = 64 << 10
_ROM_MAX = 16 << 20
_ISA_BIOS_MAX = 128 << 10


class FirmwareError(ValueError):
    """The image cannot be loaded; the text is shown to the user."""


class Segment:
    """Bytes to place at a guest physical address (memsz beyond the data is zeroed)."""

    __slots__ = ("address", "data", "memsz")

    def __init__(self, address: int, data: bytes, memsz: int) -> None:
        self.address = address
        self.data = data
        self.memsz = memsz


class Firmware:
    """A loadable image."""

    __slots__ = ("entry", "path", "rom", "segments")

    def __init__(self, path: str, entry: int, segments: tuple[Segment, ...], rom: bool = False) -> None:
        self.path = path
        self.entry = entry
        self.segments = segments
        #: A PC BIOS ROM: it programs the chipset itself, so qmpd does not do it for it.
        self.rom = rom

    def load(self, ram: "GuestRAM") -> None:
        """Copy the image into RAM (at boot and at every reset)."""
        for segment in self.segments:
            if not ram.contains(segment.address, segment.memsz):
                raise FirmwareError(f"{self.path}: segment at {segment.address:#x} does not fit in RAM")
            ram.write(segment.address, segment.data + bytes(segment.memsz - len(segment.data)))

    @property
    def extent(self) -> tuple[int, int]:
        """Lowest and highest guest address the image covers."""
        low = min(s.address for s in self.segments)
        high = max(s.address + s.memsz for s in self.segments)
        return low, high


def parse_image(path: str, data: bytes) -> Firmware:
    """A Firmware from file contents."""
    if data[:4] == b"\x7fELF":
        return _parse_elf(path, data)
    if not data:
        raise FirmwareError(f"{path}: empty image")
    if _is_pc_bios(data):
        return _parse_rom(path, data)
    return Firmware(path, FLAT_LOAD_ADDRESS, (Segment(FLAT_LOAD_ADDRESS, data, len(data)),))


def _is_pc_bios(data: bytes) -> bool:
    """QEMU's -bios shape: a multiple of 64 KiB up to 16 MiB whose reset vector is a far jump."""
    return len(data) % _ROM_ALIGN == 0 and len(data) <= _ROM_MAX and data[-16] == 0xEA


def _parse_rom(path: str, data: bytes) -> Firmware:
    trailer = data[len(data) - _TRAILER_END - ROM_TRAILER.size : len(data) - _TRAILER_END]
    magic, offset, length, load, entry = ROM_TRAILER.unpack(trailer)
    if magic != ROM_MAGIC:
        raise FirmwareError(
            f"{path}: a PC BIOS image without a 64-bit entry for qmpd (qmpd cannot run 16-bit code; see README)"
        )
    if offset + length > len(data) or not load <= entry < load + length:
        raise FirmwareError(f"{path}: its 64-bit entry lies outside its payload")
    low = data[-min(len(data), _ISA_BIOS_MAX) :]
    segments = (Segment((1 << 20) - len(low), low, len(low)), Segment(load, data[offset : offset + length], length))
    return Firmware(path, entry, segments, rom=True)


def load_file(path: str) -> Firmware:
    """Read and parse a firmware file."""
    try:
        with open(path, "rb") as image:
            data = image.read()
    except OSError as exc:
        raise FirmwareError(f"could not load firmware '{path}': {exc.strerror}") from exc
    return parse_image(path, data)


def _parse_elf(path: str, data: bytes) -> Firmware:
    if len(data) < 64 or data[4] != 2 or data[5] != 1:
        raise FirmwareError(f"{path}: not a little-endian ELF64 image")
    machine = struct.unpack_from("<H", data, 18)[0]
    if machine != 62:
        raise FirmwareError(f"{path}: not an x86-64 ELF image (e_machine {machine})")
    entry, phoff = struct.unpack_from("<QQ", data, 24)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    segments = []
    for index in range(phnum):
        offset = phoff + index * phentsize
        p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz, p_memsz = struct.unpack_from("<IIQQQQQ", data, offset)
        if p_type == _PT_LOAD and p_memsz:
            segments.append(Segment(p_paddr, data[p_offset : p_offset + p_filesz], p_memsz))
    if not segments:
        raise FirmwareError(f"{path}: no loadable segments")
    return Firmware(path, entry, tuple(segments))
