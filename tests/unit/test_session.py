"""Session rules with a fake channel: negotiation, ordering, OOB, queue limits, events.

No machine and no threads: the dispatcher's context factory makes a SessionContext,
which holds all that these commands use.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from qmpd.commands.base import CommandRegistry, SessionControl, WorkerRunner
from qmpd.commands.control import qmp_capabilities
from qmpd.dispatch import Dispatcher
from qmpd.events import EventBus
from qmpd.protocol.session import INBAND_QUEUE_MAX, Session
from qmpd.qapi.schema import SCHEMA_BASE, Schema

REAL = Schema.load()


def _command(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "$id": f"{SCHEMA_BASE}commands/{name}.json",
        "title": name,
        "description": "test command",
        "x-qmp": {"since": "0", **meta},
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


def _test_schema() -> Schema:
    docs = {
        uri: doc for uri, doc in REAL.documents.items() if "/types/" in uri or uri.endswith("qmp_capabilities.json")
    }
    for name, meta in (("x-wait", {}), ("x-emit", {}), ("x-oob", {"allow-oob": True}), ("x-quick", {})):
        doc = _command(name, **meta)
        docs[doc["$id"]] = doc
    event = {
        "$id": f"{SCHEMA_BASE}events/X_EVENT.json",
        "title": "X_EVENT",
        "description": "test event",
        "x-qmp": {"since": "0"},
        "type": "object",
        "properties": {"n": {"type": "integer", "x-qapi-type": "int"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    docs[event["$id"]] = event
    return Schema(docs)


class FakeChannel:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.paused = False
        self.closed = False

    def send(self, line: bytes) -> None:
        assert line.endswith(b"\r\n")
        self.lines.append(line)

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def buffered(self) -> int:
        return 0

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@dataclass
class SessionContext:
    """A minimal command context: the session (qmp_capabilities reads only it) and the events (x-emit)."""

    session: SessionControl
    events: EventBus


class Harness:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        schema = _test_schema()
        self.events = EventBus(schema, strict=True)
        registry = CommandRegistry()
        registry.command("qmp_capabilities")(qmp_capabilities)

        @registry.command("x-wait")
        async def x_wait(ctx: SessionContext) -> dict[str, str]:
            await self.gate.wait()
            return {"waited": "yes"}

        @registry.command("x-emit")
        def x_emit(ctx: SessionContext) -> None:
            ctx.events.emit("X_EVENT", {"n": 1})

        @registry.command("x-oob")
        def x_oob(ctx: SessionContext) -> str:
            return "oob"

        @registry.command("x-quick")
        def x_quick(ctx: SessionContext) -> str:
            return "quick"

        self.dispatcher = Dispatcher(schema, registry, self.make_context)

    def make_context(self, session: SessionControl, worker: WorkerRunner) -> SessionContext:
        return SessionContext(session, self.events)

    def request_exit(self) -> None:
        """What quit does to the dispatcher: the daemon is going away."""
        self.dispatcher.closing = True

    def session(self) -> tuple[Session, FakeChannel]:
        channel = FakeChannel()
        session = Session(self.dispatcher, self.events, channel, name="t", greeting={"QMP": {"capabilities": ["oob"]}})
        session.start()
        return session, channel


def req(name: str, ident: object = None, oob: bool = False) -> bytes:
    message: dict[str, Any] = {"exec-oob" if oob else "execute": name}
    if ident is not None:
        message["id"] = ident
    return json.dumps(message).encode()


async def test_greeting_then_negotiation_gate() -> None:
    harness = Harness()
    session, channel = harness.session()
    session.feed(req("x-quick", 1))
    harness.events.emit("X_EVENT", {"n": 0})  # not negotiated: not delivered
    session.feed(req("qmp_capabilities") + req("x-quick", 2))
    messages = channel.messages()
    assert messages[0] == {"QMP": {"capabilities": ["oob"]}}
    assert messages[1]["error"] == {
        "class": "CommandNotFound",
        "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
    }
    assert messages[2:] == [{"return": {}}, {"return": "quick", "id": 2}]


async def test_event_raised_by_a_command_precedes_its_reply() -> None:
    harness = Harness()
    session, channel = harness.session()
    session.feed(req("qmp_capabilities") + req("x-emit", "e"))
    event, reply = channel.messages()[-2:]
    assert event["event"] == "X_EVENT" and event["data"] == {"n": 1}
    assert set(event["timestamp"]) == {"seconds", "microseconds"}
    assert reply == {"return": {}, "id": "e"}


async def test_without_oob_one_request_at_a_time_and_input_paused() -> None:
    harness = Harness()
    session, channel = harness.session()
    session.feed(req("qmp_capabilities"))
    session.feed(req("x-wait", 1) + req("x-quick", 2))
    await asyncio.sleep(0.01)
    assert channel.paused, "no more input is read while a request is outstanding"
    assert channel.messages()[-1] == {"return": {}}
    harness.gate.set()
    await asyncio.sleep(0.01)
    assert channel.messages()[-2:] == [{"return": {"waited": "yes"}, "id": 1}, {"return": "quick", "id": 2}]
    assert not channel.paused


async def test_oob_overtakes_a_blocked_inband_queue_and_inband_order_holds() -> None:
    harness = Harness()
    session, channel = harness.session()
    session.feed(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}')
    session.feed(
        req("x-wait", "ib-blocks-1")
        + req("x-quick", "ib-quick-1")
        + b'{"id":"err-2"}'
        + req("x-oob", "oob-1", oob=True)
    )
    await asyncio.sleep(0.01)
    assert channel.messages()[-1] == {"return": "oob", "id": "oob-1"}
    harness.gate.set()
    await asyncio.sleep(0.01)
    ids = [m.get("id") for m in channel.messages()[2:]]
    assert ids == ["oob-1", "ib-blocks-1", "ib-quick-1", "err-2"]
    assert channel.messages()[-1]["error"]["desc"] == "QMP input lacks member 'execute'"


async def test_oob_queue_holds_eight_then_pauses_input() -> None:
    harness = Harness()
    session, channel = harness.session()
    session.feed(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}')
    session.feed(req("x-wait", 0) + b"".join(req("x-quick", i) for i in range(1, 12)))
    await asyncio.sleep(0.01)
    assert channel.paused
    assert len(session._inband) == INBAND_QUEUE_MAX
    harness.gate.set()
    await asyncio.sleep(0.02)
    assert [m.get("id") for m in channel.messages()[2:]] == list(range(12))
    assert not channel.paused


async def test_inband_commands_of_two_sessions_are_serialised() -> None:
    harness = Harness()
    first, first_channel = harness.session()
    second, second_channel = harness.session()
    first.feed(req("qmp_capabilities") + req("x-wait", "a"))
    second.feed(req("qmp_capabilities") + req("x-quick", "b"))
    await asyncio.sleep(0.01)
    assert len(second_channel.messages()) == 1, "every in-band command of b waits for the lock a holds"
    harness.gate.set()
    await asyncio.sleep(0.01)
    assert first_channel.messages()[-1]["id"] == "a"
    assert second_channel.messages()[1:] == [{"return": {}}, {"return": "quick", "id": "b"}]


async def test_closing_stops_processing_pending_input() -> None:
    harness = Harness()
    session, channel = harness.session()
    session.feed(req("qmp_capabilities"))
    harness.request_exit()
    session.feed(req("x-quick", 1))
    assert channel.messages()[-1] == {"return": {}}


@pytest.mark.parametrize("garbage", [b"\xff", b"{", b'"', b"]]]", b"{'a':", b"\x00\x01"])
async def test_garbage_then_resync_keeps_the_session(garbage: bytes) -> None:
    harness = Harness()
    session, channel = harness.session()
    session.feed(req("qmp_capabilities"))
    session.feed(garbage + b"\xff" + req("x-quick", "after"))
    assert channel.messages()[-1] == {"return": "quick", "id": "after"}
