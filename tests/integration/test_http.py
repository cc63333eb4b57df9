"""The HTTP front over real sockets: QMP over WebSocket, REST, metrics, health, tokens, limits.

The WebSocket session must answer exactly as the Unix socket session does: every malformed and
well-formed input of the protocol's differential tests goes to both, and the replies must be the
same bytes (one message per frame instead of one per CRLF-terminated line).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.differential.test_protocol_diff import COMMANDS, END, MALFORMED, OOB_CASES, exchange
from tests.helpers import REPO, RawClient, Server, free_port, mask, qmpd_command, start_qmpd, wait_until

TOKEN = "s3cret-token-of-some-length"


class Front:
    """A qmpd with --http and its base URL."""

    def __init__(self, server: Server, port: int, token: str | None = None) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            async with aiohttp.ClientSession(headers=self.headers) as client:
                data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
                if data is not None:  # the front takes JSON bodies only
                    kwargs.setdefault("headers", {"Content-Type": "application/json"})
                async with client.request(method, self.url + path, data=data, **kwargs) as response:
                    text = await response.text()
                    try:
                        return response.status, json.loads(text) if text else None
                    except json.JSONDecodeError:
                        return response.status, text

        return asyncio.run(go())


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Callable[..., Front]]:
    servers: list[Server] = []

    def launch(*argv: str, token: str | None = None) -> Front:
        port = free_port()
        extra = ["--http", f"127.0.0.1:{port}"] + (["--http-token", token] if token else [])
        server = start_qmpd([*argv, *extra], tmp_path, f"qmpd{len(servers)}")
        servers.append(server)
        result = Front(server, port, token)
        wait_until(lambda: _ready(result), timeout=15)
        return result

    yield launch
    for server in servers:
        server.stop()


def _ready(front: Front) -> bool:
    try:
        return front.request("GET", "/readyz")[0] == 200
    except aiohttp.ClientError:
        return False


# -- QMP over WebSocket ----------------------------------------------------------------------------------


async def _ws_exchange(url: str, chunks: list[bytes], negotiate: str | None, headers: dict[str, str]) -> list[bytes]:
    async with aiohttp.ClientSession(headers=headers) as client, client.ws_connect(url + "/qmp") as ws:
        frames: list[bytes] = []
        greeting = json.loads(await ws.receive_str(timeout=10))
        assert "QMP" in greeting
        if negotiate is not None:
            args = {"enable": [negotiate]} if negotiate else {}
            await ws.send_str(json.dumps({"execute": "qmp_capabilities", "arguments": args}))
            assert json.loads(await ws.receive_str(timeout=10)) == {"return": {}}
        for chunk in [*chunks, END]:
            try:
                await ws.send_str(chunk.decode("utf-8"))
            except UnicodeDecodeError:
                await ws.send_bytes(chunk)
        while True:
            frame = (await ws.receive_str(timeout=20)).encode()
            assert not frame.endswith(b"\r\n"), "one message per frame, no line end"
            frames.append(mask(frame))
            if b'"__end__"' in frame:
                return frames


def _unix_exchange(server: Server, chunks: list[bytes], negotiate: str | None) -> list[bytes]:
    return [line.rstrip(b"\r\n") for line in exchange(server, chunks, negotiate)]


CASES = [(data, negotiate) for data in MALFORMED + COMMANDS for negotiate in (None, "")]
CASES += [(data, "oob") for data in OOB_CASES]


def test_websocket_session_answers_as_the_unix_socket(front: Callable[..., Front]) -> None:
    web = front("-machine", "none", "-S", "-nodefaults")
    for data, negotiate in CASES:
        expected = _unix_exchange(web.server, [data], negotiate)
        actual = asyncio.run(_ws_exchange(web.url, [data], negotiate, web.headers))
        assert actual == expected, (data, negotiate)
    # One message split over frames, and several messages in one frame.
    halves = [b'{"execute":"query-st', b'atus","id":1}{"execute":"query-name","id":2}']
    assert asyncio.run(_ws_exchange(web.url, halves, "", {})) == _unix_exchange(web.server, halves, "")


def test_websocket_sessions_get_events(front: Callable[..., Front]) -> None:
    web = front("-machine", "none", "-S", "-nodefaults")

    async def go() -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(web.url + "/qmp") as watcher,
            client.ws_connect(web.url + "/qmp") as actor,
        ):
            for ws in (watcher, actor):
                await ws.receive_str(timeout=10)
                await ws.send_str('{"execute":"qmp_capabilities"}')
                await ws.receive_str(timeout=10)
            await actor.send_str('{"execute":"cont"}')
            return [json.loads(await watcher.receive_str(timeout=10))]

    (event,) = asyncio.run(go())
    assert event["event"] == "RESUME"


# -- REST ---------------------------------------------------------------------------------------------

GUEST = ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=2,cores=2,threads=1,maxcpus=4"]


def test_rest_views_and_resize_with_the_guests_acknowledgement(front: Callable[..., Front], tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    web = front(*GUEST, "-debugcon", f"file:{console}")
    status, machine = web.request("GET", "/api/v1/machine")
    assert status == 200
    assert machine["type"] == "pc-i440fx-7.2" and machine["model"] == "Haswell"
    assert machine["topology"] == {"sockets": 2, "dies": 1, "cores": 2, "threads": 1, "max_cpus": 4, "boot_cpus": 1}
    status, body = web.request("GET", "/api/v1/cpus")
    assert [(c["slot"], c["present"], c["apic_id"]) for c in body["cpus"]] == [
        (0, True, 0),
        (1, False, 1),
        (2, False, 2),
        (3, False, 3),
    ]
    assert Path(f"/proc/{web.server.process.pid}/task/{body['cpus'][0]['host_thread_id']}").exists()
    # A plug reaches the guest once its firmware has switched the ACPI block to the modern interface.
    wait_until(lambda: "online" in (console.read_text() if console.exists() else ""))

    status, resized = web.request("PUT", "/api/v1/vm.resize", {"desired_vcpus": 3})
    assert status == 200, resized
    assert resized == {"desired_vcpus": 3, "present": [0, 1, 2], "plugged": [1, 2], "unplugged": []}
    cpus = web.request("GET", "/api/v1/cpus")[1]["cpus"]
    assert [c["online"] for c in cpus] == [True, True, True, False], "the guest acknowledged before the reply"
    assert "CPU 2 (APIC ID 2) online" in console.read_text()
    before = cpus[2]["instructions"]
    wait_until(lambda: web.request("GET", "/api/v1/cpus")[1]["cpus"][2]["instructions"] > before)

    status, resized = web.request("PUT", "/api/v1/vm.resize", {"desired_vcpus": 1})
    assert status == 200 and resized["unplugged"] == [2, 1] and resized["present"] == [0]
    with RawClient(web.server.socket_path) as client:
        client.negotiate()
        assert len(client.execute("query-cpus-fast")["return"]) == 1

    assert web.request("PUT", "/api/v1/vm.pause")[0] == 204
    assert web.request("GET", "/api/v1/machine")[1]["runstate"] == "paused"
    assert web.request("PUT", "/api/v1/vm.resume")[0] == 204
    assert web.request("GET", "/api/v1/machine")[1]["runstate"] == "running"
    assert web.request("PUT", "/api/v1/vm.reset")[0] == 204


def test_rest_errors_are_json_with_the_qmp_class(front: Callable[..., Front]) -> None:
    web = front(*GUEST, "-S")
    for body in ({"desired_vcpus": 0}, {"desired_vcpus": 5}, {"desired_vcpus": "2"}, {"vcpus": 2}, [1], "{"):
        status, reply = web.request("PUT", "/api/v1/vm.resize", body)
        assert status == 400 and reply["error"]["class"] == "GenericError", body
    # Under -S the guest never runs: the plug stands, the wait times out with 504.
    status, reply = web.request("PUT", "/api/v1/vm.resize", {"desired_vcpus": 2, "timeout": 0.3})
    assert status == 504 and "did not acknowledge" in reply["error"]["desc"]
    assert [c["present"] for c in web.request("GET", "/api/v1/cpus")[1]["cpus"]] == [True, True, False, False]
    # The legacy ACPI interface refuses unplugs, as QEMU's device_del does.
    status, reply = web.request("PUT", "/api/v1/vm.resize", {"desired_vcpus": 1})
    assert status == 400 and reply["error"]["desc"].startswith("acpi: device unplug request")
    assert web.request("PUT", "/api/v1/vm.resume")[0] == 204
    status, reply = web.request("PUT", "/api/v1/vm.pause", "x" * (128 << 10))
    assert status == 413 and reply["error"]["class"] == "GenericError"
    assert web.request("GET", "/api/v1/nothing")[0] == 404
    assert web.request("POST", "/api/v1/vm.pause")[0] == 405


def test_openapi_document_lists_every_rest_route(front: Callable[..., Front]) -> None:
    web = front("-machine", "none", "-S")
    status, document = web.request("GET", "/api/v1/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    paths = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    assert paths == {
        ("/api/v1/machine", "GET"),
        ("/api/v1/cpus", "GET"),
        ("/api/v1/vm.resize", "PUT"),
        ("/api/v1/vm.pause", "PUT"),
        ("/api/v1/vm.resume", "PUT"),
        ("/api/v1/vm.reset", "PUT"),
        ("/api/v1/guest-policy", "GET"),
        ("/api/v1/guest-policy", "PUT"),
        ("/api/v1/guest-policy/{id}", "DELETE"),
        ("/api/v1/openapi.json", "GET"),
    }
    for path, method in paths:
        if "{" not in path:  # a path with a parameter answers 404 for one that names nothing
            assert web.request(method, path)[0] != 404, path


# -- metrics and health ---------------------------------------------------------------------------------


def _metrics(web: Front) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = web.request("GET", "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_parse_and_move(front: Callable[..., Front], tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    web = front(*GUEST, "-debugcon", f"file:{console}")
    wait_until(lambda: "online" in (console.read_text() if console.exists() else ""))
    first = _metrics(web)
    assert first[("qmpd_vcpus_present", ())] == 1 and first[("qmpd_vcpus_possible", ())] == 4
    key = ("qmpd_qmp_commands_total", (("command", "query-status"), ("error_class", "none")))
    with RawClient(web.server.socket_path) as client:
        client.negotiate()
        client.execute("query-status")
        client.execute("device_del", {"id": "nothing"})
        during = _metrics(web)
        assert during[("qmpd_qmp_sessions_open", ())] == 1
    assert web.request("PUT", "/api/v1/vm.resize", {"desired_vcpus": 2})[0] == 200
    second = _metrics(web)
    assert second[key] == first.get(key, 0) + 1
    assert second[("qmpd_qmp_commands_total", (("command", "device_del"), ("error_class", "DeviceNotFound")))] == 1
    assert second[("qmpd_vcpus_present", ())] == 2 and second[("qmpd_vcpus_online", ())] == 2
    assert second[("qmpd_hotplug_operations_total", (("operation", "plug"),))] == 1
    assert second[("qmpd_hotplug_duration_seconds_count", (("operation", "plug"),))] == 1
    instructions = ("qmpd_guest_instructions_total", (("apic_id", "0"), ("cpu_index", "0")))
    assert second[instructions] > first[instructions] > 0
    assert second[("qmpd_qmp_command_duration_seconds_count", (("command", "query-status"),))] >= 1


def test_health_and_readiness(front: Callable[..., Front]) -> None:
    web = front(*GUEST)
    assert web.request("GET", "/healthz") == (200, {"status": "ok"})
    assert web.request("GET", "/readyz") == (200, {"ready": True})


# -- security -----------------------------------------------------------------------------------------


def test_beyond_loopback_a_token_is_required(tmp_path: Path) -> None:
    result = subprocess.run(
        [*qmpd_command(), "-machine", "none", "--http", f"0.0.0.0:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "binding beyond loopback requires --http-token" in result.stderr


def test_with_a_token_every_request_needs_it(front: Callable[..., Front]) -> None:
    web = front("-machine", "none", "-S", token=TOKEN)
    anonymous = Front(web.server, int(web.url.rsplit(":", 1)[1]))
    wrong = Front(web.server, int(web.url.rsplit(":", 1)[1]), token="not-the-right-token-at-all")
    for path in ("/api/v1/machine", "/api/v1/cpus", "/api/v1/openapi.json", "/metrics", "/api/v1/live", "/qmp"):
        assert anonymous.request("GET", path)[0] == 401, path
        assert wrong.request("GET", path)[0] == 401, path
    assert anonymous.request("PUT", "/api/v1/vm.pause")[0] == 401
    # The dashboard's files and the health probes are open (no secrets; browsers and probes have no token).
    for path in ("/", "/static/dashboard.js", "/healthz", "/readyz"):
        assert anonymous.request("GET", path)[0] == 200, path
    assert web.request("GET", "/api/v1/machine")[0] == 200
    assert anonymous.request("GET", f"/api/v1/machine?token={TOKEN}")[0] == 200
    replies = asyncio.run(_ws_exchange(web.url, [b'{"execute":"query-status"}'], "", web.headers))
    assert b'"status": "prelaunch"' in replies[0]


def test_http_port_in_use_ends_start_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "qmpd", "-machine", "none", "--http", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1 and f"--http 127.0.0.1:{port}:" in result.stderr


def test_example_clients(front: Callable[..., Front], tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    web = front(*GUEST, "-debugcon", f"file:{console}")
    wait_until(lambda: "online" in (console.read_text() if console.exists() else ""))
    port = web.url.rsplit(":", 1)[1]
    script = REPO / "examples" / "clients" / "ws_qmp.py"
    result = subprocess.run(
        [sys.executable, str(script), f"ws://127.0.0.1:{port}/qmp", "query-status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "return": {"status": "running", "singlestep": False, "running": True}
    }
    curl = subprocess.run(
        ["sh", str(REPO / "examples" / "clients" / "rest.sh"), f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert curl.returncode == 0, curl.stderr
    assert '"desired_vcpus": 2' in curl.stdout and '"unplugged": [1]' in curl.stdout


def test_make_run_starts_the_default_machine_with_the_http_front(tmp_path: Path) -> None:
    """The README's first command: the Makefile's `run` recipe, with this checkout's interpreter."""
    recipe = (REPO / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    command_line = recipe.split("exec ", 1)[1].replace("\\\n", " ")
    port = free_port()
    sock = tmp_path / "qmpd.sock"
    words = command_line.replace("$(SOCKET)", str(sock)).replace("$(HTTP)", f"127.0.0.1:{port}").split()
    assert words[0] == "$(VENV)/bin/qmpd"
    with open(tmp_path / "stdout", "wb") as stdout:
        process = subprocess.Popen([*qmpd_command(), *words[1:]], stdout=stdout, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        web = Front(Server(process, str(sock), words, tmp_path / "stdout"), port)
        wait_until(lambda: _ready(web), timeout=20)
        wait_until(lambda: "online" in (tmp_path / "stdout").read_text(errors="replace"))
        cpus = web.request("GET", "/api/v1/cpus")[1]["cpus"]
        assert sum(c["present"] for c in cpus) == 2 and len(cpus) > 2, "free slots to plug into"
        assert web.request("GET", "/")[0] == 200
        with RawClient(str(sock)) as client:
            client.negotiate()
            assert client.execute("query-status")["return"]["status"] == "running"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_sessions_beyond_max_sessions_are_refused_clearly(front: Callable[..., Front]) -> None:
    web = front("-machine", "none", "-S", "--max-sessions", "3")

    async def go() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as client:
            first = await client.ws_connect(web.url + "/qmp")
            second = await client.ws_connect(web.url + "/qmp")
            for ws in (first, second):
                await ws.receive_str(timeout=10)
            # The Unix monitor counts only while a client is on it: two WebSockets + one more = 3.
            third = await client.ws_connect(web.url + "/qmp")
            await third.receive_str(timeout=10)
            try:
                await client.ws_connect(web.url + "/qmp")
            except aiohttp.WSServerHandshakeError as refused:
                status = refused.status
            async with client.get(web.url + "/qmp") as response:
                body = await response.json()
            await first.close()
            # A slot frees when a session ends.
            fourth = await client.ws_connect(web.url + "/qmp")
            assert "QMP" in json.loads(await fourth.receive_str(timeout=10))
            for ws in (second, third, fourth):
                await ws.close()
            return status, body

    status, body = asyncio.run(go())
    assert status == 503
    assert body == {"error": {"class": "GenericError", "desc": "too many QMP sessions (--max-sessions 3)"}}


def test_256_websocket_sessions_plug_unplug_and_query_concurrently(front: Callable[..., Front], tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    web = front(*GUEST, "-debugcon", f"file:{console}", "--max-sessions", "300")
    wait_until(lambda: "online" in (console.read_text() if console.exists() else ""))
    slots = [{"socket-id": 0, "core-id": 1}, {"socket-id": 1, "core-id": 0}, {"socket-id": 1, "core-id": 1}]

    async def worker(client: aiohttp.ClientSession, number: int, together: asyncio.Barrier) -> list[str]:
        classes = []
        async with client.ws_connect(web.url + "/qmp", max_msg_size=0) as ws:
            await ws.receive_str(timeout=30)
            await ws.send_str('{"execute":"qmp_capabilities"}')
            await ws.receive_str(timeout=30)
            await asyncio.wait_for(together.wait(), 60)  # all 256 sessions are open before any goes on
            slot = slots[number % 3]
            for step, (name, arguments) in enumerate(
                [
                    ("device_add", {"driver": "Haswell-x86_64-cpu", "id": f"w{number}", "thread-id": 0, **slot}),
                    ("query-cpus-fast", {}),
                    ("device_del", {"id": f"w{number}"}),
                    ("query-hotpluggable-cpus", {}),
                ]
            ):
                await ws.send_str(json.dumps({"execute": name, "arguments": arguments, "id": step}))
                while True:
                    message = json.loads(await ws.receive_str(timeout=60))
                    if message.get("id") == step:
                        classes.append(message["error"]["class"] if "error" in message else "ok")
                        break
        return classes

    async def go() -> list[list[str]]:
        # No connection pool limit (aiohttp's default of 100 would queue the rest): 256 at once.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
            together = asyncio.Barrier(256)
            return await asyncio.gather(*(worker(client, n, together) for n in range(256)))

    results = asyncio.run(go())
    assert len(results) == 256 and all(len(r) == 4 for r in results), "every session got every reply"
    assert all(r[1] == "ok" and r[3] == "ok" for r in results)
    assert {r[0] for r in results} <= {"ok", "GenericError"}, "a busy slot is a clean error"
    # Afterwards the machine is consistent: what QOM, the slots and the threads say agree.
    wait_until(lambda: web.request("GET", "/api/v1/cpus")[1]["cpus"][0]["present"])
    with RawClient(web.server.socket_path) as client:
        client.negotiate()

        def settled() -> bool:
            cpus = client.execute("query-cpus-fast")["return"]
            slots_now = client.execute("query-hotpluggable-cpus")["return"]
            occupied = sorted(s["qom-path"] for s in slots_now if "qom-path" in s)
            return occupied == sorted(c["qom-path"] for c in cpus)

        wait_until(settled, timeout=30)
        cpus = client.execute("query-cpus-fast")["return"]
        tasks = os.listdir(f"/proc/{web.server.process.pid}/task")
        names = [Path(f"/proc/{web.server.process.pid}/task/{t}/comm").read_text().strip() for t in tasks]
        assert sum(name.startswith("CPU ") for name in names) == len(cpus), "no vCPU thread leaked"
    assert web.request("GET", "/healthz")[0] == 200
