"""The HTTP front's pure parts: Host and Origin rules, --http-allow-origin, the frame-mask walker."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from aiohttp import WebSocketError, WSCloseCode

from qmpd.cli import CLIError, parse_args
from qmpd.http.access import AccessPolicy, normalize_origin
from qmpd.http.websocket import UNMASKED, MaskedFramesOnly

PORT = 8080
OPEN = AccessPolicy("127.0.0.1", token_required=False, allowed_origins=frozenset({"https://console.example:8443"}))

HOSTS = [
    ("127.0.0.1", True),
    ("127.0.0.1:8080", True),
    ("LOCALHOST:8080", True),
    ("[::1]:8080", True),
    ("console.example", True),
    ("console.example:8443", True),
    ("127.0.0.1:8081", False),
    ("evil.example", False),
    ("evil.example:8080", False),
    ("localhost.evil.example:8080", False),
    ("", False),
]


@pytest.mark.parametrize(("host", "allowed"), HOSTS)
def test_host_names_this_server_or_an_allowed_origin(host: str, allowed: bool) -> None:
    assert OPEN.host_allowed(host, PORT) is allowed


def test_with_a_token_or_without_a_host_header_the_host_check_passes() -> None:
    assert AccessPolicy("0.0.0.0", token_required=True).host_allowed("qmpd.internal:8080", PORT)
    assert OPEN.host_allowed(None, PORT)


def test_an_ipv6_bound_address_is_accepted_in_brackets() -> None:
    assert AccessPolicy("::1", token_required=False).host_allowed("[::1]:8080", PORT)


ORIGINS = [
    (None, "127.0.0.1:8080", True),  # curl, scripts
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("http://localhost:8080", "localhost:8080", True),
    ("https://console.example:8443", "127.0.0.1:8080", True),
    ("https://CONSOLE.example:8443/", "127.0.0.1:8080", True),
    ("http://localhost:8080", "127.0.0.1:8080", False),  # another origin than the one addressed
    ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
    ("https://127.0.0.1:8080", "127.0.0.1:8080", False),
    ("http://evil.example", "127.0.0.1:8080", False),
    ("null", "127.0.0.1:8080", False),
    ("http://127.0.0.1:8080", None, False),
]


@pytest.mark.parametrize(("origin", "host", "allowed"), ORIGINS)
def test_origin_is_the_fronts_own_or_allowed(origin: str | None, host: str | None, allowed: bool) -> None:
    assert OPEN.origin_allowed(origin, host) is allowed


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("https://Console.Example:8443/", "https://console.example:8443"),
        ("http://a.example:80", "http://a.example"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("ftp://a.example", None),
        ("https://a.example/path", None),
        ("https://user@a.example", None),
        ("https://a.example:99999", None),
        ("a.example", None),
    ],
)
def test_normalize_origin(text: str, normalized: str | None) -> None:
    assert normalize_origin(text) == normalized


def test_http_allow_origin_option() -> None:
    argv = ["--http", "127.0.0.1:0", "--http-allow-origin", "https://A.example/", "--http-allow-origin", "http://b:81"]
    assert parse_args(argv).server.http_allow_origins == ("https://a.example", "http://b:81")
    with pytest.raises(CLIError, match="expected an origin"):
        parse_args(["--http-allow-origin", "https://a.example/console"])


# -- the frame-mask walker ------------------------------------------------------------------------------


class FakeParser:
    """Records what the walker passes on, as aiohttp's parser would receive it."""

    def __init__(self) -> None:
        self.fed = b""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        """Nothing to do."""


class FakeQueue:
    def __init__(self) -> None:
        self.exception: BaseException | None = None

    def set_exception(self, exc: BaseException) -> None:
        self.exception = exc


def _frame(length: int, *, masked: bool = True) -> bytes:
    if length < 126:
        head = bytes([0x81, (0x80 if masked else 0) | length])
    elif length < 1 << 16:
        head = bytes([0x81, (0x80 if masked else 0) | 126]) + struct.pack("!H", length)
    else:
        head = bytes([0x81, (0x80 if masked else 0) | 127]) + struct.pack("!Q", length)
    return head + (os.urandom(4) if masked else b"") + b"x" * length


def _walk(stream: bytes, chunk: int) -> tuple[FakeParser, FakeQueue, list[bool]]:
    parser, queue = FakeParser(), FakeQueue()
    walker = MaskedFramesOnly(parser, queue)
    ends = [walker.feed_data(stream[i : i + chunk])[0] for i in range(0, len(stream), chunk)]
    return parser, queue, ends


MASKED = _frame(0) + _frame(5) + _frame(125) + _frame(126) + _frame(300) + _frame(70_000)


@pytest.mark.parametrize("chunk", [1, 3, 7, 4096, len(MASKED)])
def test_masked_frames_pass_whole_in_any_chunking(chunk: int) -> None:
    parser, queue, ends = _walk(MASKED, chunk)
    assert parser.fed == MASKED and queue.exception is None and not any(ends)


@pytest.mark.parametrize("chunk", [1, 3, 7, 4096, 1 << 20])
@pytest.mark.parametrize("length", [0, 3, 200, 70_000])
def test_an_unmasked_frame_stops_the_stream_at_its_header(chunk: int, length: int) -> None:
    stream = MASKED + _frame(length, masked=False) + _frame(5)
    parser, queue, ends = _walk(stream, chunk)
    # The parser gets every byte before the bad frame, and at most the first byte of its header.
    assert parser.fed[: len(MASKED)] == MASKED and len(parser.fed) in (len(MASKED), len(MASKED) + 1)
    assert isinstance(queue.exception, WebSocketError)
    assert queue.exception.code == WSCloseCode.PROTOCOL_ERROR and UNMASKED in str(queue.exception)
    assert ends[-1], "the connection ends"


def test_the_walker_passes_eof_on() -> None:
    ended: list[Any] = []

    class Parser(FakeParser):
        def feed_eof(self) -> None:
            ended.append(True)

    MaskedFramesOnly(Parser(), FakeQueue()).feed_eof()
    assert ended == [True]
