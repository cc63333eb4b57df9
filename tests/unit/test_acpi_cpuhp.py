"""The ACPI CPU hot-plug register block and GPE0 (QEMU's docs/specs/acpi_cpu_hotplug.rst and hw/acpi/cpu.c).

Firmware and guest AML drive these registers byte by byte; every value here
is the one QEMU's cpu_status_read/cpu_hotplug_rd returns for the same access
sequence, and every callback is what QEMU would do (ACPI_DEVICE_OST, an eject).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from qmpd.devices.acpi_cpuhp import GPE_CPU_HOTPLUG, LEGACY_LEN, MODERN_LEN, CPUHotplugBlock, GPEBlock

# Modern register offsets and command numbers (acpi_cpu_hotplug.rst).
SELECTOR = DATA2 = 0
FLAGS = 4
COMMAND = 5
DATA = 8
CMD_NEXT_EVENT, CMD_OST_EVENT, CMD_OST_STATUS, CMD_ARCH_ID = 0, 1, 2, 3
ENABLED, INSERT, REMOVE, FW_REMOVE = 1, 2, 4, 16
CLEAR_INSERT, CLEAR_REMOVE, EJECT, FW_EJECT = 2, 4, 8, 16


@dataclass
class Recorder:
    """What the block asked the machine to do."""

    ejects: list[int] = field(default_factory=list)
    osts: list[dict[str, object]] = field(default_factory=list)
    mode_changes: int = 0
    scis: int = 0

    def mode_changed(self) -> None:
        self.mode_changes += 1

    def sci(self) -> None:
        self.scis += 1


def make_block(arch_ids: list[int], recorder: Recorder, gpe_len: int = 4) -> CPUHotplugBlock:
    gpe = GPEBlock(gpe_len, on_sci=recorder.sci)
    return CPUHotplugBlock(
        arch_ids,
        gpe,
        on_eject=recorder.ejects.append,
        on_ost=recorder.osts.append,
        on_mode_change=recorder.mode_changed,
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def block(recorder: Recorder) -> CPUHotplugBlock:
    """Four slots (APIC IDs 0-3), CPUs 0 and 1 present from boot, switched to modern mode."""
    cpuhp = make_block([0, 1, 2, 3], recorder)
    cpuhp.plug(0, None, hotplugged=False)
    cpuhp.plug(1, "cpu1", hotplugged=False)
    cpuhp.io_write(0, 1, 0)
    assert not cpuhp.legacy and recorder.mode_changes == 1
    return cpuhp


def select(block: CPUHotplugBlock, index: int) -> None:
    block.io_write(SELECTOR, 4, index)


def flags(block: CPUHotplugBlock, index: int) -> int:
    select(block, index)
    return block.io_read(FLAGS, 1)


# -- legacy mode -------------------------------------------------------------------------------


def test_legacy_bitmap_of_present_cpus_by_apic_id(recorder: Recorder) -> None:
    cpuhp = make_block([0, 1, 9, 17, 255], recorder)
    for index in (0, 2, 4):  # APIC IDs 0, 9, 255
        cpuhp.plug(index, None, hotplugged=False)
    bitmap = [cpuhp.io_read(offset, 1) for offset in range(LEGACY_LEN)]
    assert bitmap == [0x01, 0x02] + [0] * 29 + [0x80]
    assert cpuhp.io_read(LEGACY_LEN, 1) == 0
    cpuhp.plug(1, None, hotplugged=False)  # APIC ID 1: bit 1 of byte 0
    cpuhp.plug(3, None, hotplugged=False)  # APIC ID 17: bit 1 of byte 2
    assert [cpuhp.io_read(offset, 1) for offset in range(3)] == [0x03, 0x02, 0x02]
    cpuhp.unplug(0)
    assert cpuhp.io_read(0, 1) == 0x02


def test_a_cpu_hot_plugged_in_legacy_mode_keeps_its_insert_event_for_modern_mode(recorder: Recorder) -> None:
    """qmpd's deliberate difference: QEMU drops the event at the switch, so no _OST would ever come."""
    cpuhp = make_block([0, 1, 2], recorder)
    cpuhp.plug(0, None, hotplugged=False)
    cpuhp.plug(1, "cpu1", hotplugged=True)
    assert cpuhp.io_read(0, 1) == 0x03, "the legacy bitmap shows it at once"
    assert cpuhp.gpe.status & GPE_CPU_HOTPLUG
    cpuhp.io_write(0, 1, 0)
    assert flags(cpuhp, 1) == ENABLED | INSERT
    assert flags(cpuhp, 0) == ENABLED, "a CPU present from the start has no event"
    select(cpuhp, 0)
    cpuhp.io_write(COMMAND, 1, CMD_NEXT_EVENT)
    assert cpuhp.io_read(DATA, 4) == 1


def test_only_zero_at_offset_zero_leaves_legacy_mode(recorder: Recorder) -> None:
    cpuhp = make_block([0, 1], recorder)
    cpuhp.plug(0, None, hotplugged=False)
    cpuhp.io_write(0, 1, 1)
    cpuhp.io_write(1, 1, 0)
    cpuhp.io_write(4, 1, 0)
    assert cpuhp.legacy and recorder.mode_changes == 0
    assert cpuhp.io_read(0, 1) == 0x01, "still the bitmap"
    assert cpuhp.ospm_status() == []
    cpuhp.io_write(0, 1, 0)
    assert not cpuhp.legacy and recorder.mode_changes == 1
    # Now offset 0 is the modern selector/data2 register: 0 for command 0, not the bitmap.
    assert cpuhp.io_read(0, 1) == 0
    assert cpuhp.io_read(FLAGS, 1) == ENABLED
    cpuhp.io_write(0, 4, 0)
    assert recorder.mode_changes == 1, "a selector write in modern mode is not another switch"


# -- modern mode: selector and flags ----------------------------------------------------------------


def test_flags_enabled_insert_remove(block: CPUHotplugBlock, recorder: Recorder) -> None:
    assert [flags(block, index) for index in range(4)] == [ENABLED, ENABLED, 0, 0]
    block.plug(2, "cpu2", hotplugged=True)
    assert flags(block, 2) == ENABLED | INSERT
    block.request_unplug(1)
    assert flags(block, 1) == ENABLED | REMOVE
    assert recorder.ejects == [] and recorder.osts == []


def test_control_bits_first_set_bit_wins(block: CPUHotplugBlock) -> None:
    block.plug(2, "cpu2", hotplugged=True)
    block.request_unplug(2)
    assert flags(block, 2) == ENABLED | INSERT | REMOVE
    block.io_write(FLAGS, 1, CLEAR_INSERT | CLEAR_REMOVE)
    assert block.io_read(FLAGS, 1) == ENABLED | REMOVE, "bit 1 wins over bit 2"
    block.io_write(FLAGS, 1, CLEAR_REMOVE)
    assert block.io_read(FLAGS, 1) == ENABLED


def test_out_of_range_selector_reads_zero_and_ignores_writes(block: CPUHotplugBlock, recorder: Recorder) -> None:
    block.request_unplug(1)
    select(block, 4)
    assert [block.io_read(offset, 4) for offset in (0, 4, 5, 8)] == [0, 0, 0, 0]
    block.io_write(COMMAND, 1, CMD_ARCH_ID)
    block.io_write(FLAGS, 1, EJECT)
    block.io_write(DATA, 4, 0x80)
    assert recorder.ejects == [] and recorder.osts == []
    select(block, 1)
    assert block.io_read(FLAGS, 1) == ENABLED | REMOVE
    assert block.io_read(DATA, 4) == 1, "command is still 0 (next event): data is the selector"
    select(block, 0xFFFFFFFF)
    assert block.io_read(FLAGS, 1) == 0


def test_reads_beyond_the_modern_block_are_zero(block: CPUHotplugBlock) -> None:
    select(block, 0)
    assert block.io_read(MODERN_LEN, 1) == 0
    assert block.io_read(COMMAND, 1) == 0


# -- commands -------------------------------------------------------------------------------------


def test_next_cpu_with_event_scans_from_the_selector_and_wraps(block: CPUHotplugBlock) -> None:
    block.plug(2, "cpu2", hotplugged=True)  # insert event on 2
    block.request_unplug(1)  # remove event on 1
    select(block, 3)
    block.io_write(COMMAND, 1, CMD_NEXT_EVENT)
    assert block.io_read(DATA, 4) == 1, "3 has none, wraps to 0 (none), then 1"
    assert block.io_read(DATA2, 4) == 0
    select(block, 2)
    block.io_write(COMMAND, 1, CMD_NEXT_EVENT)
    assert block.io_read(DATA, 4) == 2, "the selected CPU itself counts"
    block.io_write(FLAGS, 1, CLEAR_INSERT)
    block.io_write(COMMAND, 1, CMD_NEXT_EVENT)
    assert block.io_read(DATA, 4) == 1
    block.io_write(FLAGS, 1, CLEAR_REMOVE)
    select(block, 3)
    block.io_write(COMMAND, 1, CMD_NEXT_EVENT)
    assert block.io_read(DATA, 4) == 3, "no event anywhere: the selector stays"


def test_firmware_eject_flag_is_an_event_and_eject_clears_it(block: CPUHotplugBlock, recorder: Recorder) -> None:
    select(block, 1)
    block.io_write(FLAGS, 1, FW_EJECT)
    assert block.io_read(FLAGS, 1) == ENABLED | FW_REMOVE
    select(block, 3)
    block.io_write(COMMAND, 1, CMD_NEXT_EVENT)
    assert block.io_read(DATA, 4) == 1
    block.io_write(FLAGS, 1, EJECT)
    assert recorder.ejects == [1]
    assert block.io_read(FLAGS, 1) == 0, "ejected: the slot is empty at once, as in QEMU"
    block.request_unplug(1)
    assert block.io_read(FLAGS, 1) == 0, "a late device_del of an ejected CPU raises no new event"
    for index in (0, 3):  # boot CPU, empty slot
        select(block, index)
        block.io_write(FLAGS, 1, FW_EJECT)
        assert block.io_read(FLAGS, 1) & FW_REMOVE == 0


def test_arch_id_command_low_and_high_words(recorder: Recorder) -> None:
    cpuhp = make_block([0, 0x1_2345_6789], recorder)
    cpuhp.io_write(0, 1, 0)
    select(cpuhp, 1)
    cpuhp.io_write(COMMAND, 1, CMD_ARCH_ID)
    assert cpuhp.io_read(DATA, 4) == 0x2345_6789
    assert cpuhp.io_read(DATA2, 4) == 1
    cpuhp.io_write(COMMAND, 1, 4)  # not a command: ignored, command 3 stays
    assert cpuhp.io_read(DATA, 4) == 0x2345_6789
    cpuhp.io_write(COMMAND, 1, CMD_OST_EVENT)
    assert cpuhp.io_read(DATA, 4) == 0 and cpuhp.io_read(DATA2, 4) == 0


def test_ost_event_then_status_sends_acpi_device_ost(block: CPUHotplugBlock, recorder: Recorder) -> None:
    select(block, 1)
    block.io_write(COMMAND, 1, CMD_OST_EVENT)
    block.io_write(DATA, 4, 0x103)
    assert recorder.osts == [], "the event code alone sends nothing"
    block.io_write(COMMAND, 1, CMD_OST_STATUS)
    block.io_write(DATA, 4, 0x80)
    assert recorder.osts == [{"device": "cpu1", "slot": "1", "slot-type": "CPU", "source": 0x103, "status": 0x80}]
    assert list(recorder.osts[0]) == ["device", "slot", "slot-type", "source", "status"]
    select(block, 0)  # no id: no "device" member (QAPI's optional has_device)
    block.io_write(DATA, 4, 0)
    assert recorder.osts[1] == {"slot": "0", "slot-type": "CPU", "source": 0, "status": 0}


def test_ospm_status_one_entry_per_slot_in_modern_mode(block: CPUHotplugBlock) -> None:
    select(block, 1)
    block.io_write(COMMAND, 1, CMD_OST_EVENT)
    block.io_write(DATA, 4, 3)
    block.io_write(COMMAND, 1, CMD_OST_STATUS)
    block.io_write(DATA, 4, 0x8F)
    assert block.ospm_status() == [
        {"slot": "0", "slot-type": "CPU", "source": 0, "status": 0},
        {"device": "cpu1", "slot": "1", "slot-type": "CPU", "source": 3, "status": 0x8F},
        {"slot": "2", "slot-type": "CPU", "source": 0, "status": 0},
        {"slot": "3", "slot-type": "CPU", "source": 0, "status": 0},
    ]


# -- eject, plug, unplug ------------------------------------------------------------------------------


def test_eject_only_for_a_present_non_boot_cpu(block: CPUHotplugBlock, recorder: Recorder) -> None:
    for index in (0, 2, 3):  # boot CPU, two empty slots
        select(block, index)
        block.io_write(FLAGS, 1, EJECT)
    assert recorder.ejects == []
    select(block, 1)
    block.io_write(FLAGS, 1, EJECT)
    assert recorder.ejects == [1]
    block.io_write(FLAGS, 1, CLEAR_INSERT | EJECT)
    assert recorder.ejects == [1], "clear-insert wins over eject"


def test_hotplug_raises_gpe_status_bit_2_and_sci_only_when_enabled(recorder: Recorder) -> None:
    cpuhp = make_block([0, 1, 2], recorder)
    gpe = cpuhp.gpe
    cpuhp.plug(0, None, hotplugged=False)
    assert gpe.io_read(0, 1) == 0, "a cold-plugged CPU raises nothing"
    cpuhp.io_write(0, 1, 0)
    cpuhp.plug(1, "cpu1", hotplugged=True)
    assert gpe.io_read(0, 1) == GPE_CPU_HOTPLUG == 0b100
    assert recorder.scis == 0, "GPE0 enable is clear"
    assert flags(cpuhp, 1) == ENABLED | INSERT
    gpe.io_write(2, 1, GPE_CPU_HOTPLUG)  # enable half starts at len/2
    assert gpe.io_read(2, 1) == GPE_CPU_HOTPLUG
    assert recorder.scis == 1, "enabling a pending event asserts the SCI"
    gpe.io_write(0, 1, 0)
    assert gpe.io_read(0, 1) == GPE_CPU_HOTPLUG, "writing 0 clears nothing"
    gpe.io_write(0, 1, GPE_CPU_HOTPLUG)
    assert gpe.io_read(0, 1) == 0, "write 1 to clear"
    cpuhp.request_unplug(1)
    assert gpe.io_read(0, 1) == GPE_CPU_HOTPLUG and recorder.scis == 2
    assert flags(cpuhp, 1) == ENABLED | INSERT | REMOVE


def test_gpe_q35_length_and_partial_enable_writes(recorder: Recorder) -> None:
    gpe = GPEBlock(16, on_sci=recorder.sci)
    gpe.io_write(8, 1, 0xFF)
    gpe.io_write(9, 1, 0x5A)
    assert gpe.io_read(8, 1) & 0xFF == 0xFF and gpe.io_read(9, 1) & 0xFF == 0x5A
    gpe.io_write(8, 1, 0x00)
    assert gpe.enable == 0x5A00, "a byte write replaces only its byte"
    gpe.raise_event(GPE_CPU_HOTPLUG)
    assert recorder.scis == 0 and gpe.io_read(0, 1) == GPE_CPU_HOTPLUG
    gpe.io_write(8, 1, GPE_CPU_HOTPLUG)
    assert recorder.scis == 1


def test_unplug_clears_the_slot(block: CPUHotplugBlock) -> None:
    block.request_unplug(1)
    select(block, 1)
    block.io_write(FLAGS, 1, FW_EJECT)
    block.unplug(1)
    assert flags(block, 1) == 0
    assert block.ospm_status()[1] == {"slot": "1", "slot-type": "CPU", "source": 0, "status": 0}
    block.plug(1, None, hotplugged=True)
    assert flags(block, 1) == ENABLED | INSERT


def test_a_restored_block_scans_to_its_saved_events(block: CPUHotplugBlock, recorder: Recorder) -> None:
    block.plug(3, "cpu3", hotplugged=True)
    restored = make_block([0, 1, 2, 3], recorder)
    restored.load_state(restored.check_state(block.save_state(), 1))
    select(restored, 0)
    restored.io_write(COMMAND, 1, CMD_NEXT_EVENT)
    assert restored.io_read(DATA, 4) == 3
    restored.io_write(FLAGS, 1, CLEAR_INSERT)
    select(restored, 1)
    restored.io_write(COMMAND, 1, CMD_NEXT_EVENT)
    assert restored.io_read(DATA, 4) == 1, "no event left: the selector stays"
