"""Many CPUs online at once: the firmware's idle work mode, 63 plugged one after another.

The bundled firmware with `-fw_cfg name=opt/qmpd/work,string=idle` halts every CPU after its banner
(examples/firmware/idle.S); the boot CPU wakes for the SCI, routed through the I/O APIC.
Every plug must end in the guest's _OST, the daemon's memory must grow by about 1 MiB per
online CPU (not the 2.9 MiB of a transparent huge page per engine), and halted CPUs must
cost no CPU time.  The 1023-CPU case is bench/hotplug_bench.py's idle1024 (too heavy for CI).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, start_qmpd, wait_until

MAXCPUS = 64
IDLE = "name=opt/qmpd/work,string=idle"
#: The measured growth is ~0.95 MiB per online CPU; a transparent huge page per engine made it ~2.9.
RSS_PER_CPU_MIB = 1.5
#: Seconds from the last device_add's return to the last _OST (measured: ~0.3 s on 2 busy cores).
ACK_WITHIN = 10.0

pytestmark = pytest.mark.timeout(120)


class IdleGuest:
    def __init__(self, server: Server, client: RawClient, console: Path) -> None:
        self.server, self.client, self.console = server, client, console

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.server.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
        raise KeyError(key)

    def cpu_ticks(self) -> int:
        fields = Path(f"/proc/{self.server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def read_events(self, until: float) -> None:
        """Read one message (kept if it is an event), waiting at most until ``until`` (monotonic)."""
        try:
            message = self.client.message(timeout=max(0.01, until - time.monotonic()))
        except (TimeoutError, EOFError):  # nothing yet; or the daemon has exited (power off)
            return
        if "event" in message:
            self.client.events.append(message)

    def events(self, name: str, **data: Any) -> list[dict[str, Any]]:
        return [e for e in self.client.events if e["event"] == name and _matches(e["data"], data)]


def _matches(data: dict[str, Any], wanted: dict[str, Any]) -> bool:
    info = data.get("info", data)
    return all(info.get(key) == value for key, value in wanted.items())


@pytest.fixture
def idle_guest(tmp_path: Path) -> Iterator[IdleGuest]:
    console = tmp_path / "console.txt"
    argv = ["-machine", "pc", "-cpu", "Haswell", "-smp", f"1,maxcpus={MAXCPUS}", "-fw_cfg", IDLE]
    server = start_qmpd([*argv, "-debugcon", f"file:{console}"], tmp_path)
    try:
        client = RawClient(server.socket_path, timeout=30)
        client.negotiate()
        wait_until(lambda: "CPU 0 (APIC ID 0) online" in console.read_text(errors="replace"))
        yield IdleGuest(server, client, console)
        client.close()
    finally:
        server.stop()


def test_63_cpus_plugged_one_after_another_all_come_online(idle_guest: IdleGuest) -> None:
    client = idle_guest.client
    free = [slot["props"] for slot in reversed(client.execute("query-hotpluggable-cpus")["return"])]
    free = [props for props in free if props != {"socket-id": 0, "core-id": 0, "thread-id": 0}]
    assert len(free) == MAXCPUS - 1
    rss_before = idle_guest.status("VmRSS")
    for n, props in enumerate(free, start=1):
        reply = client.execute("device_add", {"driver": "Haswell-x86_64-cpu", "id": f"cpu{n}", **props})
        assert reply == {"return": {}}, (n, reply)
    deadline = time.monotonic() + ACK_WITHIN
    while len(idle_guest.events("ACPI_DEVICE_OST", source=1)) < len(free) and time.monotonic() < deadline:
        idle_guest.read_events(deadline)
    acknowledged = sorted(e["data"]["info"]["device"] for e in idle_guest.events("ACPI_DEVICE_OST", source=1))
    assert acknowledged == sorted(f"cpu{n}" for n in range(1, MAXCPUS)), "one _OST (success) per plugged CPU"
    assert all(e["data"]["info"]["status"] == 0 for e in idle_guest.events("ACPI_DEVICE_OST"))
    lines = idle_guest.console.read_text().splitlines()
    assert [line for line in lines if line.endswith(") online")] == [
        f"qmpd firmware: CPU {n} (APIC ID {n}) online" for n in range(MAXCPUS)
    ]
    grown_mib = (idle_guest.status("VmRSS") - rss_before) / 1024
    assert grown_mib < RSS_PER_CPU_MIB * len(free), f"RSS grew {grown_mib:.0f} MiB for {len(free)} online CPUs"
    cpus = client.execute("query-cpus-fast")["return"]
    assert len(cpus) == MAXCPUS and idle_guest.status("Threads") >= MAXCPUS

    # Halted CPUs block: the whole daemon is (nearly) idle.
    time.sleep(0.3)
    ticks = idle_guest.cpu_ticks()
    time.sleep(1.0)
    assert idle_guest.cpu_ticks() - ticks <= 10, "64 halted vCPUs used more than 0.1 s of CPU in 1 s"

    # Unplug still works with every CPU halted: the boot CPU wakes the one to park with an IPI.
    for n in (5, 40):
        assert client.execute("device_del", {"id": f"cpu{n}"}) == {"return": {}}
        deadline = time.monotonic() + ACK_WITHIN
        while not idle_guest.events("DEVICE_DELETED", device=f"cpu{n}") and time.monotonic() < deadline:
            idle_guest.read_events(deadline)
        assert idle_guest.events("ACPI_DEVICE_OST", device=f"cpu{n}", source=3, status=0x84)
        assert idle_guest.events("DEVICE_DELETED", device=f"cpu{n}"), f"cpu{n} was not ejected"
    parked = [line for line in idle_guest.console.read_text().splitlines() if line.endswith("parked")]
    assert parked == ["qmpd firmware: CPU 5 (APIC ID 5) parked", "qmpd firmware: CPU 40 (APIC ID 40) parked"]
    assert len(client.execute("query-cpus-fast")["return"]) == MAXCPUS - 2


def test_the_power_button_wakes_the_halted_boot_cpu(idle_guest: IdleGuest) -> None:
    assert idle_guest.client.execute("system_powerdown") == {"return": {}}
    deadline = time.monotonic() + ACK_WITHIN
    while not idle_guest.events("SHUTDOWN") and time.monotonic() < deadline:
        idle_guest.read_events(deadline)
    assert idle_guest.events("SHUTDOWN", guest=True, reason="guest-shutdown")
    assert idle_guest.console.read_text().endswith("qmpd firmware: power button: entering S5\n")
