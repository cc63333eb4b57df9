"""A guest CPU that misbehaves: the others go on, QMP answers, and QEMU's reports and recoveries hold.

The bundled firmware built with `--defsym FAULT=k` (see the top of
examples/firmware/qmpd-firmware.S) makes the CPU with APIC ID 1 misbehave after
a few thousand iterations.  What a client sees is what QEMU shows for the
same guest: an exception the guest handles is the guest's business (no event;
the firmware reports it on debugcon and stops that CPU), unassigned memory
reads 0, a triple fault resets the machine (RESET, reason guest-reset), and a
CPU that never parks is stopped by the firmware with INIT so device_del still
ends with DEVICE_DELETED.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import firmware_variant as build_firmware
from tests.helpers import read_u64s, wait_until
from tests.integration.test_hotplug import Guest, running_guest

COUNTERS = 0x200000
STATE = 0x204000
UNASSIGNED_RESULT = 0x20B010
SMP = "1,sockets=1,cores=2,threads=2,maxcpus=4"
CPU1 = {"driver": "Haswell-x86_64-cpu", "id": "cpu1", "socket-id": 0, "core-id": 0, "thread-id": 1}
UD2, UNASSIGNED, TRIPLE_FAULT, SPIN, NO_PARK, UNASSIGNED_FETCH = 1, 2, 3, 4, 5, 6


def firmware_variant(tmp_path: Path, kind: int) -> Path:
    """The bundled firmware's sources built with FAULT=kind."""
    return build_firmware(tmp_path, FAULT=kind)


@pytest.fixture
def variant(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Guest]:
    kind, smp = request.param
    argv = ["-machine", "pc", "-cpu", "Haswell", "-smp", smp, "-bios", str(firmware_variant(tmp_path, kind))]
    with running_guest(argv, tmp_path) as guest:
        yield guest


def counter(guest: Guest, apic_id: int) -> int:
    return read_u64s(guest.client, COUNTERS + 8 * apic_id, 1)[0]


def vcpu_threads(guest: Guest) -> int:
    """Threads named "CPU n/TCG" (worker threads of dumps and long HMP outputs come and go on their own)."""
    count = 0
    for task in Path(f"/proc/{guest.server.process.pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the thread ended while we looked
            count += (task / "comm").read_text().startswith("CPU ")
    return count


def plug_cpu1(guest: Guest) -> None:
    assert guest.client.execute("device_add", CPU1) == {"return": {}}
    guest.event("ACPI_DEVICE_OST", device="cpu1", source=1, status=0)
    guest.online(1, 1)


def unplug_cpu1(guest: Guest, console_line: str) -> None:
    """device_del ends as with a healthy CPU: the firmware's _OST, then DEVICE_DELETED."""
    assert guest.client.execute("device_del", {"id": "cpu1"}) == {"return": {}}
    guest.event("ACPI_DEVICE_OST", device="cpu1", source=3, status=0x84)
    guest.event("DEVICE_DELETED", device="cpu1")
    assert console_line in guest.console()
    assert [cpu["cpu-index"] for cpu in guest.client.execute("query-cpus-fast")["return"]] == [0]


def assert_others_run_and_qmp_answers(guest: Guest) -> None:
    before = counter(guest, 0)
    wait_until(lambda: counter(guest, 0) > before + 1000)
    assert guest.client.execute("query-status")["return"]["status"] == "running"


@pytest.mark.parametrize(
    ("variant", "vector"), [((UD2, SMP), 6), ((UNASSIGNED_FETCH, SMP), 6)], indirect=["variant"], ids=["ud2", "fetch"]
)
def test_an_exception_stops_only_that_cpu_and_device_del_removes_it(variant: Guest, vector: int) -> None:
    guest = variant
    threads = vcpu_threads(guest)
    plug_cpu1(guest)
    line = f"CPU 1 (APIC ID 1) exception {vector}\n"
    wait_until(lambda: line in guest.console())
    stopped_at = counter(guest, 1)
    assert_others_run_and_qmp_answers(guest)
    assert counter(guest, 1) == stopped_at, "the faulting CPU stays stopped"
    assert read_u64s(guest.client, STATE + 8, 1) == [5]
    assert [cpu["cpu-index"] for cpu in guest.client.execute("query-cpus-fast")["return"]] == [0, 1]
    assert not [e for e in guest.client.events if e["event"] != "ACPI_DEVICE_OST"], "QEMU sends no event"
    unplug_cpu1(guest, "CPU 1 (APIC ID 1) parked")
    wait_until(lambda: vcpu_threads(guest) == threads)


@pytest.mark.parametrize("variant", [(UD2, SMP)], indirect=True)
def test_system_reset_restarts_a_stopped_cpu(variant: Guest) -> None:
    guest = variant
    plug_cpu1(guest)
    wait_until(lambda: "exception 6" in guest.console())
    stopped_at = counter(guest, 1)
    assert guest.client.execute("system_reset") == {"return": {}}
    assert guest.event("RESET")["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    wait_until(lambda: guest.console().count("CPU 1 (APIC ID 1) online") == 2)
    wait_until(lambda: guest.console().count("exception 6") == 2)
    assert counter(guest, 1) > stopped_at, "it ran again after the reset"
    assert_others_run_and_qmp_answers(guest)


@pytest.mark.parametrize("variant", [(TRIPLE_FAULT, "2,sockets=1,cores=2,threads=1")], indirect=True)
def test_a_triple_fault_resets_the_machine_as_qemu_does(variant: Guest) -> None:
    guest = variant
    event = guest.event("RESET")
    assert event["data"] == {"guest": True, "reason": "guest-reset"}
    # (the reset may cut the first boot's lines short: CPU 1 can fault before its banner is printed)
    wait_until(lambda: guest.console().count("qmpd firmware: booting") == 2)
    wait_until(lambda: "CPU 1 (APIC ID 1) online" in guest.console().rsplit("booting", 1)[1])
    # The firmware triple-faults once (a flag in RAM survives the reset): afterwards both CPUs run on.
    before = counter(guest, 1)
    wait_until(lambda: counter(guest, 1) > before + 1000)
    assert_others_run_and_qmp_answers(guest)
    assert [e["event"] for e in guest.client.events] == []


@pytest.mark.parametrize("variant", [(UNASSIGNED, SMP)], indirect=True)
def test_unassigned_memory_reads_zero_and_the_cpu_goes_on(variant: Guest) -> None:
    guest = variant
    plug_cpu1(guest)
    wait_until(lambda: read_u64s(guest.client, UNASSIGNED_RESULT, 1) == [1])  # wrote -1, read back 0
    before = counter(guest, 1)
    wait_until(lambda: counter(guest, 1) > before + 1000)
    assert "exception" not in guest.console()
    unplug_cpu1(guest, "CPU 1 (APIC ID 1) parked")


@pytest.mark.parametrize("variant", [(SPIN, SMP), (NO_PARK, SMP)], indirect=True, ids=["tight-loop", "never-parks"])
def test_a_cpu_that_never_parks_is_stopped_with_init_and_ejected(variant: Guest) -> None:
    guest = variant
    threads = vcpu_threads(guest)
    plug_cpu1(guest)
    time.sleep(0.2)  # it is past FAULT_AFTER now: spinning, or working without looking at its park request
    assert_others_run_and_qmp_answers(guest)
    # stop/cont still stop every vCPU, the spinning one too
    assert guest.client.execute("stop") == {"return": {}}
    guest.event("STOP")
    frozen = counter(guest, 0), counter(guest, 1)
    time.sleep(0.1)
    assert (counter(guest, 0), counter(guest, 1)) == frozen
    assert guest.client.execute("cont") == {"return": {}}
    guest.event("RESUME")
    unplug_cpu1(guest, "CPU 1 (APIC ID 1) did not park: stopped with INIT")
    wait_until(lambda: vcpu_threads(guest) == threads)
    assert_others_run_and_qmp_answers(guest)
