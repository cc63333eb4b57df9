"""qmpd-guest-policy over real sockets: REST's GET/PUT/DELETE /api/v1/guest-policy (QMP's semantics, the
same errors, nothing half-changed)."""

from __future__ import annotations

from collections.abc import Callable

from tests.helpers import RawClient
from tests.integration.test_http import Front, front

__all__ = ["front"]

POLICY = "qmpd-guest-policy"


def test_rest_creates_changes_and_removes_a_policy(front: Callable[..., Front]) -> None:
    web = front("-S", "-smp", "1,maxcpus=3", "-object", f"{POLICY},id=gp,on-unplug=refuse,ost-status=130")
    status, view = web.request("GET", "/api/v1/guest-policy")
    assert status == 200
    assert view["policies"] == [
        {"id": "gp", "on-plug": "online", "on-unplug": "refuse", "ost-status": 130, "delay-ms": 0, "slots": ""}
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
