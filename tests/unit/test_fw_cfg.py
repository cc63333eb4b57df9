"""fw_cfg as QEMU 7.2's fw_cfg_io: the selector and data ports, the file directory, DMA, and -fw_cfg's checks."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from qmpd.cli import CLIError, parse_args
from qmpd.config import FwCfgOption, MachineConfig
from qmpd.devices.bus import PortBus
from qmpd.devices.fw_cfg import (
    DMA_ERROR,
    DMA_READ,
    DMA_SELECT,
    DMA_SKIP,
    DMA_WRITE,
    FILE_DIR,
    FILE_SLOTS,
    FW_CFG_DMA_LEN,
    FW_CFG_DMA_PORT,
    FW_CFG_PORT,
    FW_CFG_PORT_LEN,
    FwCfg,
    MachineFacts,
    fw_cfg_items,
)
from qmpd.machine.fw_cfg_files import MAX_CONTENTS, FwCfgError, load_fw_cfg_files
from qmpd.machine.spec import SpecError, build_spec
from qmpd.vmstate import StateError

FACTS = MachineFacts(uuid=bytes(range(16)), nographic=True, boot_cpus=1, apic_id_limit=4, ram_size=128 << 20)


class Memory:
    """A small guest RAM."""

    def __init__(self, size: int = 1 << 20) -> None:
        self.data = bytearray(size)
        self.size = size

    def contains(self, address: int, length: int) -> bool:
        return address >= 0 and length >= 0 and address + length <= len(self.data)

    def read(self, address: int, length: int) -> bytes:
        if not self.contains(address, length):
            raise ValueError("outside")
        return bytes(self.data[address : address + length])

    def write(self, address: int, data: bytes) -> None:
        if not self.contains(address, len(data)):
            raise ValueError("outside")
        self.data[address : address + len(data)] = data


def machine(files: tuple[tuple[str, bytes], ...] = ()) -> tuple[PortBus, Memory, FwCfg]:
    bus, memory = PortBus(), Memory()
    device = FwCfg(fw_cfg_items(FACTS, files), memory)
    bus.add(FW_CFG_PORT, FW_CFG_PORT_LEN, device.ports)
    bus.add(FW_CFG_DMA_PORT, FW_CFG_DMA_LEN, device.dma_ports)
    return bus, memory, device


def read_item(bus: PortBus, key: int, length: int) -> bytes:
    bus.write(FW_CFG_PORT, 2, key)
    return bytes(bus.read(FW_CFG_PORT + 1, 1) for _ in range(length))


def directory(bus: PortBus) -> dict[str, tuple[int, int]]:
    count = int.from_bytes(read_item(bus, FILE_DIR, 4), "big")
    entries = {}
    for _ in range(count):
        entry = bytes(bus.read(FW_CFG_PORT + 1, 1) for _ in range(64))
        name = entry[8:].rstrip(b"\0").decode()
        entries[name] = (int.from_bytes(entry[0:4], "big"), int.from_bytes(entry[4:6], "big"))
    return entries


def test_standard_items_as_a_firmware_reads_them() -> None:
    bus, _, _ = machine()
    assert read_item(bus, 0x00, 4) == b"QEMU"
    assert read_item(bus, 0x01, 4) == (3).to_bytes(4, "little")  # traditional interface and DMA
    assert read_item(bus, 0x02, 16) == bytes(range(16))
    assert read_item(bus, 0x03, 8) == (128 << 20).to_bytes(8, "little")
    assert read_item(bus, 0x04, 2) == (1).to_bytes(2, "little")  # -nographic
    assert read_item(bus, 0x05, 2) == (1).to_bytes(2, "little")
    assert read_item(bus, 0x0F, 2) == (4).to_bytes(2, "little")
    assert read_item(bus, FILE_DIR, 4) == bytes(4)  # no files


def test_past_the_end_an_unknown_key_and_odd_accesses_read_zero() -> None:
    bus, _, _ = machine()
    assert read_item(bus, 0x00, 6) == b"QEMU\0\0"
    assert read_item(bus, 0x3F, 2) == b"\0\0"  # a file slot with no file
    assert read_item(bus, 0x1234, 2) == b"\0\0"  # past the slots: an invalid selection
    assert read_item(bus, 0x8000, 2) == b"\0\0"  # arch-local: none in qmpd
    bus.write(FW_CFG_PORT, 2, 0)
    assert bus.read(FW_CFG_PORT, 2) == 0  # only byte reads are valid
    assert bus.read(FW_CFG_PORT, 1) == ord("Q")  # a byte read of 0x510 reads data too, as QEMU
    bus.write(FW_CFG_PORT + 1, 1, 0x19)  # byte writes are ignored
    bus.write(FW_CFG_PORT, 4, 0x19)  # and dword writes
    assert bus.read(FW_CFG_PORT + 1, 1) == ord("E")
    assert read_item(bus, 0x4000, 4) == b"QEMU"  # the write channel bit reads the same item


def test_files_are_sorted_in_the_directory_with_big_endian_entries() -> None:
    bus, _, _ = machine((("opt/z", b"last"), ("opt/qmpd/work", b"idle"), ("etc/x", b"")))
    assert directory(bus) == {"etc/x": (0, 0x20), "opt/qmpd/work": (4, 0x21), "opt/z": (4, 0x22)}
    assert read_item(bus, 0x21, 4) == b"idle"


def dma(bus: PortBus, memory: Memory, at: int, control: int, length: int, target: int) -> int:
    memory.write(at, control.to_bytes(4, "big") + length.to_bytes(4, "big") + target.to_bytes(8, "big"))
    bus.write(FW_CFG_DMA_PORT, 4, int.from_bytes((at >> 32).to_bytes(4, "big"), "little"))
    bus.write(FW_CFG_DMA_PORT + 4, 4, int.from_bytes((at & 0xFFFFFFFF).to_bytes(4, "big"), "little"))
    return int.from_bytes(memory.read(at, 4), "big")


def test_dma_signature_reads_as_the_guest_sees_big_endian_bytes() -> None:
    bus, _, _ = machine()
    assert bus.read(FW_CFG_DMA_PORT, 4).to_bytes(4, "little") == b"QEMU"
    assert bus.read(FW_CFG_DMA_PORT + 4, 4).to_bytes(4, "little") == b" CFG"
    assert bus.read(FW_CFG_DMA_PORT + 2, 1) == ord("M")


def test_dma_select_read_skip_and_zero_fill() -> None:
    bus, memory, _ = machine((("opt/a", b"abcdef"),))
    assert dma(bus, memory, 0x1000, DMA_SELECT | DMA_READ | 0x20 << 16, 3, 0x2000) == 0
    assert memory.read(0x2000, 3) == b"abc"
    assert dma(bus, memory, 0x1000, DMA_SKIP, 1, 0) == 0
    memory.write(0x3000, b"\xff" * 8)
    assert dma(bus, memory, 0x1000, DMA_READ, 8, 0x3000) == 0  # "ef", then zeros past the end
    assert memory.read(0x3000, 8) == b"ef" + bytes(6)


def test_dma_errors_set_the_error_bit_and_never_raise() -> None:
    bus, memory, _ = machine((("opt/a", b"abcdef"),))
    assert dma(bus, memory, 0x1000, DMA_SELECT | DMA_WRITE | 0x20 << 16, 2, 0x2000) == DMA_ERROR  # read-only
    # partly past the end of RAM: what fits is written, as QEMU
    assert dma(bus, memory, 0x1000, DMA_SELECT | DMA_READ | 0x20 << 16, 6, 0xFFFFE) == DMA_ERROR
    assert memory.read(0xFFFFE, 2) == b"ab"
    memory.write(0xFFFF0, b"\xff" * 16)
    assert dma(bus, memory, 0x1000, DMA_SELECT | DMA_READ | 0x20 << 16, 20, 0xFFFF0) == DMA_ERROR
    assert memory.read(0xFFFF0, 16) == b"abcdef" + bytes(10)  # the item, then zeros up to the end of RAM
    assert dma(bus, memory, 0x1000, DMA_READ, 0xFFFFFFFF, 1 << 40) == DMA_ERROR  # nowhere in RAM
    assert dma(bus, memory, 0x1000, 0, 0xFFFFFFFF, 0) == 0  # no operation: length 0
    # the descriptor itself outside RAM: nothing to read, nowhere to report (QEMU: the same)
    bus.write(FW_CFG_DMA_PORT, 4, 0x01000000)  # high half 1 (big-endian)
    bus.write(FW_CFG_DMA_PORT + 4, 4, 0)
    bus.write(FW_CFG_DMA_PORT + 2, 2, 0xFFFF)  # not a DMA register width/offset: ignored
    bus.write(FW_CFG_DMA_PORT + 4, 1, 0xFF)


def test_reset_and_state_round_trip() -> None:
    bus, _, device = machine()
    read_item(bus, 0x00, 2)
    saved = device.save_state()
    assert saved == {"selector": 0, "offset": 2, "dma_address": 0}
    _, _, other = machine()
    other.load_state(other.check_state(saved, 1))
    assert other.io_read(1, 1) == ord("M")
    bus.write(FW_CFG_PORT, 2, 0x1234)
    assert device.save_state()["selector"] == 0xFFFF  # an invalid selection
    device.reset_registers()
    assert device.save_state() == {"selector": 0, "offset": 0, "dma_address": 0}
    with pytest.raises(StateError, match=r"fw_cfg\.offset"):
        device.check_state({"selector": 0, "offset": -1, "dma_address": 0}, 1)


# -- -fw_cfg on the command line ---------------------------------------------------------------


def fw_cfg_options(*args: str) -> tuple[FwCfgOption, ...]:
    argv = [word for arg in args for word in ("-fw_cfg", arg)]
    return parse_args(argv).machine.fw_cfg


def test_uuid_as_qemu_parses_it() -> None:
    config = parse_args(["-uuid", "0f7e1b42-0001-0203-0405-06070809aBcD"]).machine
    assert config.uuid == bytes.fromhex("0f7e1b42000102030405060708 09abcd".replace(" ", ""))
    assert parse_args([]).machine.uuid == bytes(16)
    for bad in ("bogus", "0f7e1b42-0001-0203-0405-06070809abc", "0f7e1b42+0001-0203-0405-06070809abcd", "g" * 36):
        with pytest.raises(CLIError, match=f"^-uuid {re.escape(bad)}: failed to parse UUID string: wrong format$"):
            parse_args(["-uuid", bad])


def test_option_keys_as_qemuopts() -> None:
    assert fw_cfg_options("opt/a,string=x,,y") == (FwCfgOption("opt/a,string=x,,y", "opt/a", string="x,y"),)
    assert fw_cfg_options("name=opt/a,string=x,string=y")[0].string == "y"
    with pytest.raises(CLIError, match=r"^-fw_cfg name=opt/a,bogus=1: Invalid parameter 'bogus'$"):
        fw_cfg_options("name=opt/a,bogus=1")


NEEDED = "name, plus exactly one of file, string and gen_id, are needed"


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("string=x", NEEDED),
        ("name=opt/a", NEEDED),
        ("name=,string=x", NEEDED),
        ("name=opt/a,string=", NEEDED),
        ("name=opt/a,file=", NEEDED),
        ("name=opt/a,string=x,file=/etc/hostname", NEEDED),
        ("name=opt/" + "a" * 52 + ",string=x", "name too long (max. 55 char)"),
        (
            "name=opt/a,file=/nonexistent",
            "can't load /nonexistent: Failed to open file “/nonexistent”: No such file or directory",
        ),
        ("name=opt/a,file=/tmp", "can't load /tmp: Error reading file “/tmp”: Is a directory"),
        ("name=opt/a,gen_id=x", "Cannot find object ID 'x'"),
    ],
)
def test_errors_are_qemus(arg: str, message: str) -> None:
    """Texts as QEMU 7.2 prints them (measured) after "qemu-system-x86_64: -fw_cfg ARG: "."""
    with pytest.raises(FwCfgError) as caught:
        load_fw_cfg_files(fw_cfg_options(arg), available=True)
    assert str(caught.value) == f"-fw_cfg {arg}: {message}"


def test_names_warnings_duplicates_and_bounds(tmp_path: Path) -> None:
    longest = "opt/" + "a" * 51
    files, warnings = load_fw_cfg_files(fw_cfg_options(f"{longest},string=x", "etc/foo,string=y"), available=True)
    assert files == ((longest, b"x"), ("etc/foo", b"y"))  # strings without their NUL
    assert warnings == (
        '-fw_cfg etc/foo,string=y: warning: externally provided fw_cfg item names should be prefixed with "opt/"',
    )
    with pytest.raises(FwCfgError, match=r"^-fw_cfg name=opt/a,string=y: duplicate fw_cfg file name: opt/a$"):
        load_fw_cfg_files(fw_cfg_options("name=opt/a,string=x", "name=opt/a,string=y"), available=True)
    with pytest.raises(FwCfgError) as caught:  # QEMU has printed the warnings of both by then
        load_fw_cfg_files(fw_cfg_options("foo,string=x", "foo,string=y"), available=True)
    assert [warning.split(":")[0] for warning in caught.value.warnings] == [
        "-fw_cfg foo,string=x",
        "-fw_cfg foo,string=y",
    ]
    with pytest.raises(FwCfgError, match=r"^-fw_cfg name=opt/a,string=x: fw_cfg device not available$"):
        load_fw_cfg_files(fw_cfg_options("name=opt/a,string=x"), available=False)
    many = [f"opt/f{index},string=x" for index in range(FILE_SLOTS + 1)]
    with pytest.raises(FwCfgError, match="32 file slots"):
        load_fw_cfg_files(fw_cfg_options(*many), available=True)
    with pytest.raises(FwCfgError, match="at most 16 MiB"):  # read no further than the bound
        load_fw_cfg_files(fw_cfg_options("opt/z,file=/dev/zero"), available=True)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: reading it would block the start for ever
    with pytest.raises(FwCfgError, match="a FIFO or socket could block the start"):
        load_fw_cfg_files(fw_cfg_options(f"opt/f,file={fifo}"), available=True)
    big = tmp_path / "big"
    big.write_bytes(bytes(MAX_CONTENTS))
    assert len(load_fw_cfg_files(fw_cfg_options(f"opt/b,file={big}"), available=True)[0][0][1]) == MAX_CONTENTS
    with pytest.raises(FwCfgError, match="at most 16 MiB"):
        load_fw_cfg_files(fw_cfg_options(f"opt/b,file={big}", "opt/c,string=x"), available=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    with pytest.raises(FwCfgError, match=f"Failed to open file “{secret}”: Permission denied$"):
        load_fw_cfg_files(fw_cfg_options(f"opt/s,file={secret}"), available=True)


@pytest.mark.parametrize("port", ["0x510", "0x511", "0x514", "0x51b"])
def test_an_isa_device_on_fw_cfg_ports_is_refused(port: str) -> None:
    config = parse_args(["-device", f"isa-debug-exit,iobase={port},iosize=1"]).machine
    with pytest.raises(SpecError, match=f"^isa-debug-exit: I/O port {port} is already used by fw_cfg$"):
        build_spec(config)
    assert build_spec(parse_args(["-device", "isa-debug-exit,iobase=0x512,iosize=2"]).machine).port_devices


def test_machine_spec_carries_files_and_machine_none_has_no_fw_cfg() -> None:
    config = MachineConfig(fw_cfg=fw_cfg_options("opt/qmpd/work,string=idle"))
    assert build_spec(config).fw_cfg_files == (("opt/qmpd/work", b"idle"),)
    with pytest.raises(SpecError, match="fw_cfg device not available"):
        build_spec(config._replace(machine_type="none"))
