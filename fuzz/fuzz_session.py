#!/usr/bin/env python3
"""Coverage-guided fuzz target for a whole QMP Session, for atheris.

A real Session with a real Dispatcher on a ``-machine none -S`` Machine (as
tests/unit/test_fuzz_session.py builds it) talks to a fake Channel.  The input
layout is fuzz_stream.py's (see README.md); here the low two flag bits choose
the mode: 0 = negotiation mode, 1 = command mode, 2 and 3 = command mode with
``oob``.  The chunks are fed like a transport does: not while the session has
paused reading (with flag 0x08, regardless of it, unless QMPD_FUZZ_LAZY=0).

Checked for every input:

- the session never raises, and every reply line is one CRLF-terminated ASCII
  line holding one JSON object (QEMU's ``inf``/``nan`` numbers allowed) that is
  a greeting, a return, an error or an event;
- a paused session resumes reading within the time limit;
- after the input, ``\\xff`` + ``{"execute":"query-status","id":"end"}`` is
  answered (QEMU's recovery), within the time limit.

Commands that touch the host (migrate and migrate-incoming with their exec:/file:
URIs, memsave, pmemsave, and HMP lines naming them) are renamed to an unknown
command before they run.  The machine is reused between inputs until a command
that may change its state ran, then rebuilt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from typing import Any

import atheris
import structlog
from fuzz_stream import FLAG_LAZY, LAZY, decode_input

structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL), cache_logger_on_first_use=True
)

with atheris.instrument_imports(include=["qmpd"]):
    from qmpd.commands.base import context_factory
    from qmpd.config import MachineConfig
    from qmpd.dispatch import Dispatcher, DispatchSession, Outcome
    from qmpd.events import EventBus
    from qmpd.handlers import REGISTRY
    from qmpd.machine.machine import Machine
    from qmpd.migration.migrator import Migrator
    from qmpd.protocol.session import Session
    from qmpd.qapi.schema import Schema
    from qmpd.qobject.writer import encode


SCHEMA = Schema.load()
GREETING: dict[str, Any] = {"QMP": {"version": {}, "capabilities": ["oob"]}}
PROBE_ID = "end"
PROBE = b'\xff{"execute":"query-status","id":"end"}'
#: Seconds (event-loop time) the session may take to resume reading or to answer the probe.
TIME_LIMIT = float(os.environ.get("QMPD_FUZZ_TIME_LIMIT", "10.0"))

#: Commands that write files or run programs on the host.
DENIED = frozenset({"migrate", "migrate-incoming", "memsave", "pmemsave"})
DENIED_HMP = ("memsave", "migrate")
#: Commands that cannot change the machine (anything else marks it for a rebuild).
PURE = frozenset(
    {"qom-get", "qom-list", "qom-list-types", "qom-list-properties", "device-list-properties", "qmp_capabilities"}
)
#: Strings, or a bare inf/nan number (QEMU prints 1e400 as inf), in a reply line.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\b(?:inf|nan)\b')


class _Daemon:
    def chardevs(self) -> list[dict[str, object]]:
        return []

    def request_exit(self) -> None:
        """quit is fine here: the fuzzer checks the session, not the process."""


class SafeDispatcher(Dispatcher):
    """The real dispatcher, minus host side effects; notes whether the machine may have changed."""

    dirty = False

    def dispatch(self, request: object, session: DispatchSession) -> Outcome:
        if isinstance(request, dict):
            names = [request.get(key) for key in ("execute", "exec-oob")]
            if any(name in DENIED for name in names) or (
                "human-monitor-command" in names and any(word in repr(request) for word in DENIED_HMP)
            ):
                request = {**request, **{key: "x-fuzz-denied" for key in ("execute", "exec-oob") if key in request}}
            elif any(isinstance(name, str) and name in SCHEMA.commands for name in names) and not all(
                not isinstance(name, str) or name.startswith("query-") or name in PURE for name in names
            ):
                self.dirty = True
        return super().dispatch(request, session)


class World:
    """Machine, events and dispatcher shared by the sessions of successive inputs."""

    def __init__(self) -> None:
        self.events = EventBus(SCHEMA, strict=True)
        self.machine = Machine(MachineConfig(machine_type="none", start_paused=True, ram_size=16 << 20), self.events)
        self.dispatcher = SafeDispatcher(
            SCHEMA, REGISTRY, context_factory(self.machine, SCHEMA, self.events, _Daemon(), Migrator(self.machine))
        )
        self.dispatcher.log_commands = False


class FuzzChannel:
    """Records lines; signals when reading resumes and when the probe is answered."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.paused = False
        self.closed = False
        self.resumed = asyncio.Event()
        self.answered = asyncio.Event()

    def send(self, line: bytes) -> None:
        self.lines.append(line)
        if b'"id": "end"' in line:
            self.answered.set()

    def pause_reading(self) -> None:
        assert not self.paused, "pause_reading twice"
        self.paused = True
        self.resumed.clear()

    def resume_reading(self) -> None:
        assert self.paused, "resume_reading while not paused"
        self.paused = False
        self.resumed.set()

    def close(self) -> None:
        self.closed = True

    def buffered(self) -> int:
        return 0


#: Reply lines already checked (most inputs get the same few parse-error replies again and again).
_checked_lines: set[bytes] = set()


def check_line(line: bytes) -> None:
    """One reply as QEMU writes it: a single CRLF-terminated ASCII line with one JSON object."""
    assert isinstance(line, bytes), type(line)
    if line in _checked_lines:
        return
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1 and line.count(b"\r") == 1, line[:200]
    assert line.isascii(), line[:200]
    text = _TOKENS.sub(lambda m: m[0] if m[0].startswith(b'"') else b"0", line)
    message = json.loads(text)
    assert isinstance(message, dict), line[:200]
    kinds = [key for key in ("QMP", "return", "error", "event") if key in message]
    assert len(kinds) == 1, line[:200]
    if kinds == ["error"]:
        error = message["error"]
        assert isinstance(error["class"], str) and isinstance(error["desc"], str), line[:200]
    if len(line) <= 512 and len(_checked_lines) < 10_000:
        _checked_lines.add(line)


_world: World | None = None


def world() -> World:
    global _world
    if _world is None or _world.dispatcher.dirty:
        if _world is not None:
            _world.machine.close()
        _world = World()
    return _world


async def _wait(event: asyncio.Event, what: str, channel: FuzzChannel) -> None:
    try:
        await asyncio.wait_for(event.wait(), TIME_LIMIT)
    except TimeoutError:
        raise AssertionError(f"{what} within {TIME_LIMIT}s; last lines: {channel.lines[-3:]!r}") from None


async def run(data: bytes) -> None:
    flags, chunks = decode_input(data)
    current = world()
    channel = FuzzChannel()
    session = Session(current.dispatcher, current.events, channel, name="fuzz", greeting=GREETING)
    lazy = LAZY and bool(flags & FLAG_LAZY)
    try:
        session.start()
        mode = flags & 3
        if mode:
            enable = ["oob"] if mode >= 2 else []
            session.feed(json.dumps({"execute": "qmp_capabilities", "arguments": {"enable": enable}}).encode())
            assert channel.lines[1:] == [b'{"return": {}}\r\n'], channel.lines
        for chunk in chunks:
            if channel.paused and not lazy:
                await _wait(channel.resumed, "no resume_reading", channel)
            session.feed(chunk)
        if channel.paused:
            await _wait(channel.resumed, "no resume_reading", channel)
        channel.answered.clear()  # the input may have used the probe's id itself
        session.feed(PROBE)
        await _wait(channel.answered, "probe not answered", channel)
    finally:
        session.close()
        await asyncio.sleep(0)
    assert channel.lines[0] == encode(GREETING)
    for line in channel.lines:
        check_line(line)


_loop = asyncio.new_event_loop()


def test_one_input(data: bytes) -> None:
    _loop.run_until_complete(run(data))


def main() -> None:
    sys.setrecursionlimit(20_000)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
