"""-object and object-add (one path), the qmpd-guest-policy type, its errors, the most-specific rule
and the device the firmware reads it through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from qmpd.cli import parse_args
from qmpd.commands.base import context_factory
from qmpd.devices.guest_policy import GUEST_POLICY_BASE, SIGNATURE, GuestPolicyPort, SlotPolicy
from qmpd.dispatch import Dispatcher
from qmpd.errors import GenericError
from qmpd.events import EventBus
from qmpd.handlers import REGISTRY
from qmpd.machine.guest_policy import MAX_DELAY_MS, parse_slots
from qmpd.machine.hotplug_latency import ACK_DEADLINE, LATE_AFTER, HotplugLatency
from qmpd.machine.machine import Machine
from qmpd.migration.migrator import Migrator
from qmpd.qapi.schema import Schema
from tests.helpers import InProcessDaemon, InProcessSession

SCHEMA = Schema.load()
POLICY = "qmpd-guest-policy"
DEFAULTS = {"on-plug": "online", "on-unplug": "eject", "ost-status": 1, "delay-ms": 0, "on-event": "none", "slots": ""}


class Rig:
    """A pc machine with four slots under -S, and a dispatcher."""

    def __init__(self, *argv: str) -> None:
        config = parse_args(["-S", "-smp", "1,maxcpus=4", *argv]).machine
        self.events = EventBus(SCHEMA, strict=True)
        self.machine = Machine(config, self.events)
        contexts = context_factory(self.machine, SCHEMA, self.events, InProcessDaemon(), Migrator(self.machine))
        self.dispatcher = Dispatcher(SCHEMA, REGISTRY, contexts)

    async def qmp(self, command: str, **arguments: Any) -> Any:
        outcome = self.dispatcher.dispatch({"execute": command, "arguments": arguments}, InProcessSession())
        reply = outcome if isinstance(outcome, dict) else await asyncio.wait_for(outcome, timeout=10)
        return reply.get("return", reply.get("error"))

    def read(self, slot: int, offset: int, size: int = 1) -> int:
        """What the firmware reads from the device for ``slot``."""
        bus = self.machine._board.bus
        bus.write(GUEST_POLICY_BASE, 4, slot)
        return bus.read(GUEST_POLICY_BASE + offset, size)

    def policy(self, slot: int) -> tuple[int, int, int, int]:
        """on-plug, on-unplug, ost-status, delay-ms."""
        return (self.read(slot, 4), self.read(slot, 5), self.read(slot, 6), self.read(slot, 8, 4))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    built = Rig()
    yield built
    built.machine.close()


async def values(rig: Rig, path: str) -> dict[str, Any]:
    return {name: await rig.qmp("qom-get", path=path, property=name) for name in DEFAULTS}


# -- -object and object-add ------------------------------------------------------------------


async def test_object_option_creates_the_policy_in_both_forms() -> None:
    rig = Rig(
        "-object", "qmpd-guest-policy,id=gp,on-unplug=refuse,ost-status=130,delay-ms=1500,slots=1-2",
        "-object", '{"qom-type":"qmpd-guest-policy","id":"all","on-plug":"ignore","ost-status":7}',
    )  # fmt: skip
    try:
        got = await values(rig, "/objects/gp")
        assert got == {**DEFAULTS, "on-unplug": "refuse", "ost-status": 130, "delay-ms": 1500, "slots": "1-2"}
        assert (await values(rig, "/objects/all"))["on-plug"] == "ignore"
        assert rig.policy(1) == (0, 2, 130, 1500)  # gp names fewer slots than "all"
        assert rig.policy(3) == (1, 0, 7, 0)
    finally:
        rig.machine.close()


def test_libvirt_objects_are_created_and_the_memory_backend_is_in_use() -> None:
    async def run() -> None:
        rig = Rig(
            "-object", '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/x/master-key.aes"}',
            "-machine", "pc,memory-backend=pc.ram", "-m", "128",
            "-object", '{"qom-type":"memory-backend-ram","id":"pc.ram","size":134217728}',
        )  # fmt: skip
        try:
            assert await rig.qmp("qom-get", path="/objects/masterKey0", property="format") == "raw"
            assert await rig.qmp("qom-get", path="/objects/pc.ram", property="size") == 134217728
            assert await rig.qmp("object-del", id="pc.ram") == {
                "class": "GenericError",
                "desc": "object 'pc.ram' is in use, can not be deleted",
            }
            assert await rig.qmp("object-del", id="masterKey0") == {}
        finally:
            rig.machine.close()

    asyncio.run(run())


OPTION_ERRORS = [
    ("foo,id=x", "Parameter 'qom-type' does not accept value 'foo'"),
    ('{"qom-type":"foo","id":"x"}', "Parameter 'qom-type' does not accept value 'foo'"),
    ("secret,id=s0", "Either 'file' or 'data' must be provided"),
    ("secret,id=s0,data=abc,bogus=1", "Invalid parameter 'bogus'"),
    ('{"qom-type":"secret","id":"s","data":"x","bogus":1}', "Parameter 'bogus' is unexpected"),
    ("secret,id=0bad,data=x", "Parameter 'id' expects an identifier"),
    ("memory-backend-ram,id=m,size=12Q", "Parameter 'size' expects a size value"),
    ("qmpd-guest-policy,id=p,on-plug=maybe", "Parameter 'on-plug' does not accept value 'maybe'"),
    ("qmpd-guest-policy,id=p,ost-status=256", "Parameter 'ost-status' expects uint8_t"),
    ("qmpd-guest-policy,id=p,slots=3-1", "Parameter 'slots' expects a uint64 value or range"),
]


@pytest.mark.parametrize(("arg", "message"), OPTION_ERRORS)
def test_object_option_errors_are_qemus(arg: str, message: str) -> None:
    """The texts QEMU 7.2 prints for the same -object (run here: the first seven; secret's
    missing-data error has no prefix there)."""

    async def run() -> None:
        with pytest.raises(GenericError) as caught:
            Rig("-object", arg)
        assert str(caught.value) == f"-object {arg}: {message}"

    asyncio.run(run())


async def test_listed_as_user_creatable_with_its_properties(rig: Rig) -> None:
    types = {entry["name"] for entry in await rig.qmp("qom-list-types", implements="user-creatable")}
    assert {POLICY, "secret", "memory-backend-ram"} <= types
    assert not any(name.endswith("-x86_64-cpu") for name in types)
    properties = await rig.qmp("qom-list-properties", typename=POLICY)
    assert [(p["name"], p["type"]) for p in properties] == [
        ("type", "string"),
        ("on-plug", "QmpdGuestPlugAction"),
        ("on-unplug", "QmpdGuestUnplugAction"),
        ("ost-status", "uint8"),
        ("delay-ms", "uint32"),
        ("on-event", "QmpdGuestEventAction"),
        ("slots", "string"),
    ]


# -- qom-set, object-del, bad input --------------------------------------------------------------


async def test_qom_set_reaches_the_device_at_once_and_object_del_restores_the_default(rig: Rig) -> None:
    assert rig.read(1, 0) == SIGNATURE
    assert rig.policy(1) == (0, 0, 1, 0)
    assert await rig.qmp("object-add", **{"qom-type": POLICY, "id": "gp", "on-unplug": "refuse"}) == {}
    assert rig.policy(1) == (0, 2, 1, 0)
    assert await rig.qmp("qom-set", path="/objects/gp", property="on-unplug", value="ignore") == {}
    assert await rig.qmp("qom-set", path="/objects/gp", property="delay-ms", value=MAX_DELAY_MS) == {}
    assert await rig.qmp("qom-set", path="/objects/gp", property="on-event", value="hang") == {}
    assert rig.policy(1) == (0, 1, 1, MAX_DELAY_MS)
    assert rig.read(1, 7) == 3
    assert await rig.qmp("object-del", id="gp") == {}
    assert rig.policy(1) == (0, 0, 1, 0)


BAD_VALUES = [
    ("on-plug", "maybe", "Parameter 'on-plug' does not accept value 'maybe'"),
    ("on-plug", 1, "Invalid parameter type for 'on-plug', expected: string"),
    ("on-unplug", "eject-later", "Parameter 'on-unplug' does not accept value 'eject-later'"),
    ("ost-status", 256, "Parameter 'ost-status' expects uint8_t"),
    ("ost-status", -1, "Parameter 'ost-status' expects uint8_t"),
    ("ost-status", "130", "Parameter 'ost-status' expects uint64"),
    ("delay-ms", MAX_DELAY_MS + 1,
     f"Property '{POLICY}.delay-ms' doesn't take value {MAX_DELAY_MS + 1} (minimum: 0, maximum: {MAX_DELAY_MS})"),
    ("delay-ms", 1 << 32, "Parameter 'delay-ms' expects uint32_t"),
    ("on-event", "crash", "Parameter 'on-event' does not accept value 'crash'"),
    ("slots", "1,,2", "Parameter 'slots' expects a uint64 value or range"),
    ("slots", "a", "Parameter 'slots' expects a uint64 value or range"),
    ("slots", "5-3", "Parameter 'slots' expects a uint64 value or range"),
    ("slots", "-1", "Parameter 'slots' expects a uint64 value or range"),
    ("slots", "1-5000", f"Property '{POLICY}.slots' doesn't take value 5000 (minimum: 0, maximum: 1023)"),
    ("slots", 3, "Invalid parameter type for 'slots', expected: string"),
    ("bogus", 1, f"Property '{POLICY}.bogus' not found"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
async def test_bad_values_are_refused_and_change_nothing(rig: Rig, name: str, value: Any, message: str) -> None:
    assert await rig.qmp("object-add", **{"qom-type": POLICY, "id": "gp", "ost-status": 9, "slots": "1"}) == {}
    before = (await values(rig, "/objects/gp"), rig.policy(1))
    error = await rig.qmp("qom-set", path="/objects/gp", property=name, value=value)
    assert error == {"class": "GenericError", "desc": message}
    assert (await values(rig, "/objects/gp"), rig.policy(1)) == before
    # object-add with the same value creates nothing
    error = await rig.qmp("object-add", **{"qom-type": POLICY, "id": "other", name: value})
    expected = "Parameter 'bogus' is unexpected" if name == "bogus" else message
    assert error == {"class": "GenericError", "desc": expected}
    assert await rig.qmp("qom-list", path="/objects/other") == {
        "class": "DeviceNotFound",
        "desc": "Device '/objects/other' not found",
    }


@pytest.mark.parametrize(
    ("text", "slots"),
    [("", None), ("0", {0}), ("1,3-5", {1, 3, 4, 5}), ("2-2,2", {2}), ("1023", {1023})],
)
def test_slot_lists(text: str, slots: set[int] | None) -> None:
    assert parse_slots(text) == (frozenset(slots) if slots is not None else None)


async def test_most_specific_wins_then_the_newest(rig: Rig) -> None:
    add = rig.qmp
    assert await add("object-add", **{"qom-type": POLICY, "id": "everything", "ost-status": 10}) == {}
    assert await add("object-add", **{"qom-type": POLICY, "id": "two", "slots": "1-2", "ost-status": 20}) == {}
    assert await add("object-add", **{"qom-type": POLICY, "id": "one", "slots": "2", "ost-status": 30}) == {}
    assert await add("object-add", **{"qom-type": POLICY, "id": "all4", "slots": "0-3", "ost-status": 40}) == {}
    # a slot list beats no list, fewer slots beat more
    assert [rig.policy(slot)[2] for slot in range(4)] == [40, 20, 30, 40]
    # equally specific: the newer wins
    assert await add("object-add", **{"qom-type": POLICY, "id": "two-b", "slots": "0,1", "ost-status": 50}) == {}
    assert [rig.policy(slot)[2] for slot in range(4)] == [50, 50, 30, 40]
    assert await add("object-del", id="all4") == {}
    assert [rig.policy(slot)[2] for slot in range(4)] == [50, 50, 30, 10]


# -- the device ----------------------------------------------------------------------------------


def test_device_registers_and_saved_selector() -> None:
    port = GuestPolicyPort(2)
    port.update((SlotPolicy(), SlotPolicy(2, 2, 130, 0x12345)))
    port.io_write(0, 4, 1)
    assert port.io_read(0, 1) == SIGNATURE
    assert (port.io_read(4, 1), port.io_read(5, 1), port.io_read(6, 1), port.io_read(8, 4)) == (2, 2, 130, 0x12345)
    assert port.io_read(9, 1) == 0x23
    saved = port.save_state()
    port.io_write(0, 4, 7)  # past the last slot: the default
    assert (port.io_read(4, 1), port.io_read(6, 1)) == (0, 1)
    port.load_state(port.check_state(saved, 1))
    assert port.io_read(6, 1) == 130
    with pytest.raises(GenericError):
        port.check_state({"selector": -1}, 1)


# -- how the guest answered (/metrics) -------------------------------------------------------------


def test_answers_are_classified_from_the_guests_ost_and_timing() -> None:
    now = [0.0]
    latency = HotplugLatency(clock=lambda: now[0])
    answers: list[tuple[str, str]] = []
    latency.on_answer.append(lambda operation, outcome: answers.append((operation, outcome)))

    def ost(slot: int, source: int, status: int) -> None:
        latency.ost({"slot": str(slot), "slot-type": "CPU", "source": source, "status": status})

    latency.requested(1, "unplug")
    ost(1, 3, 130)  # refuse, at once
    latency.requested(2, "plug")
    ost(2, 1, 1)  # fail
    latency.requested(3, "unplug")
    ost(3, 3, 0x84)  # in progress, then ejected: a normal answer
    latency.completed(3, "unplug")
    assert answers == [("unplug", "refused"), ("plug", "failed")]
    latency.requested(1, "plug")  # ignored...
    now[0] = ACK_DEADLINE + 0.1
    latency.sweep()
    latency.sweep()  # counted once
    assert answers[2:] == [("plug", "ignored")]
    ost(1, 1, 0)  # ...then answered late
    latency.requested(2, "plug")
    now[0] += LATE_AFTER + 0.1
    ost(2, 3, 0)  # an _OST of another kind is no answer to a plug
    ost(2, 1, 0)
    assert answers[3:] == [("plug", "late"), ("plug", "late")]
