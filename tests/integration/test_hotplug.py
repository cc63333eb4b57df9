"""CPU hot-plug end to end with the bundled firmware as the guest, over real sockets.

The firmware switches the ACPI CPU hot-plug block to its modern interface,
starts every inserted CPU (INIT/SIPI), reports _OST, and parks and ejects a
CPU on a remove request.  Each test drives one of the three interfaces
(device_add/device_del, cpu-add/cpu_set, the QOM topology links) and checks
what a client sees: ACPI_DEVICE_OST, DEVICE_DELETED, the queries, HMP, and
the new CPU's counter in guest RAM.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, build_guest, hmp, read_u64s, start_qmpd, wait_until

COUNTERS = 0x200000
RESULTS = 0x300000
STEP = 0x2FF000
SMP = "1,sockets=1,cores=3,threads=2,maxcpus=6"
THREAD_NODE = "/machine/topology/socket[0]/die[0]/core[{core}]/thread[{thread}]"


class Guest:
    """A qmpd running the firmware, a client, and the debugcon text."""

    def __init__(self, server: Server, client: RawClient, debugcon: Path) -> None:
        self.server = server
        self.client = client
        self.debugcon = debugcon

    def console(self) -> str:
        return self.debugcon.read_text() if self.debugcon.exists() else ""

    def event(self, name: str, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        """Wait for an event whose data contains ``match``; consume it."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.client.events):
                data = event.get("data", {})
                info = data.get("info", data)
                if event["event"] == name and all(info.get(k) == v for k, v in match.items()):
                    return self.client.events.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name} {match}; events: {self.client.events}")
            try:
                message = self.client.message(timeout=min(remaining, 0.5))
            except TimeoutError:
                continue
            if "event" in message:
                self.client.events.append(message)

    def online(self, index: int, apic_id: int) -> None:
        wait_until(lambda: f"CPU {index} (APIC ID {apic_id}) online" in self.console())

    def cpu_paths(self) -> dict[int, str]:
        return {cpu["cpu-index"]: cpu["qom-path"] for cpu in self.client.execute("query-cpus-fast")["return"]}

    def counting(self, apic_id: int, within: float = 5.0) -> bool:
        """Does the CPU's counter advance within ``within`` seconds?  (Not a fixed 50 ms: on a loaded
        2-core machine a vCPU thread may not be scheduled for longer than that.)"""
        first = read_u64s(self.client, COUNTERS + 8 * apic_id, 1)[0]
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if read_u64s(self.client, COUNTERS + 8 * apic_id, 1)[0] > first:
                return True
        return False


@contextlib.contextmanager
def running_guest(argv: list[str], tmp_path: Path, *, wait_online: bool = True) -> Iterator[Guest]:
    """qmpd with ``argv`` and debugcon to a file, a negotiated client, once the boot CPU is online (if asked)."""
    debugcon = tmp_path / "debugcon.txt"
    server = start_qmpd([*argv, "-debugcon", f"file:{debugcon}"], tmp_path)
    try:
        with RawClient(server.socket_path, timeout=15) as client:
            client.negotiate()
            machine = Guest(server, client, debugcon)
            if wait_online:
                machine.online(0, 0)
            yield machine
    finally:
        server.stop()


@pytest.fixture
def guest(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Guest]:
    with running_guest(getattr(request, "param", ["-machine", "pc", "-cpu", "Haswell", "-smp", SMP]), tmp_path) as g:
        yield g


def _check_consistent(guest: Guest) -> None:
    """query-cpus-fast, query-hotpluggable-cpus, HMP info cpus and the topology links agree."""
    client = guest.client
    cpus = guest.cpu_paths()
    slots = {
        tuple(sorted(e["props"].items())): e.get("qom-path")
        for e in client.execute("query-hotpluggable-cpus")["return"]
    }
    plugged = sorted(path for path in slots.values() if path is not None)
    assert plugged == sorted(cpus.values())
    info = hmp(client, "info cpus")
    assert sorted(int(line.split("#")[1].split(":")[0]) for line in info.splitlines()) == sorted(cpus)
    for index, path in cpus.items():
        core, thread = divmod(index, 2)
        link = client.execute("qom-get", {"path": THREAD_NODE.format(core=core, thread=thread), "property": "cpu"})
        assert link == {"return": path}


def test_each_interface_plugs_and_unplugs_with_the_guests_handshake(guest: Guest) -> None:
    client = guest.client
    ok: dict[str, Any] = {"return": {}}
    # Interface 1: device_add (QMP) into slot 1 and HMP device_add into slot 4.
    assert (
        client.execute(
            "device_add", {"driver": "Haswell-x86_64-cpu", "id": "c1", "socket-id": 0, "core-id": 0, "thread-id": 1}
        )
        == ok
    )
    assert guest.event("ACPI_DEVICE_OST", device="c1", source=1, status=0, slot="1")
    guest.online(1, 1)
    text = hmp(client, "device_add Haswell-x86_64-cpu,id=c4,socket-id=0,core-id=2,thread-id=0")
    assert all(line.startswith("warning: TCG doesn't support requested feature") for line in text.splitlines())
    guest.event("ACPI_DEVICE_OST", device="c4", source=1, status=0, slot="4")
    # Interface 2: cpu-add (QMP) into slot 2, cpu_set (HMP) into slot 3.
    assert client.execute("cpu-add", {"id": 2}) == ok
    guest.event("ACPI_DEVICE_OST", source=1, status=0, slot="2")
    assert hmp(client, "cpu_set 3 online") == ""
    guest.event("ACPI_DEVICE_OST", source=1, status=0, slot="3")
    # Interface 3: an unrealized CPU under /objects, plugged by setting slot 5's link.
    assert client.execute("object-add", {"qom-type": "Haswell-x86_64-cpu", "id": "t5"}) == ok
    assert client.execute("qom-get", {"path": "/objects/t5", "property": "realized"}) == {"return": False}
    node = THREAD_NODE.format(core=2, thread=1)
    assert client.execute("qom-set", {"path": node, "property": "cpu", "value": "/objects/t5"}) == ok
    guest.event("ACPI_DEVICE_OST", device="t5", source=1, status=0, slot="5")
    for index in range(1, 6):
        guest.online(index, index)
        assert guest.counting(index), f"CPU {index} is not counting"
    assert guest.cpu_paths() == {
        0: "/machine/unattached/device[0]",
        1: "/machine/peripheral/c1",
        4: "/machine/peripheral/c4",
        2: "/machine/unattached/device[27]",  # after kvmvapic and the 25 chipset devices QEMU's pc numbers
        3: "/machine/unattached/device[28]",
        5: "/objects/t5",
    }
    _check_consistent(guest)
    # The boot CPU stays.
    assert client.execute("device_del", {"id": "/machine/unattached/device[0]"})["error"]["desc"] == (
        "Boot CPU is unpluggable"
    )
    # Unplug through every interface: _OST(eject) first, then DEVICE_DELETED for the lapic and the CPU.
    unplugs: list[tuple[str, dict[str, Any], str, str | None, str]] = [
        ("device_del", {"id": "c1"}, "1", "c1", "/machine/peripheral/c1"),
        ("human-monitor-command", {"command-line": "device_del c4"}, "4", "c4", "/machine/peripheral/c4"),
        ("cpu_set", {"cpu": 2, "state": "offline"}, "2", None, "/machine/unattached/device[27]"),
        ("human-monitor-command", {"command-line": "cpu_set 3 offline"}, "3", None, "/machine/unattached/device[28]"),
        ("qom-set", {"path": node, "property": "cpu", "value": ""}, "5", "t5", "/objects/t5"),
    ]
    for command, arguments, slot, device, path in unplugs:
        reply = client.execute(command, arguments)
        assert reply in (ok, {"return": ""}), reply
        ost = guest.event("ACPI_DEVICE_OST", source=3, status=0x84, slot=slot)
        assert ost["data"]["info"].get("device") == device
        guest.event("DEVICE_DELETED", path=f"{path}/lapic")
        deleted = guest.event("DEVICE_DELETED", path=path)
        assert deleted["data"] == ({"device": device, "path": path} if device else {"path": path})
        assert f"CPU {slot} (APIC ID {slot}) parked" in guest.console()
    assert guest.cpu_paths() == {0: "/machine/unattached/device[0]"}
    _check_consistent(guest)
    # Only -debugcon's device (QEMU's id "debugcon") is left: every unplugged CPU is gone.
    assert client.execute("qom-list", {"path": "/machine/peripheral"})["return"] == [
        {"name": "type", "type": "string"},
        {"name": "debugcon", "type": "child<isa-debugcon>"},
    ]
    # The same slot plugs again, and the CPU counts again.
    assert (
        client.execute(
            "device_add", {"driver": "Haswell-x86_64-cpu", "id": "c1", "socket-id": 0, "core-id": 0, "thread-id": 1}
        )
        == ok
    )
    guest.event("ACPI_DEVICE_OST", device="c1", source=1, status=0)
    wait_until(lambda: guest.console().count("CPU 1 (APIC ID 1) online") == 2)
    assert guest.counting(1)
    _check_consistent(guest)


def test_qemu_cpu_plug_test_every_free_slot_with_verbatim_props(guest: Guest) -> None:
    """QEMU's cpu-plug-test (x86): props copied from query-hotpluggable-cpus, no id; here the guest onlines them."""
    client = guest.client
    free = [entry for entry in client.execute("query-hotpluggable-cpus")["return"] if "qom-path" not in entry]
    assert len(free) == 5
    for entry in free:
        reply = client.execute("device_add", {"driver": "Haswell-x86_64-cpu", **entry["props"]})
        assert reply == {"return": {}}, reply
    for index in range(1, 6):
        guest.event("ACPI_DEVICE_OST", source=1, status=0, slot=str(index))
        guest.online(index, index)
    paths = sorted(guest.cpu_paths().values())
    assert paths == [*[f"/machine/peripheral-anon/device[{n}]" for n in range(5)], "/machine/unattached/device[0]"]
    _check_consistent(guest)


@pytest.mark.parametrize(
    "guest", [["-machine", "q35", "-cpu", "Haswell", "-smp", "1,sockets=1,cores=2,threads=1,maxcpus=2"]], indirect=True
)
def test_avocado_hotplug_cpu_flow(guest: Guest) -> None:
    """tests/functional/x86_64/test_hotplug_cpu.py: add c1, the guest sees CPU 1; delete it, it disappears."""
    client = guest.client
    assert "CPU 1" not in guest.console()
    args = {"driver": "Haswell-x86_64-cpu", "socket-id": 0, "core-id": 1, "thread-id": 0, "id": "c1"}
    assert client.execute("device_add", args) == {"return": {}}
    guest.online(1, 1)
    assert client.execute("device_del", {"id": "c1"}) == {"return": {}}
    guest.event("DEVICE_DELETED", device="c1")
    assert "CPU 1 (APIC ID 1) parked" in guest.console()
    assert list(guest.cpu_paths()) == [0]


def test_unplug_waits_for_the_guest(tmp_path: Path) -> None:
    """Under -S the block is in legacy mode (QEMU's error); once the guest ran, a paused guest delays the eject."""
    debugcon = tmp_path / "debugcon.txt"
    server = start_qmpd(["-machine", "pc", "-smp", "1,maxcpus=2", "-S", "-debugcon", f"file:{debugcon}"], tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            args = {"driver": "qemu64-x86_64-cpu", "id": "c1", "socket-id": 0, "core-id": 1, "thread-id": 0}
            assert client.execute("device_add", args) == {"return": {}}
            reply = client.execute("device_del", {"id": "c1"})
            assert (
                reply["error"]["desc"] == "acpi: device unplug request for not supported device type: qemu64-x86_64-cpu"
            )
            guest = Guest(server, client, debugcon)
            assert client.execute("cont") == {"return": {}}
            guest.online(1, 1)
            assert client.execute("stop") == {"return": {}}
            assert client.execute("device_del", {"id": "c1"}) == {"return": {}}
            assert client.execute("device_del", {"id": "c1"}) == {"return": {}}, "a repeated request is not an error"
            assert client.drain(0.5) == [], "nothing happens while the guest is paused"
            assert list(guest.cpu_paths()) == [0, 1]
            assert client.execute("cont") == {"return": {}}
            guest.event("DEVICE_DELETED", device="c1")
            assert list(guest.cpu_paths()) == [0]
    finally:
        server.stop()


def test_two_sessions_plugging_the_same_slots_stay_consistent(tmp_path: Path) -> None:
    """Two monitors race device_add/device_del on the same slots; the machine stays consistent throughout."""
    debugcon = tmp_path / "debugcon.txt"
    sockets = [str(tmp_path / f"m{n}.sock") for n in range(2)]
    extra = [arg for path in sockets for arg in ("-qmp", f"unix:{path},server=on,wait=off")]
    argv = ["-machine", "pc", "-cpu", "Haswell", "-smp", SMP, "-debugcon", f"file:{debugcon}", *extra]
    server = start_qmpd(argv, tmp_path)
    errors: list[str] = []
    rounds: list[int] = [0, 0]

    def worker(number: int) -> None:
        try:
            with RawClient(sockets[number], timeout=30) as client:
                client.negotiate()
                for round_number in range(40):
                    slot = 1 + (round_number + number) % 5
                    core, thread = divmod(slot, 2)
                    args = {"driver": "Haswell-x86_64-cpu", "socket-id": 0, "core-id": core, "thread-id": thread}
                    reply = client.execute("device_add", {**args, "id": f"s{number}r{round_number}"})
                    if "error" in reply and "exists" not in reply["error"]["desc"]:
                        errors.append(reply["error"]["desc"])
                    for cpu in client.execute("query-cpus-fast")["return"]:
                        if cpu["cpu-index"] == slot and cpu["qom-path"].startswith("/machine/peripheral/"):
                            reply = client.execute("device_del", {"id": cpu["qom-path"]})
                            if "error" in reply and "not found" not in reply["error"]["desc"]:
                                errors.append(reply["error"]["desc"])
                    rounds[number] += 1
        except Exception as exc:  # reported by the assertion below
            errors.append(repr(exc))

    try:
        with RawClient(server.socket_path, timeout=15) as client:
            client.negotiate()
            guest = Guest(server, client, debugcon)
            guest.online(0, 0)
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert rounds == [40, 40] and errors == []
            # Let pending ejects finish; then everything must agree, and every slot must still work.
            time.sleep(1.0)
            _check_consistent(guest)
            for index, path in guest.cpu_paths().items():
                if index:
                    client.execute("device_del", {"id": path})
            wait_until(lambda: list(guest.cpu_paths()) == [0], timeout=20)
            _check_consistent(guest)
            free = [entry for entry in client.execute("query-hotpluggable-cpus")["return"] if "qom-path" not in entry]
            for entry in free:
                assert client.execute("device_add", {"driver": "Haswell-x86_64-cpu", **entry["props"]}) == {
                    "return": {}
                }
            for index in range(1, 6):
                wait_until(lambda index=index: guest.counting(index))  # type: ignore[misc]
            _check_consistent(guest)
    finally:
        server.stop()


def test_register_sequence_seen_by_a_guest_matches_qemus(tmp_path: Path) -> None:
    """qemu-facts.md section 3's observed plug and eject sequence, read by tests/guests/cpuhp.S."""
    image = build_guest("cpuhp", tmp_path)
    argv = ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=2,cores=2,maxcpus=4", "-S", "-bios", str(image)]
    server = start_qmpd(argv, tmp_path)
    try:
        with RawClient(server.socket_path, timeout=15) as client:
            client.negotiate()
            guest = Guest(server, client, tmp_path / "none")
            plug = {"driver": "Haswell-x86_64-cpu", "socket-id": 1, "core-id": 0, "thread-id": 0, "id": "vcpu2"}
            assert client.execute("device_add", plug) == {"return": {}}, "plugged while the block is still legacy"
            assert client.execute("cont") == {"return": {}}
            wait_until(lambda: read_u64s(client, STEP, 1) == [1])
            plug = {"driver": "Haswell-x86_64-cpu", "socket-id": 0, "core-id": 1, "thread-id": 0, "id": "vcpu1"}
            assert client.execute("device_add", plug) == {"return": {}}
            wait_until(lambda: read_u64s(client, STEP, 1) == [2])
            ost = guest.event("ACPI_DEVICE_OST")
            assert ost["data"] == {
                "info": {"device": "vcpu1", "source": 1, "status": 0, "slot": "1", "slot-type": "CPU"}
            }
            assert client.execute("device_del", {"id": "vcpu1"}) == {"return": {}}
            wait_until(lambda: read_u64s(client, STEP, 1) == [3])
            ost = guest.event("ACPI_DEVICE_OST")
            assert ost["data"] == {
                "info": {"device": "vcpu1", "source": 3, "status": 132, "slot": "1", "slot-type": "CPU"}
            }
            assert guest.event("DEVICE_DELETED")["data"] == {"path": "/machine/peripheral/vcpu1/lapic"}
            assert guest.event("DEVICE_DELETED")["data"] == {"device": "vcpu1", "path": "/machine/peripheral/vcpu1"}
            assert client.drain(0.3) == [], "ejecting the boot CPU does nothing"
            results = read_u64s(client, RESULTS, 24)
            assert list(guest.cpu_paths()) == [0, 2]
    finally:
        server.stop()
    assert results == [
        0x05,  # legacy bitmap: APIC IDs 0 and 2
        # slots 0-3: flags, arch ID low, high.  Slot 2 (plugged under -S, in legacy mode) keeps its insert
        # event: qmpd's one deliberate difference here (QEMU reads 0x01 and drops it; see acpi_cpuhp.py).
        *(1, 0, 0), *(0, 1, 0), *(3, 2, 0), *(0, 3, 0),
        *(0, 0, 0),  # slot 4 is out of range: everything reads 0
        0x0004,  # GPE0 status after device_add
        0x03, 1,  # command 0 finds slot 1 with enabled|insert
        0x01,  # insert cleared
        0x05, 1,  # after device_del: enabled|remove on slot 1
        0x00,  # after the eject the slot is empty
        0x01,  # the boot CPU's eject was ignored
    ]  # fmt: skip


def test_without_acpi_cpus_plug_but_never_unplug(tmp_path: Path) -> None:
    """-no-acpi: device_add works (the guest is not told), device_del is QEMU's refusal."""
    server = start_qmpd(["-machine", "pc", "-smp", "1,maxcpus=2", "-no-acpi"], tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            args = {"driver": "qemu64-x86_64-cpu", "id": "c1", "socket-id": 0, "core-id": 1, "thread-id": 0}
            assert client.execute("device_add", args) == {"return": {}}
            reply = client.execute("device_del", {"id": "c1"})
            assert reply["error"]["desc"] == "CPU hot unplug not supported without ACPI"
            assert client.execute("query-acpi-ospm-status") == {"return": []}
            assert [cpu["cpu-index"] for cpu in client.execute("query-cpus-fast")["return"]] == [0, 1]
    finally:
        server.stop()
