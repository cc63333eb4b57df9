"""Hostile and careless clients, racing hot-plug: the daemon keeps serving, and the machine stays consistent.

Consistency is checked the same way everywhere: the CPUs QOM lists, the occupied slots of
query-hotpluggable-cpus, query-cpus-fast and the ACPI block's view agree, every present CPU has one
live thread named "CPU N/TCG", and no Unicorn engine outlives its CPU (the /metrics gauges).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import RawClient, Server, free_port, start_qmpd, wait_until

GUEST = ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=2,cores=2,threads=2,maxcpus=8"]
CPU = "Haswell-x86_64-cpu"


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Callable[..., tuple[Server, str]]]:
    servers: list[Server] = []

    def start(*extra: str) -> tuple[Server, str]:
        port = free_port()
        console = tmp_path / f"console{len(servers)}.log"
        argv = [*GUEST, "-debugcon", f"file:{console}", "--http", f"127.0.0.1:{port}", *extra]
        server = start_qmpd(argv, tmp_path, f"qmpd{len(servers)}")
        servers.append(server)
        wait_until(lambda: console.exists() and "online" in console.read_text())
        return server, f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop()


def _metric(url: str, name: str) -> float:
    async def fetch() -> str:
        async with aiohttp.ClientSession() as client, client.get(url + "/metrics") as response:
            return await response.text()

    for line in asyncio.run(fetch()).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _consistent(server: Server, url: str) -> bool:
    with RawClient(server.socket_path) as client:
        client.negotiate()
        cpus = client.execute("query-cpus-fast")["return"]
        slots = client.execute("query-hotpluggable-cpus")["return"]
        ost = client.execute("query-acpi-ospm-status")["return"]
        occupied = sorted(slot["qom-path"] for slot in slots if "qom-path" in slot)
        if occupied != sorted(cpu["qom-path"] for cpu in cpus):
            return False
        pid = server.process.pid
        names = [Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in os.listdir(f"/proc/{pid}/task")]
        threads = sum(name.startswith("CPU ") for name in names)
        if threads != len(cpus) or _metric(url, "qmpd_vcpu_threads") != len(cpus):
            return False
        if _metric(url, "qmpd_vcpu_engines") > len(cpus):
            return False
        # The guest's view: after the dust settles nothing is half inserted or half removed.
        return all(entry["source"] in (0, 1, 3) for entry in ost)


def test_a_client_that_never_reads_is_dropped_and_others_keep_their_latency(
    guest: Callable[..., tuple[Server, str]],
) -> None:
    server, _ = guest()

    def round_trips(client: RawClient, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            client.execute("query-status")
            samples.append(time.perf_counter() - started)
        return samples

    with RawClient(server.socket_path) as watcher:
        watcher.negotiate()
        before = statistics.median(round_trips(watcher, 200))

        # A WebSocket client that asks for ~22 KB replies and never reads one.
        async def flood() -> None:
            url = server.argv[server.argv.index("--http") + 1]
            async with aiohttp.ClientSession() as client, client.ws_connect(f"http://{url}/qmp") as ws:
                await ws.receive_str()
                await ws.send_str('{"execute":"qmp_capabilities"}')
                for _ in range(2000):
                    await ws.send_str('{"execute":"query-qmp-schema"}')
                await asyncio.sleep(3)

        flooder = threading.Thread(target=lambda: asyncio.run(flood()))
        flooder.start()
        time.sleep(0.5)
        during = statistics.median(round_trips(watcher, 200))
        flooder.join(timeout=60)
        assert not flooder.is_alive()
        assert during < max(10 * before, 0.01), (before, during)
        assert watcher.execute("query-status")["return"]["running"]
    assert "qmp.client_not_reading" in server.stderr(), "the flooding client was dropped with a log line"


def test_unterminated_input_floods_and_vanishing_clients(guest: Callable[..., tuple[Server, str]]) -> None:
    server, url = guest()
    # Megabytes of an object that never ends, then the client goes.
    with RawClient(server.socket_path) as client:
        client.negotiate()
        client.send(b'{"execute":"query-status","arguments":{"a":"' + b"x" * (8 << 20))
    # A flood of tiny commands: every one is answered, in order.
    with RawClient(server.socket_path, timeout=120) as client:
        client.negotiate()
        count = 20000
        client.send(b'{"execute":"query-status"}' * count + b'{"execute":"query-name","id":"last"}')
        lines = client.lines_until(b'"last"', limit=count + 10)
        assert len(lines) == count + 1
    # Clients that vanish in the middle of a device_add, again and again.
    for number in range(20):
        with RawClient(server.socket_path) as client:
            client.negotiate()
            slot = {"socket-id": 1, "core-id": number % 2, "thread-id": number % 2}
            client.send(json.dumps({"execute": "device_add", "arguments": {"driver": CPU, **slot}}).encode())
    wait_until(lambda: _consistent(server, url), timeout=30)


def test_racing_hotplug_from_many_sessions_leaves_everything_consistent(
    guest: Callable[..., tuple[Server, str]],
) -> None:
    server, url = guest()
    slots = [(s, c, t) for s in range(2) for c in range(2) for t in range(2)][1:]

    async def session(number: int) -> list[str]:
        outcomes = []
        async with aiohttp.ClientSession() as client, client.ws_connect(url + "/qmp") as ws:
            await ws.receive_str(timeout=30)
            await ws.send_str('{"execute":"qmp_capabilities"}')
            await ws.receive_str(timeout=30)
            for step in range(30):
                s, c, t = slots[(number + step) % len(slots)]
                choice = (number * 7 + step) % 6
                if choice == 0:
                    request: dict[str, Any] = {
                        "execute": "device_add",
                        "arguments": {"driver": CPU, "socket-id": s, "core-id": c, "thread-id": t},
                    }
                elif choice == 1:
                    path = f"/machine/topology/socket[{s}]/die[0]/core[{c}]/thread[{t}]"
                    request = {"execute": "qom-set", "arguments": {"path": path, "property": "cpu", "value": ""}}
                elif choice == 2:
                    index = s * 4 + c * 2 + t
                    request = {"execute": "cpu_set", "arguments": {"cpu": index, "state": "online"}}
                elif choice == 3:
                    request = {"execute": "stop" if step % 2 else "cont"}
                elif choice == 4:
                    request = {"execute": "query-hotpluggable-cpus"}
                else:
                    request = {"execute": "query-cpus-fast"}
                request["id"] = step
                await ws.send_str(json.dumps(request))
                while True:
                    message = json.loads(await ws.receive_str(timeout=60))
                    if message.get("id") == step:
                        outcomes.append(message["error"]["class"] if "error" in message else "ok")
                        break
        return outcomes

    async def everyone() -> list[list[str]]:
        return await asyncio.gather(*(session(n) for n in range(16)))

    results = asyncio.run(everyone())
    assert all(len(outcome) == 30 for outcome in results), "every request got its reply"
    assert {c for outcome in results for c in outcome} <= {"ok", "GenericError", "DeviceNotFound"}
    with RawClient(server.socket_path) as client:
        client.negotiate()
        client.execute("cont")
    wait_until(lambda: _consistent(server, url), timeout=30)
    assert asyncio.run(_health(url)) == 200


async def _health(url: str) -> int:
    async with aiohttp.ClientSession() as client, client.get(url + "/healthz") as response:
        return response.status


def test_quit_and_sigterm_during_hotplug_end_cleanly(guest: Callable[..., tuple[Server, str]]) -> None:
    for how in ("quit", "sigterm"):
        server, _ = guest()
        with RawClient(server.socket_path) as client:
            client.negotiate()
            for s, c, t in [(0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0)]:
                args = {"driver": CPU, "socket-id": s, "core-id": c, "thread-id": t}
                client.send(json.dumps({"execute": "device_add", "arguments": args}).encode())
            if how == "quit":
                client.send(b'{"execute":"quit"}')
            else:
                server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=20) == 0
        assert not Path(server.socket_path).exists()
