"""The ACPI power button: system_powerdown reaches the bundled firmware, which enters soft-off (S5).

libvirt's ``virsh shutdown`` (and ``reboot --mode acpi``) sends system_powerdown and waits for the guest to
power off; libvirt runs its domains with -no-shutdown, so the machine stops in run state ``shutdown`` and
libvirt's reboot is system_reset + cont.  QEMU's PIIX4/ICH9 PM decode the same registers; what reacts is
the guest (QEMU with SeaBIOS never powers off).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.integration.test_hotplug import running_guest

MACHINES = ["pc", "q35"]


@pytest.mark.parametrize("machine", MACHINES)
def test_powerdown_powers_the_guest_off_and_a_reset_boots_it_again(tmp_path: Path, machine: str) -> None:
    argv = ["-machine", machine, "-cpu", "Haswell", "-smp", "2,maxcpus=4", "-no-shutdown"]
    with running_guest(argv, tmp_path) as guest:
        guest.online(1, 1)
        assert guest.client.execute("system_powerdown") == {"return": {}}
        guest.event("POWERDOWN")
        shutdown = guest.event("SHUTDOWN")
        assert shutdown["data"] == {"guest": True, "reason": "guest-shutdown"}
        guest.event("STOP")
        status = guest.client.execute("query-status")["return"]
        assert status == {"status": "shutdown", "singlestep": False, "running": False}
        assert "power button: entering S5" in guest.console()
        # libvirt's fake reboot.
        assert guest.client.execute("system_reset") == {"return": {}}
        assert guest.client.execute("cont") == {"return": {}}
        wait_until(lambda: guest.console().count("qmpd firmware: booting") == 2)
        wait_until(lambda: guest.console().count("CPU 1 (APIC ID 1) online") == 2)
        # The power button works again after the reboot (the firmware enabled it again).
        guest.client.execute("system_powerdown")
        assert guest.event("SHUTDOWN")["data"]["reason"] == "guest-shutdown"


def test_powerdown_without_no_shutdown_ends_the_process(tmp_path: Path) -> None:
    with running_guest(["-machine", "pc", "-cpu", "Haswell"], tmp_path) as guest:
        guest.client.execute("system_powerdown")
        assert guest.event("SHUTDOWN")["data"] == {"guest": True, "reason": "guest-shutdown"}
        assert guest.server.process.wait(timeout=15) == 0


def test_without_acpi_the_button_is_not_there(tmp_path: Path) -> None:
    with running_guest(["-machine", "pc", "-cpu", "Haswell", "-no-acpi"], tmp_path) as guest:
        guest.client.execute("system_powerdown")
        guest.event("POWERDOWN")
        time.sleep(0.3)  # the firmware looks at its devices thousands of times in that time
        assert guest.client.execute("query-status")["return"]["status"] == "running"
        assert "entering S5" not in guest.console()
        assert guest.server.process.poll() is None
