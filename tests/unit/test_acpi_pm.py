"""The PM1 registers: the power button, soft-off and the PM timer, as QEMU's PIIX4 PM / ICH9 LPC."""

from __future__ import annotations

from qmpd.devices.acpi_pm import PWRBTN, SLP_EN, PM1Block


class Recorder:
    def __init__(self) -> None:
        self.sci = 0
        self.soft_off = 0

    def block(self) -> PM1Block:
        def sci() -> None:
            self.sci += 1

        def off() -> None:
            self.soft_off += 1

        return PM1Block(on_sci=sci, on_soft_off=off)


def test_the_power_button_does_nothing_until_the_guest_enables_it() -> None:
    seen = Recorder()
    pm = seen.block()
    assert not pm.press_power_button()
    assert pm.io_read(0, 2) == 0 and seen.sci == 0
    pm.io_write(2, 2, PWRBTN)
    assert pm.io_read(2, 2) == PWRBTN
    assert pm.press_power_button()
    assert pm.io_read(0, 2) == PWRBTN and pm.io_read(1, 1) == PWRBTN >> 8
    assert seen.sci == 1


def test_status_bits_are_write_one_to_clear() -> None:
    pm = Recorder().block()
    pm.io_write(2, 2, PWRBTN)
    pm.press_power_button()
    pm.io_write(0, 2, 0)
    assert pm.io_read(0, 2) == PWRBTN
    pm.io_write(1, 1, PWRBTN >> 8)  # a byte write to the high half
    assert pm.io_read(0, 2) == 0


def test_slp_en_with_type_0_is_soft_off_and_is_not_kept() -> None:
    seen = Recorder()
    pm = seen.block()
    pm.io_write(4, 2, 1)  # SCI_EN alone
    assert seen.soft_off == 0 and pm.io_read(4, 2) == 1
    pm.io_write(4, 2, 1 | 1 << 10 | SLP_EN)  # S3 (SLP_TYP 1): not emulated, ignored
    assert seen.soft_off == 0
    pm.io_write(4, 2, 1 | SLP_EN)
    assert seen.soft_off == 1
    assert pm.io_read(4, 2) == 1  # SLP_EN reads back 0
    pm.io_write(5, 1, SLP_EN >> 8)  # the same through the high byte alone
    assert seen.soft_off == 2


def test_enabling_a_pending_status_raises_the_sci() -> None:
    seen = Recorder()
    pm = seen.block()
    pm.io_write(2, 2, PWRBTN)
    pm.press_power_button()
    pm.io_write(2, 2, 0)
    before = seen.sci
    pm.io_write(2, 2, PWRBTN)
    assert seen.sci == before + 1


def test_the_pm_timer_counts_up_in_24_bits() -> None:
    pm = Recorder().block()
    first = pm.io_read(8, 4)
    assert 0 <= first < 1 << 24
    assert any(pm.io_read(8, 4) != first for _ in range(100_000))
    assert pm.io_read(8, 4) < 1 << 24


def test_reset_clears_everything() -> None:
    pm = Recorder().block()
    pm.io_write(2, 2, PWRBTN)
    pm.press_power_button()
    pm.io_write(4, 2, 1)
    pm.reset_registers()
    assert (pm.io_read(0, 2), pm.io_read(2, 2), pm.io_read(4, 2)) == (0, 0, 0)
