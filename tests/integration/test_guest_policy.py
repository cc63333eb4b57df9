"""qmpd-guest-policy over real sockets: REST's GET/PUT/DELETE /api/v1/guest-policy (QMP's semantics, the
same errors, nothing half-changed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, wait_until
from tests.integration.test_hotplug import Guest, running_guest
from tests.integration.test_http import Front, _metrics, front

__all__ = ["front"]

POLICY = "qmpd-guest-policy"


def test_rest_creates_changes_and_removes_a_policy(front: Callable[..., Front]) -> None:
    web = front("-S", "-smp", "1,maxcpus=3", "-object", f"{POLICY},id=gp,on-unplug=refuse,ost-status=130")
    status, view = web.request("GET", "/api/v1/guest-policy")
    assert status == 200
    assert view["policies"] == [
        {
            "id": "gp",
            "on-plug": "online",
            "on-unplug": "refuse",
            "ost-status": 130,
            "delay-ms": 0,
            "on-event": "none",
            "slots": "",
        }
    ]
    assert [(s["slot"], s["policy"], s["on-unplug"]) for s in view["slots"]] == [
        (0, "gp", "refuse"),
        (1, "gp", "refuse"),
        (2, "gp", "refuse"),
    ]
    # a new, more specific policy for slot 2 (object-add)
    status, reply = web.request("PUT", "/api/v1/guest-policy", {"id": "two", "slots": "2", "on-plug": "ignore"})
    assert (status, reply["on-plug"], reply["slots"]) == (200, "ignore", "2")
    # a change of the first (qom-set)
    status, reply = web.request("PUT", "/api/v1/guest-policy", {"id": "gp", "on-unplug": "eject", "delay-ms": 1500})
    assert (status, reply["on-unplug"], reply["delay-ms"], reply["ost-status"]) == (200, "eject", 1500, 130)
    slots = web.request("GET", "/api/v1/guest-policy")[1]["slots"]
    assert [(s["policy"], s["on-plug"], s["delay-ms"]) for s in slots] == [
        ("gp", "online", 1500),
        ("gp", "online", 1500),
        ("two", "ignore", 0),
    ]
    # QMP sees the same objects
    with RawClient(web.server.socket_path) as client:
        client.negotiate()
        got = client.execute("qom-get", {"path": "/objects/gp", "property": "delay-ms"})
        assert got == {"return": 1500}
    assert web.request("DELETE", "/api/v1/guest-policy/two")[0] == 204
    slots = web.request("GET", "/api/v1/guest-policy")[1]["slots"]
    assert slots[2]["policy"] == "gp"
    status, reply = web.request("DELETE", "/api/v1/guest-policy/two")
    assert status == 404 and reply["error"]["class"] == "DeviceNotFound"


def test_rest_refuses_bad_input_with_qmps_texts_and_changes_nothing(front: Callable[..., Front]) -> None:
    web = front("-S", "-smp", "1,maxcpus=2", "-object", f"{POLICY},id=gp,ost-status=7")
    before = web.request("GET", "/api/v1/guest-policy")[1]
    cases = [
        ({"id": "gp", "delay-ms": 5, "on-plug": "maybe"}, "Parameter 'on-plug' does not accept value 'maybe'"),
        ({"id": "gp", "on-unplug": "refuse", "ost-status": 300}, "Parameter 'ost-status' expects uint8_t"),
        ({"id": "gp", "slots": "1-"}, "Parameter 'slots' expects a uint64 value or range"),
        ({"id": "new", "on-plug": "fail", "slots": "x"}, "Parameter 'slots' expects a uint64 value or range"),
        ({"id": "new", "bogus": 1}, "Parameter 'bogus' is unexpected"),
        ({"id": "0new"}, "Parameter 'id' expects an identifier"),
    ]
    for body, desc in cases:
        status, reply = web.request("PUT", "/api/v1/guest-policy", body)
        assert (status, reply) == (400, {"error": {"class": "GenericError", "desc": desc}}), body
    assert web.request("PUT", "/api/v1/guest-policy", {"on-plug": "fail"})[0] == 400
    assert web.request("PUT", "/api/v1/guest-policy", [1])[0] == 400
    assert web.request("GET", "/api/v1/guest-policy")[1] == before


# -- the bundled firmware acts on the policy (the acceptance) ---------------------------------

ARGV = ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=1,cores=4,threads=1,maxcpus=4"]
CPU = {"driver": "Haswell-x86_64-cpu", "socket-id": 0, "thread-id": 0}
OK: dict[str, Any] = {"return": {}}


def _no_event(guest: Guest, name: str, seconds: float, **match: Any) -> None:
    with pytest.raises(AssertionError):
        guest.event(name, timeout=seconds, **match)


def _present(guest: Guest) -> list[int]:
    return sorted(guest.cpu_paths())


def test_refuse_then_eject_over_qmp(tmp_path: Path) -> None:
    argv = [*ARGV, "-object", f"{POLICY},id=gp,on-unplug=refuse,ost-status=130"]
    with running_guest(argv, tmp_path) as guest:
        client = guest.client
        assert client.execute("device_add", {**CPU, "id": "cpu1", "core-id": 1}) == OK
        guest.event("ACPI_DEVICE_OST", device="cpu1", source=1, status=0, slot="1")
        guest.online(1, 1)
        assert client.execute("device_del", {"id": "cpu1"}) == OK
        guest.event("ACPI_DEVICE_OST", device="cpu1", source=3, status=130, slot="1")
        _no_event(guest, "DEVICE_DELETED", 1.0)
        assert _present(guest) == [0, 1]
        wait_until(lambda: "CPU 1 (APIC ID 1) unplug refused (guest policy)" in guest.console())
        assert guest.counting(1), "the refused CPU goes on working"
        ospm = client.execute("query-acpi-ospm-status")["return"]
        assert {"device": "cpu1", "slot": "1", "slot-type": "CPU", "source": 3, "status": 130} in ospm
        assert client.execute("qom-set", {"path": "/objects/gp", "property": "on-unplug", "value": "eject"}) == OK
        assert client.execute("device_del", {"id": "cpu1"}) == OK
        guest.event("DEVICE_DELETED", device="cpu1")
        assert _present(guest) == [0]


def test_plug_ignored_or_failed_then_delayed_over_qmp(tmp_path: Path) -> None:
    argv = [*ARGV, "-object", f"{POLICY},id=gp,on-plug=ignore,slots=1", "-object", f"{POLICY},id=all,on-plug=fail"]
    with running_guest(argv, tmp_path) as guest:
        client = guest.client
        assert client.execute("device_add", {**CPU, "id": "cpu1", "core-id": 1}) == OK
        _no_event(guest, "ACPI_DEVICE_OST", 1.0)
        assert _present(guest) == [0, 1]  # listed, never started
        assert "CPU 1 (APIC ID 1) plug ignored (guest policy)" in guest.console()
        assert not guest.counting(1, within=1.0)
        assert client.execute("device_add", {**CPU, "id": "cpu2", "core-id": 2}) == OK
        guest.event("ACPI_DEVICE_OST", device="cpu2", source=1, status=1, slot="2")  # "all": fail, status 1
        wait_until(lambda: "CPU 2 (APIC ID 2) plug failed (guest policy)" in guest.console())
        assert not guest.counting(2, within=1.0)
        assert client.execute("object-del", {"id": "all"}) == OK
        assert client.execute("qom-set", {"path": "/objects/gp", "property": "slots", "value": "3"}) == OK
        assert client.execute("qom-set", {"path": "/objects/gp", "property": "on-plug", "value": "online"}) == OK
        assert client.execute("qom-set", {"path": "/objects/gp", "property": "delay-ms", "value": 1500}) == OK
        asked = time.monotonic()
        assert client.execute("device_add", {**CPU, "id": "cpu3", "core-id": 3}) == OK
        guest.event("ACPI_DEVICE_OST", device="cpu3", source=1, status=0, slot="3")
        waited = time.monotonic() - asked
        assert 1.5 <= waited < 4.0, waited
        guest.online(3, 3)


def test_on_event_triple_fault_resets_and_panic_reports(tmp_path: Path) -> None:
    argv = [*ARGV, "-device", "pvpanic", "-action", "panic=pause", "-object", f"{POLICY},id=gp,on-event=triple-fault"]
    with running_guest(argv, tmp_path) as guest:
        client = guest.client
        assert client.execute("device_add", {**CPU, "id": "cpu1", "core-id": 1}) == OK
        guest.event("RESET", guest=True, reason="guest-reset")
        wait_until(lambda: guest.console().count("qmpd firmware: booting") == 2)
        assert "qmpd firmware: guest policy: triple fault" in guest.console()
        # the event was cleared before the fault: the rebooted guest does not fault again
        guest.online(0, 0)
        assert client.execute("qom-set", {"path": "/objects/gp", "property": "on-event", "value": "panic"}) == OK
        assert client.execute("device_del", {"id": "cpu1"}) == OK
        guest.event("GUEST_PANICKED", action="pause")
        wait_until(lambda: client.execute("query-status")["return"]["status"] == "guest-panicked")
        _no_event(guest, "DEVICE_DELETED", 0.5)


def test_refuse_eject_ignore_and_delay_over_rest(front: Callable[..., Front], tmp_path: Path) -> None:
    debugcon = tmp_path / "debugcon.txt"
    web = front(*ARGV, "-debugcon", f"file:{debugcon}")
    with RawClient(web.server.socket_path, timeout=15) as client:
        client.negotiate()
        guest = Guest(web.server, client, debugcon)
        guest.online(0, 0)

        def policy(**props: Any) -> None:
            status, reply = web.request("PUT", "/api/v1/guest-policy", {"id": "gp", **props})
            assert status == 200, reply

        def resize(count: int, timeout: float = 10) -> int:
            return web.request("PUT", "/api/v1/vm.resize", {"desired_vcpus": count, "timeout": timeout})[0]

        policy(**{"on-unplug": "refuse", "ost-status": 130})
        assert resize(2) == 200
        guest.event("ACPI_DEVICE_OST", source=1, status=0, slot="1")
        assert resize(1, timeout=2) == 504  # no DEVICE_DELETED: the guest refused
        guest.event("ACPI_DEVICE_OST", source=3, status=130, slot="1")
        assert _present(guest) == [0, 1]
        policy(**{"on-unplug": "eject"})
        assert resize(1) == 200
        guest.event("DEVICE_DELETED", path="/machine/peripheral-anon/device[0]")
        policy(**{"on-plug": "ignore"})
        assert resize(2, timeout=1.5) == 504  # no _OST: the guest ignored it
        assert _present(guest) == [0, 1]
        wait_until(lambda: "CPU 1 (APIC ID 1) plug ignored (guest policy)" in guest.console())
        policy(**{"on-plug": "online", "delay-ms": 1500})
        asked = time.monotonic()
        assert resize(3) == 200
        assert time.monotonic() - asked >= 1.5
        guest.event("ACPI_DEVICE_OST", source=1, status=0, slot="2")
        answers = {
            labels: value
            for (name, labels), value in _metrics(web).items()
            if name == "qmpd_hotplug_guest_answers_total"
        }
        assert answers[(("operation", "unplug"), ("outcome", "refused"))] == 1
        assert answers[(("operation", "plug"), ("outcome", "late"))] == 1
