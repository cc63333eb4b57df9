"""Machine state that survives: migrate to a file or command, -incoming, --state-dir.

The guest is the bundled firmware, which keeps a counter per CPU at 0x200000 + 8 x APIC ID: after a
restore the counters must go on from where they were saved, not start again from zero.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qmpd.migration import STATE_FILE
from qmpd.migration.stream import StateFormatError, read_state, write_state
from tests.helpers import RawClient, Server, hmp, read_u64s, start_qmpd, wait_until

ARGV = ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=2,cores=2,threads=1,maxcpus=4", "-m", "128"]
CPU = "Haswell-x86_64-cpu"


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*extra: str, name: str | None = None) -> Server:
        server = start_qmpd([*ARGV, *extra], tmp_path, name or f"qmpd{len(servers)}")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _console(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _slot(socket_id: int, core_id: int) -> dict[str, Any]:
    return {"driver": CPU, "socket-id": socket_id, "core-id": core_id, "thread-id": 0}


def _three_cpus_running(client: RawClient, console: Path) -> None:
    """The firmware on 3 of 4 CPUs: the boot CPU, vcpu1 (with an id) and an anonymous one."""
    wait_until(lambda: "CPU 0 (APIC ID 0) online" in _console(console))
    assert client.execute("device_add", {**_slot(0, 1), "id": "vcpu1"}) == {"return": {}}
    assert client.execute("device_add", _slot(1, 0)) == {"return": {}}
    wait_until(lambda: "CPU 2 (APIC ID 2) online" in _console(console) and "CPU 1 (APIC ID 1)" in _console(console))
    wait_until(lambda: all(read_u64s(client, 0x200000, 3)))


def _events_until(client: RawClient, name: str, status: str | None = None) -> list[dict[str, Any]]:
    seen = []
    while True:
        message = client.message(timeout=30)
        if "event" in message:
            seen.append(message)
            if message["event"] == name and (status is None or message["data"].get("status") == status):
                return seen


def _without_thread_ids(cpus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in cpu.items() if key != "thread-id"} for cpu in cpus]


def test_save_restore_continues_counters_and_keeps_hotplugged_cpus(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    state = tmp_path / "machine.state"
    console = tmp_path / "source.log"
    source = launch("-debugcon", f"file:{console}")
    with RawClient(source.socket_path) as client:
        client.negotiate()
        _three_cpus_running(client, console)
        client.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        slots_before = client.execute("query-hotpluggable-cpus")["return"]
        cpus_before = _without_thread_ids(client.execute("query-cpus-fast")["return"])
        client.events.clear()
        assert client.execute("migrate", {"uri": f"file:{state}"}) == {"return": {}}
        assert [(e["event"], e["data"]) for e in client.events] == [("MIGRATION", {"status": "setup"})], (
            "before the reply"
        )
        events = _events_until(client, "MIGRATION", "completed")
        names = [(e["event"], e.get("data", {}).get("status", e.get("data", {}).get("pass"))) for e in events]
        assert names == [
            ("MIGRATION_PASS", 1),
            ("MIGRATION", "active"),
            ("STOP", None),
            ("MIGRATION_PASS", 2),
            ("MIGRATION", "completed"),
        ]
        assert client.execute("query-status")["return"]["status"] == "postmigrate"
        info = client.execute("query-migrate")["return"]
        assert info["status"] == "completed" and info["ram"]["total"] == 128 << 20
        saved = read_u64s(client, 0x200000, 3)
        error = client.execute("migrate", {"uri": f"file:{state}"})["error"]
        assert error == {
            "class": "GenericError",
            "desc": "Can't migrate the vm that was paused due to previous migration",
        }
    assert source.stop() == 0
    assert not list(tmp_path.glob("machine.state.*.part")), "no partial file left beside the state"

    target_console = tmp_path / "target.log"
    target = launch("-debugcon", f"file:{target_console}", "-incoming", f"file:{state}")
    with RawClient(target.socket_path) as client:
        client.negotiate()
        wait_until(lambda: client.execute("query-status")["return"]["status"] == "running")
        wait_until(lambda: all(now > then for now, then in zip(read_u64s(client, 0x200000, 3), saved, strict=True)))
        restored = read_u64s(client, 0x200000, 3)
        assert all(then < now < then + 10**9 for now, then in zip(restored, saved, strict=True)), "continued"
        shadow = read_u64s(client, 0x202000, 3)
        assert all(abs(a - b) < 10**7 for a, b in zip(shadow, restored, strict=True)), "shadow counters restored too"
        assert client.execute("query-hotpluggable-cpus")["return"] == slots_before
        assert _without_thread_ids(client.execute("query-cpus-fast")["return"]) == cpus_before
        assert client.execute("qom-get", {"path": "/machine/peripheral/vcpu1", "property": "hotplugged"})["return"]
        assert "CPU 1 (APIC ID 1) online" not in _console(target_console), "restored CPUs are not booted again"
        # The restored hot-plugged CPU leaves with the guest's handshake.
        assert client.execute("device_del", {"id": "vcpu1"}) == {"return": {}}
        events = _events_until(client, "DEVICE_DELETED")
        while events[-1]["data"].get("device") != "vcpu1":
            events += _events_until(client, "DEVICE_DELETED")
        assert events[0]["event"] == "ACPI_DEVICE_OST"
        assert len(client.execute("query-cpus-fast")["return"]) == 2


def test_a_target_with_the_saved_cpus_device_added_while_waiting_loads_into_them(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    """libvirt's restore: -incoming defer, device_add of the saved domain's vCPUs, then migrate-incoming."""
    state = tmp_path / "machine.state"
    console = tmp_path / "source.log"
    source = launch("-debugcon", f"file:{console}")
    with RawClient(source.socket_path) as client:
        client.negotiate()
        wait_until(lambda: "CPU 0 (APIC ID 0) online" in _console(console))
        assert client.execute("device_add", {**_slot(0, 1), "id": "vcpu1"}) == {"return": {}}
        assert client.execute("device_add", {**_slot(1, 0), "id": "vcpu2"}) == {"return": {}}
        wait_until(lambda: all(read_u64s(client, 0x200000, 3)))
        assert client.execute("migrate", {"uri": f"file:{state}"}) == {"return": {}}
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
        saved = read_u64s(client, 0x200000, 3)
        cpus_before = _without_thread_ids(client.execute("query-cpus-fast")["return"])
    source.stop()

    target = launch("-incoming", "defer")
    with RawClient(target.socket_path) as client:
        client.negotiate()
        assert client.execute("device_add", {**_slot(0, 1), "id": "vcpu1"}) == {"return": {}}
        # vcpu2 is missing: refused as QEMU refuses it, and the target stays as libvirt built it.
        assert client.execute("migrate-incoming", {"uri": f"file:{state}"}) == {"return": {}}
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "failed")
        assert client.execute("query-migrate")["return"]["error-desc"].startswith(
            "Unknown savevm section or instance 'cpu_common' 2. Make sure that your current VM setup matches"
        )
        assert client.execute("query-status")["return"]["status"] == "inmigrate"
        assert [cpu["qom-path"] for cpu in client.execute("query-cpus-fast")["return"]] == [
            "/machine/unattached/device[0]",
            "/machine/peripheral/vcpu1",
        ]
        assert client.execute("device_add", {**_slot(1, 0), "id": "vcpu2"}) == {"return": {}}
        client.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        client.events.clear()
        assert client.execute("migrate-incoming", {"uri": f"file:{state}"}) == {"return": {}}
        # Before the reply, as QEMU: libvirt fails a restore whose job has not started when the reply comes.
        assert [(e["event"], e["data"]) for e in client.events] == [("MIGRATION", {"status": "setup"})]
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
        assert _without_thread_ids(client.execute("query-cpus-fast")["return"]) == cpus_before, "none twice"
        wait_until(lambda: all(now > then for now, then in zip(read_u64s(client, 0x200000, 3), saved, strict=True)))
        assert all(now < then + 10**9 for now, then in zip(read_u64s(client, 0x200000, 3), saved, strict=True))
        assert client.execute("device_del", {"id": "vcpu2"}) == {"return": {}}
        events = _events_until(client, "DEVICE_DELETED")
        while events[-1]["data"].get("device") != "vcpu2":
            events += _events_until(client, "DEVICE_DELETED")
        assert len(client.execute("query-cpus-fast")["return"]) == 2


def test_exec_migration_and_a_paused_source_stays_paused_on_the_target(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    state = tmp_path / "via-exec.state"
    source = launch("-S")
    with RawClient(source.socket_path) as client:
        client.negotiate()
        assert client.execute("device_add", {**_slot(1, 1), "id": "late"}) == {"return": {}}
        assert client.execute("migrate", {"uri": f"exec:cat > {state}"}) == {"return": {}}
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
        assert client.execute("query-status")["return"]["status"] == "postmigrate"
        assert client.execute("cont") == {"return": {}}
        assert client.execute("query-status")["return"]["status"] == "running"
    target = launch("-incoming", f"exec:cat {state}")
    with RawClient(target.socket_path) as client:
        client.negotiate()
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
        assert client.execute("query-status")["return"]["status"] == "paused"
        paths = [cpu["qom-path"] for cpu in client.execute("query-cpus-fast")["return"]]
        assert paths == ["/machine/unattached/device[0]", "/machine/peripheral/late"]


def test_migration_errors_use_qemus_texts(launch: Callable[..., Server], tmp_path: Path) -> None:
    server = launch("-S")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        assert client.execute("query-migrate") == {"return": {}}
        for uri in ("tcp:127.0.0.1:4444", "file:", "nonsense"):
            reply = client.execute("migrate", {"uri": uri})
            assert reply["error"]["desc"] == "Parameter 'uri' expects a valid migration protocol", uri
        reply = client.execute("migrate-incoming", {"uri": f"file:{tmp_path}/x"})
        assert reply["error"]["desc"] == "'-incoming' was not specified on the command line"
        reply = client.execute("migrate", {"uri": f"file:{tmp_path}/no/such/dir/x"})
        assert reply == {"return": {}}
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "failed")
        assert "error-desc" in client.execute("query-migrate")["return"]
        assert client.execute("query-status")["return"]["status"] == "paused", "a failed migration leaves it paused"


def test_migrate_cancel_resumes_the_guest(launch: Callable[..., Server], tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    server = launch("-debugcon", f"file:{console}")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        wait_until(lambda: "online" in _console(console))
        client.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
        # The command reads nothing for a second: the stream stalls in the pipe until then.
        assert client.execute("migrate", {"uri": "exec:sleep 1; cat > /dev/null"}) == {"return": {}}
        _events_until(client, "STOP")
        client.events.clear()
        assert client.execute("migrate_cancel") == {"return": {}}
        # MIGRATION_PASS may come first on a slow machine (the stream was still in its passes, as on QEMU).
        migration = [(e["event"], e["data"]) for e in client.events if e["event"] != "MIGRATION_PASS"]
        assert migration == [("MIGRATION", {"status": "cancelling"})]
        events = _events_until(client, "RESUME")
        assert ("MIGRATION", "cancelled") in [(e["event"], e.get("data", {}).get("status")) for e in events]
        wait_until(lambda: client.execute("query-status")["return"]["status"] == "running")
        assert client.execute("query-migrate")["return"]["status"] == "cancelled"


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_stream_is_refused_and_nothing_is_loaded(
    launch: Callable[..., Server], tmp_path: Path, damage: str
) -> None:
    state = tmp_path / "good.state"
    source = launch()
    with RawClient(source.socket_path) as client:
        client.negotiate()
        assert client.execute("device_add", {**_slot(0, 1), "id": "vcpu1"}) == {"return": {}}
        client.execute("migrate", {"uri": f"file:{state}"})
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
    data = bytearray(state.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data = bytearray()
    bad = tmp_path / "bad.state"
    bad.write_bytes(bytes(data))
    with pytest.raises(StateFormatError):
        read_state(str(bad))
    target = launch("-incoming", "defer")
    with RawClient(target.socket_path) as client:
        client.negotiate()
        assert client.execute("migrate-incoming", {"uri": f"file:{bad}"}) == {"return": {}}
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "failed")
        assert client.execute("query-status")["return"]["status"] == "inmigrate"
        assert len(client.execute("query-cpus-fast")["return"]) == 1, "nothing of the bad stream was applied"
        # The same target then takes the intact stream.
        assert client.execute("migrate-incoming", {"uri": f"file:{state}"}) == {"return": {}}
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
        assert [c["qom-path"] for c in client.execute("query-cpus-fast")["return"]][-1] == "/machine/peripheral/vcpu1"


def test_a_stream_of_another_machine_is_refused(launch: Callable[..., Server], tmp_path: Path) -> None:
    state = tmp_path / "small.state"
    source = start_qmpd(["-machine", "pc", "-smp", "2", "-S"], tmp_path, "other")
    try:
        with RawClient(source.socket_path) as client:
            client.negotiate()
            client.execute("migrate", {"uri": f"file:{state}"})
            wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
    finally:
        source.stop()
    target = launch("-incoming", f"file:{state}")
    with RawClient(target.socket_path) as client:
        client.negotiate()
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "failed")
        assert "differs from this one" in client.execute("query-migrate")["return"]["error-desc"]
        assert client.execute("query-status")["return"]["status"] == "inmigrate"


# -- --state-dir ----------------------------------------------------------------------------------------


def _daemon(tmp_path: Path, state_dir: Path, console: Path, name: str) -> Server:
    return start_qmpd([*ARGV, "--state-dir", str(state_dir), "-debugcon", f"file:{console}"], tmp_path, name)


def _save_on_sigterm(tmp_path: Path, state_dir: Path, work: Callable[[RawClient], Any] = lambda client: None) -> Any:
    """A first --state-dir daemon: ``work`` on it, then SIGTERM, which saves the machine; returns what work did."""
    first = _daemon(tmp_path, state_dir, tmp_path / "first.log", "first")
    try:
        with RawClient(first.socket_path) as client:
            client.negotiate()
            result = work(client)
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=30) == 0
    finally:
        first.stop()
    return result


def test_state_dir_survives_a_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    console = tmp_path / "first.log"
    first = _daemon(tmp_path, state_dir, console, "first")
    try:
        with RawClient(first.socket_path) as client:
            client.negotiate()
            _three_cpus_running(client, console)
            first.process.send_signal(signal.SIGTERM)
            events = _events_until(client, "SHUTDOWN")
            assert events[-1]["data"] == {"guest": False, "reason": "host-signal"}
        assert first.process.wait(timeout=30) == 0
    finally:
        first.stop()
    meta, _ = read_state(str(state_dir / STATE_FILE))
    saved = {cpu["index"]: cpu for cpu in meta["cpus"]}
    assert sorted(saved) == [0, 1, 2] and meta["runstate"] == "running"
    second = _daemon(tmp_path, state_dir, tmp_path / "second.log", "second")
    try:
        with RawClient(second.socket_path) as client:
            client.negotiate()
            wait_until(lambda: client.execute("query-status")["return"]["status"] == "running")
            paths = [cpu["qom-path"] for cpu in client.execute("query-cpus-fast")["return"]]
            assert paths == [
                "/machine/unattached/device[0]",
                "/machine/peripheral/vcpu1",
                "/machine/peripheral-anon/device[0]",
            ]
            counters = read_u64s(client, 0x200000, 3)
            assert all(counters), counters
    finally:
        second.stop()


def test_kill_during_a_state_dir_save_leaves_a_loadable_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    path = state_dir / STATE_FILE
    first = _daemon(tmp_path, state_dir, tmp_path / "first.log", "first")
    wait_until(lambda: "online" in _console(tmp_path / "first.log"))
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=30) == 0
    states = {path.read_bytes()}
    for attempt, delay in enumerate((0.0, 0.05, 0.15, 0.3, 0.5, 2.0)):
        console = tmp_path / f"run{attempt}.log"
        server = _daemon(tmp_path, state_dir, console, f"run{attempt}")
        try:
            with RawClient(server.socket_path) as client:
                client.negotiate()
                wait_until(lambda c=client: c.execute("query-status")["return"]["status"] == "running")  # type: ignore[misc]
                before = read_u64s(client, 0x200000, 1)[0]
                wait_until(lambda c=client, b=before: read_u64s(c, 0x200000, 1)[0] > b)  # type: ignore[misc]
            server.process.send_signal(signal.SIGTERM)
            time.sleep(delay)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(timeout=10)
        finally:
            server.stop()
        read_state(str(path))  # whole: the previous state or the new one, never a mixture
        states.add(path.read_bytes())
    assert len(states) > 1, "some saves completed before the kill"
    leftovers = [p.name for p in state_dir.iterdir() if p.name != STATE_FILE]
    assert len(leftovers) <= 1 and all(name.endswith(".tmp") for name in leftovers), leftovers


def test_state_file_is_json_described_and_versioned(tmp_path: Path) -> None:
    server = start_qmpd([*ARGV, "-S"], tmp_path, "v")
    state = tmp_path / "v.state"
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            client.execute("migrate", {"uri": f"file:{state}"})
            wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
    finally:
        server.stop()
    data = state.read_bytes()
    assert data.startswith(b"QMPDSTATE\0") and data.endswith(b"QMPDEND\0")
    assert int.from_bytes(data[10:14], "little") == 1
    meta, ram = read_state(str(state))
    assert json.loads(json.dumps(meta))["machine"]["type"] == "pc-i440fx-7.2"
    assert ram.size == 128 << 20 and len(data) < 4 << 20, "zero chunks are not stored"


def test_state_dir_with_dash_s_restores_paused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    console = tmp_path / "first.log"
    first = _daemon(tmp_path, state_dir, console, "first")
    try:
        with RawClient(first.socket_path) as client:
            client.negotiate()
            wait_until(lambda: read_u64s(client, 0x200000, 1)[0] > 0)  # the guest has counted
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=30) == 0
    finally:
        first.stop()
    second = start_qmpd([*ARGV, "-S", "--state-dir", str(state_dir)], tmp_path, "second")
    try:
        with RawClient(second.socket_path) as client:
            client.negotiate()
            wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
            assert client.execute("query-status")["return"]["status"] == "paused"
            frozen = read_u64s(client, 0x200000, 1)[0]
            assert frozen > 0
            assert client.execute("cont") == {"return": {}}
            wait_until(lambda: read_u64s(client, 0x200000, 1)[0] > frozen)
    finally:
        second.stop()


# -- safe targets, bounded streams, bounded SIGTERM -------------------------------------------------------


def test_a_nul_byte_or_a_fifo_target_is_refused_and_the_machine_runs_on(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    server = launch("-S")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        before = client.execute("query-status")["return"]["status"]
        for uri in (f"file:{tmp_path}/a\u0000b", f"file:{fifo}"):
            reply = client.execute("migrate", {"uri": uri})
            assert reply["error"]["class"] == "GenericError", (uri, reply)
            assert client.execute("query-status")["return"]["status"] == before, uri
        assert "not a regular file" in client.execute("migrate", {"uri": f"file:{fifo}"})["error"]["desc"]
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO is not replaced by a file"
        assert client.execute("cont") == {"return": {}}
        assert client.execute("query-status")["return"]["status"] == "running"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("uri", ["file:/dev/zero", "exec:cat /dev/zero"])
def test_an_endless_incoming_stream_fails_at_once(launch: Callable[..., Server], uri: str) -> None:
    server = launch("-incoming", "defer")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        assert client.execute("migrate-incoming", {"uri": uri}) == {"return": {}}
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "failed", timeout=5)
        desc = client.execute("query-migrate")["return"]["error-desc"]
        assert "not a regular file" in desc or "not a qmpd state file" in desc, desc
        assert _rss_kib(server.process.pid) < 512 << 10, "the stream did not grow memory"
        assert client.execute("query-status")["return"]["status"] == "inmigrate"


def test_sigterm_during_a_migration_to_a_command_that_never_reads_exits_within_seconds(
    launch: Callable[..., Server], tmp_path: Path
) -> None:
    console = tmp_path / "console.log"
    server = launch("-debugcon", f"file:{console}")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        wait_until(lambda: "online" in _console(console))
        client.execute("device_add", {**_slot(1, 1), "id": "busy"})  # more RAM pages than a pipe holds
        assert client.execute("migrate", {"uri": "exec:sleep 600"}) == {"return": {}}
        wait_until(lambda: client.execute("query-status")["return"]["status"] == "finish-migrate")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 10


def test_state_dir_restores_cpus_plugged_with_cpu_add_and_cpu_set(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()

    def plug(client: RawClient) -> list[str]:
        assert client.execute("cpu-add", {"id": 2}) == {"return": {}}
        assert hmp(client, "cpu_set 1 online") == ""
        return [cpu["qom-path"] for cpu in client.execute("query-cpus-fast")["return"]]

    paths = _save_on_sigterm(tmp_path, state_dir, plug)
    second = _daemon(tmp_path, state_dir, tmp_path / "second.log", "second")
    try:
        with RawClient(second.socket_path) as client:
            client.negotiate()
            wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
            assert [cpu["qom-path"] for cpu in client.execute("query-cpus-fast")["return"]] == paths
            assert paths[1:] == ["/machine/unattached/device[27]", "/machine/unattached/device[28]"]
            assert client.execute("query-status")["return"]["status"] == "running"
    finally:
        second.stop()


def test_state_dir_sets_a_state_that_cannot_be_restored_aside_and_starts_fresh(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    _save_on_sigterm(tmp_path, state_dir)
    path = state_dir / STATE_FILE
    meta, image = read_state(str(path))
    meta["cpus"][0]["qom_path"] = "/machine/unattached/device[7]"  # the boot CPU elsewhere: refused
    with path.open("wb") as out:
        write_state(out, meta, memoryview(image.to_bytes()))
    second = _daemon(tmp_path, state_dir, tmp_path / "second.log", "second")
    try:
        with RawClient(second.socket_path) as client:
            client.negotiate()
            wait_until(lambda: client.execute("query-status")["return"]["status"] == "running")
            info = client.execute("query-migrate")["return"]
            assert info["status"] == "failed" and "boot CPU 0 is missing" in info["error-desc"], info
            assert [cpu["qom-path"] for cpu in client.execute("query-cpus-fast")["return"]] == [
                "/machine/unattached/device[0]"
            ]
        assert not path.exists() and len(list(state_dir.glob(f"{STATE_FILE}.rejected-*"))) == 1
        wait_until(lambda: "qmpd.state_rejected" in second.stderr())
        assert "boot CPU 0 is missing" in second.stderr()
    finally:
        second.stop()


def test_the_power_button_works_after_a_restore(launch: Callable[..., Server], tmp_path: Path) -> None:
    """PM1_EN (the firmware enabled the button at boot) travels with the state; otherwise a restored
    guest would never see the button again and virsh shutdown would hang."""
    state, console = tmp_path / "pm.state", tmp_path / "pm.debugcon"
    source = launch("-debugcon", f"file:{console}", "-no-shutdown")
    with RawClient(source.socket_path) as client:
        client.negotiate()
        wait_until(lambda: "CPU 0 (APIC ID 0) online" in _console(console))
        assert client.execute("migrate", {"uri": f"file:{state}"}) == {"return": {}}
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
    source.stop()
    assert read_state(str(state))[0]["pm"] == {"status": 0, "enable": 0x100, "control": 0}
    target = launch("-incoming", f"file:{state}", "-debugcon", f"file:{console}", "-no-shutdown")
    with RawClient(target.socket_path) as client:
        client.negotiate()
        wait_until(lambda: client.execute("query-migrate")["return"].get("status") == "completed")
        assert client.execute("system_powerdown") == {"return": {}}
        events = _events_until(client, "SHUTDOWN")
        assert events[-1]["data"] == {"guest": True, "reason": "guest-shutdown"}
