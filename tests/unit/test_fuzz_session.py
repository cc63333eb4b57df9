"""Random bytes and random requests never kill, hang or desynchronise a session."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmpd.commands.base import context_factory
from qmpd.config import MachineConfig
from qmpd.dispatch import Dispatcher
from qmpd.events import EventBus
from qmpd.handlers import REGISTRY
from qmpd.machine.machine import Machine
from qmpd.migration.migrator import Migrator
from qmpd.protocol.session import Session
from qmpd.qapi.schema import Schema
from tests.unit.test_session import FakeChannel

SCHEMA = Schema.load()
PROBE = b'\xff{"execute":"query-status","id":"__probe__"}'


class _Daemon:
    def chardevs(self) -> list[dict[str, object]]:
        return []

    def request_exit(self) -> None:
        """quit is fine here: the fuzzer checks the session, not the process."""


def _session(negotiate: bool) -> tuple[Session, FakeChannel, Machine]:
    events = EventBus(SCHEMA, strict=True)
    machine = Machine(MachineConfig(start_paused=True, ram_size=16 << 20), events)
    dispatcher = Dispatcher(SCHEMA, REGISTRY, context_factory(machine, SCHEMA, events, _Daemon(), Migrator(machine)))
    channel = FakeChannel()
    session = Session(dispatcher, events, channel, name="fuzz", greeting={"QMP": {}})
    session.start()
    if negotiate:
        session.feed(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}')
    return session, channel, machine


async def _until_probe(channel: FakeChannel) -> None:
    """Let queued commands that wait (stop, system_reset, HMP) finish before looking."""
    for _ in range(10_000):
        if channel.lines and b"__probe__" in channel.lines[-1]:
            return
        await asyncio.sleep(0)


def _assert_probe_answered(channel: FakeChannel) -> None:
    last = json.loads(channel.lines[-1])
    assert last.get("id") == "__probe__", channel.lines[-3:]
    for line in channel.lines:
        json.loads(line)  # every line is one valid JSON object
        assert line.endswith(b"\r\n") and line.count(b"\n") == 1


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
async def test_random_bytes_then_probe(chunks: list[bytes], negotiate: bool) -> None:
    session, channel, machine = _session(negotiate)
    try:
        for chunk in chunks:
            session.feed(chunk)
        session.feed(PROBE)
        await _until_probe(channel)
        if negotiate:
            _assert_probe_answered(channel)
        else:
            assert json.loads(channel.lines[-1]).get("id") == "__probe__"
    finally:
        machine.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
command_names = st.sampled_from([*sorted(set(SCHEMA.commands) - {"quit"}), "no-such", ""])
hmp_lines = st.sampled_from(["info status", "info version", "stop", "c", "help", "info", "x", "cpu 1", "system_reset"])


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {draw(st.sampled_from(["execute", "exec-oob"])): draw(command_names)}
    if draw(st.booleans()):
        arguments = draw(
            st.dictionaries(
                st.sampled_from(["command-line", "cpu-index", "enable", "uri", "x"]), json_values, max_size=3
            )
        )
        if request.get("execute") == "human-monitor-command" and draw(st.booleans()):
            arguments["command-line"] = draw(hmp_lines)
        request["arguments"] = arguments
    if draw(st.booleans()):
        request["id"] = draw(json_values)
    return request


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), max_size=6))
async def test_random_requests_then_probe(batch: list[dict[str, Any]]) -> None:
    session, channel, machine = _session(True)
    try:
        for request in batch:
            session.feed(json.dumps(request, allow_nan=True).encode())
        session.feed(PROBE)
        await _until_probe(channel)
    finally:
        machine.close()
    _assert_probe_answered(channel)
    replies = [json.loads(line) for line in channel.lines[2:]]
    errors = [reply["error"] for reply in replies if "error" in reply]
    # QEMU's classes: DeviceNotActive is query-balloon's and balloon's answer (no balloon device).
    assert all(e["class"] in ("GenericError", "CommandNotFound", "DeviceNotActive") for e in errors)
    assert not any("Internal error" in e["desc"] for e in errors)


async def test_input_fed_while_paused_is_parsed_in_order() -> None:
    """Found by fuzz/fuzz_stream.py in lazy mode; fixed in 6f52acf."""
    session, channel, machine = _session(False)
    try:
        session.feed(b'{"execute":"qmp_capabilities"}')
        # human-monitor-command runs asynchronously: without oob the session pauses reading until it is answered.
        session.feed(b'{"execute":"human-monitor-command","arguments":{"command-line":"info status"},"id":1} {"a":')
        assert channel.paused
        session.feed(b'{"execute":"query-name","id":2}')
        session.feed(b"}")
        session.feed(PROBE)
        await _until_probe(channel)
    finally:
        machine.close()
    errors = [json.loads(line).get("error", {}).get("desc") for line in channel.lines[2:]]
    expected = [None, "QMP input member 'a' is unexpected", "JSON parse error, stray '\ufffd'", None]
    assert errors == expected, channel.lines[2:]
