"""StreamChannel's writes: one per chunk of input, made before the read callback returns (no machine)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from qmpd.events import EventBus
from qmpd.protocol.session import Channel, Session
from qmpd.protocol.transport import StreamChannel
from tests.unit.test_session import Harness


class FakeTransport:
    """Records writes; enough of asyncio.Transport for StreamChannel."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def _connected() -> tuple[StreamChannel, FakeTransport, EventBus]:
    harness = Harness()

    def make(channel: Channel, name: str) -> Session:
        return Session(harness.dispatcher, harness.events, channel, name=name, greeting={"QMP": {}})

    channel = StreamChannel(make, "test")
    transport = FakeTransport()
    channel.connection_made(transport)  # type: ignore[arg-type]
    return channel, transport, harness.events


def _feed(channel: StreamChannel, data: bytes) -> None:
    channel.get_buffer(len(data))[: len(data)] = data
    channel.buffer_updated(len(data))


async def test_replies_to_a_chunk_go_out_in_one_write_before_the_callback_returns() -> None:
    channel, transport, _ = await _connected()
    await asyncio.sleep(0)
    assert transport.writes == [b'{"QMP": {}}\r\n']  # the greeting, sent outside a read
    _feed(channel, b'{"execute":"qmp_capabilities"}{"execute":"x-quick","id":1}{"execute":"x-quick"}')
    # No loop turn has run: the write happened at the end of the read callback.
    assert len(transport.writes) == 2
    replies = [json.loads(line) for line in transport.writes[1].splitlines()]
    assert replies == [
        {"return": {}},
        {"return": "quick", "id": 1},
        {"return": "quick"},
    ]


async def test_messages_sent_outside_a_read_go_out_at_the_end_of_the_loop_turn() -> None:
    channel, transport, events = await _connected()
    _feed(channel, b'{"execute":"qmp_capabilities"}')
    writes = len(transport.writes)
    events.emit("X_EVENT", {"n": 1})
    events.emit("X_EVENT", {"n": 2})
    assert len(transport.writes) == writes  # queued, not yet written
    await asyncio.sleep(0)
    assert len(transport.writes) == writes + 1
    events_sent = [json.loads(line)["data"] for line in transport.writes[-1].splitlines()]
    assert events_sent == [{"n": 1}, {"n": 2}]
