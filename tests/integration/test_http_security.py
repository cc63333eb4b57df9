"""The HTTP front against a hostile web page, over real sockets with raw bytes.

A page on any site can make its visitor's browser open a WebSocket to loopback (Origin check),
point its own name at 127.0.0.1 to read and change state (DNS rebinding: Host check), or submit a
cross-site form (JSON-only state changes).  Malformed requests get 4xx JSON, never aiohttp's 500
page; an unmasked client WebSocket frame closes the connection (RFC 6455 section 5.1); exec:
migration is refused over the front.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Server, free_port, start_qmpd, wait_until

TOKEN = "s3cret-token-of-some-length"
EVIL = "http://evil.example"
ALLOWED = "https://console.example:8443"
TIMEOUT = 5.0
EXEC_REFUSED = "exec: migration is only allowed on a QMP monitor, not over the HTTP front"


class Front:
    """A running qmpd with --http on 127.0.0.1:port."""

    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.port = port
        self.host = f"127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        sock.settimeout(TIMEOUT)
        return sock

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"", raw: bytes = b""
    ) -> tuple[int, Any]:
        """One request with exactly these headers (Host defaults to the bound address); status and JSON body."""
        fields = {"Host": self.host, "Connection": "close", **(headers or {})}
        if body or method not in ("GET", "HEAD"):
            fields.setdefault("Content-Length", str(len(body)))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
        with self.connect() as sock:
            sock.sendall(head.encode() + raw + b"\r\n" + body)
            reply = _read_to_eof(sock)
        status_line, _, rest = reply.partition(b"\r\n")
        _, _, payload = rest.partition(b"\r\n\r\n")
        content_type = [line for line in rest.split(b"\r\n") if line.lower().startswith(b"content-type:")]
        parsed = json.loads(payload) if content_type and b"json" in content_type[0] else payload
        return int(status_line.split()[1]), parsed

    def runstate(self) -> str:
        status, machine = self.request("GET", "/api/v1/machine")
        assert status == 200, machine
        return str(machine["runstate"])


def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes; a server that keeps the connection open fails the test."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pytest.fail(f"the server did not close the connection within {TIMEOUT} s; read {b''.join(chunks)!r}")
    return b"".join(chunks)


@contextmanager
def _launch(tmp_path: Path, name: str, *argv: str) -> Iterator[Front]:
    port = free_port()
    server = start_qmpd([*argv, "--http", f"127.0.0.1:{port}"], tmp_path, name)
    front = Front(server, port)

    def ready() -> bool:
        try:
            return front.request("GET", "/readyz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=15)
        yield front
    finally:
        server.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """No token: the Host and Origin checks are the protection.  Started paused (-S)."""
    with _launch(
        tmp_path_factory.mktemp("open"), "qmpd", "-machine", "pc", "-S", "--http-allow-origin", ALLOWED + "/"
    ) as launched:
        yield launched


@pytest.fixture(scope="module")
def token_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    with _launch(tmp_path_factory.mktemp("token"), "qmpd", "-machine", "none", "-S", "--http-token", TOKEN) as launched:
        yield launched


def _refused(reply: tuple[int, Any], status: int = 403) -> str:
    code, body = reply
    assert code == status and isinstance(body, dict), reply
    assert body["error"]["class"] == "GenericError", body
    return str(body["error"]["desc"])


# -- WebSocket frames -----------------------------------------------------------------------------------


def _frame(payload: bytes, *, masked: bool = True, opcode: int = 0x1) -> bytes:
    """One final client frame (RFC 6455 section 5.2)."""
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        head += bytes([mask_bit | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", len(payload))
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _upgrade(front: Front, path: str = "/qmp", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {front.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def _parse_frames(data: bytes) -> tuple[list[bytes], bytes]:
    """The text payloads of the complete server frames in ``data``, and the bytes left over."""
    messages = []
    while len(data) >= 2:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < start + length:
            break
        if data[0] & 0x0F == 0x1:
            messages.append(data[start : start + length])
        data = data[start + length :]
    return messages, data


class RawWebSocket:
    """A client of /qmp over a plain socket, so that it can send frames no library would."""

    def __init__(self, front: Front, early: bytes = b"") -> None:
        """Upgrade; ``early`` goes in the same write as the upgrade request."""
        self.sock = front.connect()
        self.sock.sendall(_upgrade(front) + early)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        self._pending = b""
        self._messages: list[bytes] = []
        self._take(head.split(b"\r\n\r\n", 1)[1])

    def receive(self) -> dict[str, Any]:
        """The next text message (a read bounded by TIMEOUT)."""
        while not self._messages:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self._take(chunk)
        return dict(json.loads(self._messages.pop(0)))

    def until_closed(self) -> list[dict[str, Any]]:
        """Every message left until the server closes the connection."""
        self._take(_read_to_eof(self.sock))
        messages, self._messages = self._messages, []
        return [json.loads(m) for m in messages]

    def _take(self, data: bytes) -> None:
        messages, self._pending = _parse_frames(self._pending + data)
        self._messages += messages

    def close(self) -> None:
        self.sock.close()


def _session(front: Front, *frames: bytes) -> list[dict[str, Any]]:
    """The greeting and one reply to each of ``frames`` (each a request)."""
    ws = RawWebSocket(front)
    try:
        ws.sock.sendall(b"".join(frames))
        return [ws.receive() for _ in range(len(frames) + 1)]
    finally:
        ws.close()


NEGOTIATE = b'{"execute": "qmp_capabilities"}'


def test_masked_frames_are_served(front: Front) -> None:
    long_negotiate = b" " * 300 + NEGOTIATE  # a 16-bit length
    greeting, *replies = _session(front, _frame(b"[1]"), _frame(long_negotiate), _frame(b'{"execute": "query-name"}'))
    assert "QMP" in greeting
    assert [next(iter(reply)) for reply in replies] == ["error", "return", "return"], replies


def test_an_unmasked_client_frame_closes_the_connection(front: Front) -> None:
    ws = RawWebSocket(front)
    try:
        assert "QMP" in ws.receive()
        ws.sock.sendall(_frame(NEGOTIATE))
        assert ws.receive() == {"return": {}}, "masked frames are served"
        # No close frame follows: only the server's check may end this connection.
        ws.sock.sendall(_frame(b'{"execute": "query-name"}', masked=False))
        assert ws.until_closed() == [], "the unmasked frame was not read"
    finally:
        ws.close()


def test_an_unmasked_frame_behind_the_upgrade_request_closes_the_connection(front: Front) -> None:
    ws = RawWebSocket(front, early=_frame(NEGOTIATE, masked=False))
    try:
        assert [m for m in ws.until_closed() if "QMP" not in m] == [], "the unmasked frame was not read"
    finally:
        ws.close()


# -- Origin ---------------------------------------------------------------------------------------------


def test_a_foreign_origin_cannot_open_a_websocket_or_change_state(front: Front) -> None:
    for path in ("/qmp", "/api/v1/live"):
        desc = _refused(front.request("GET", path, {"Origin": EVIL}))
        assert EVIL in desc and "--http-allow-origin" in desc
    # A real upgrade attempt is refused before the handshake.
    with front.connect() as sock:
        sock.sendall(_upgrade(front, extra=f"Origin: {EVIL}\r\n"))
        assert sock.recv(4096).startswith(b"HTTP/1.1 403")
    for origin in (EVIL, "null", f"http://127.0.0.1:{front.port + 1}", f"https://127.0.0.1:{front.port}"):
        _refused(front.request("PUT", "/api/v1/vm.resume", {"Origin": origin}))
    assert front.runstate() != "running"


def test_the_fronts_own_origin_and_allowed_origins_are_served(front: Front) -> None:
    for host in (front.host, f"localhost:{front.port}"):
        assert front.request("GET", "/api/v1/machine", {"Host": host, "Origin": f"http://{host}"})[0] == 200
    assert front.request("GET", "/api/v1/machine", {"Origin": ALLOWED})[0] == 200
    with front.connect() as sock:
        sock.sendall(_upgrade(front, extra=f"Origin: http://{front.host}\r\n"))
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    assert front.request("PUT", "/api/v1/vm.pause", {"Origin": f"http://{front.host}"})[0] == 204


# -- Host (DNS rebinding) -------------------------------------------------------------------------------


def test_a_rebound_host_name_reads_and_changes_nothing(front: Front) -> None:
    for host in ("evil.example", f"evil.example:{front.port}", f"127.0.0.1.evil.example:{front.port}"):
        desc = _refused(front.request("GET", "/api/v1/machine", {"Host": host}))
        assert host in desc
        _refused(front.request("GET", "/metrics", {"Host": host}))
        _refused(front.request("PUT", "/api/v1/vm.resume", {"Host": host}))
    assert front.runstate() != "running"


def test_loopback_names_and_allowed_origins_hosts_are_served(front: Front) -> None:
    port = front.port
    for host in (
        "127.0.0.1",
        f"127.0.0.1:{port}",
        "localhost",
        f"LOCALHOST:{port}",
        f"[::1]:{port}",
        "console.example",
    ):
        assert front.request("GET", "/api/v1/cpus", {"Host": host})[0] == 200, host
    # The Dockerfile's HEALTHCHECK: urllib sends Host: 127.0.0.1:PORT.
    assert front.request("GET", "/healthz", {"Host": f"127.0.0.1:{port}"})[0] == 200


def test_with_a_token_the_host_check_gives_way_to_the_token(token_front: Front) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert token_front.request("GET", "/api/v1/machine", {"Host": "qmpd.internal:8080", **auth})[0] == 200
    _refused(token_front.request("GET", "/api/v1/machine", {"Host": "qmpd.internal:8080"}), 401)
    _refused(token_front.request("GET", "/qmp", {"Origin": EVIL, **auth}))


# -- bodies: JSON only, malformed input is a 4xx with a JSON body ------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=bogus",
    ],
)
def test_state_changes_take_json_only(front: Front, content_type: str) -> None:
    desc = _refused(front.request("PUT", "/api/v1/vm.resume", {"Content-Type": content_type}, b"{}"), 415)
    assert content_type.split(";")[0] in desc or "bogus" in desc
    if not content_type.startswith("application/json"):
        _refused(front.request("PUT", "/api/v1/vm.resume", {"Content-Type": content_type}), 415)
    assert front.runstate() != "running"


def test_malformed_bodies_are_4xx_json(front: Front) -> None:
    json_type = {"Content-Type": "application/json"}
    for body in (b"[" * 60_000, b"\xff\xfe{}", b'{"desired_vcpus": 1'):
        desc = _refused(front.request("PUT", "/api/v1/vm.resize", json_type, body), 400)
        assert desc == "the request body must be a JSON object"
    bogus = {"Content-Type": "application/json; charset=bogus"}
    assert "bogus" in _refused(front.request("PUT", "/api/v1/vm.resize", bogus, b"{}"), 415)


def test_a_non_ascii_authorization_header_is_a_401(token_front: Front) -> None:
    for value in (b"Bearer \xe9\xe9", b"Bearer \xff", "Bearer été".encode()):
        reply = token_front.request("GET", "/api/v1/machine", raw=b"Authorization: " + value + b"\r\n")
        assert _refused(reply, 401) == "missing or wrong bearer token"


# -- exec: migration ------------------------------------------------------------------------------------


def _ws_commands(front: Front, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    frames = [_frame(json.dumps(command).encode()) for command in commands]
    return _session(front, _frame(NEGOTIATE), *frames)[2:]


def test_exec_migration_is_refused_over_the_http_front(front: Front, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    replies = _ws_commands(
        front,
        {"execute": "migrate", "arguments": {"uri": f"exec:touch {marker}"}},
        {"execute": "query-migrate"},
    )
    assert replies[0] == {"error": {"class": "GenericError", "desc": EXEC_REFUSED}}
    assert replies[1] == {"return": {}}, "no migration was started"
    assert not marker.exists()


def test_exec_incoming_migration_is_refused_over_the_http_front(tmp_path: Path) -> None:
    with _launch(tmp_path, "incoming", "-machine", "none", "-incoming", "defer") as incoming:
        command = {"execute": "migrate-incoming", "arguments": {"uri": f"exec:touch {tmp_path / 'ran'}"}}
        assert _ws_commands(incoming, command) == [{"error": {"class": "GenericError", "desc": EXEC_REFUSED}}]
        assert not (tmp_path / "ran").exists()
