"""dump-guest-memory on a running qmpd (bundled firmware, 2 vCPUs), read back with readelf and gdb.

What libvirt's ``virsh dump --memory-only`` relies on: the reply, DUMP_COMPLETED,
the guest paused during the dump and running again after it, and a core file
debuggers load, whose memory is the guest's.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, read_u64s, start_qmpd, wait_until

COUNTERS = 0x200000
RAM = 128 << 20
OK: dict[str, Any] = {"return": {}}
ELF_HEADER = 64 + 2 * 64  # header and two section headers, then the program headers


def _debugcon(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _start(tmp_path: Path) -> tuple[Server, Path]:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    debugcon = tmp_path / "debugcon.txt"
    argv = ["-machine", "pc", "-m", "128", "-smp", "2", "-debugcon", f"file:{debugcon}", "--dump-dir", str(dumps)]
    server = start_qmpd(argv, tmp_path)
    wait_until(lambda: "CPU 1 (APIC ID 1) online" in _debugcon(debugcon), timeout=30)
    return server, dumps


def _until_reply(client: RawClient, name: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message up to and including the reply, events in their order."""
    client.send(json.dumps({"execute": name, "arguments": arguments}).encode())
    messages = [client.message(timeout=30)]
    while "event" in messages[-1]:
        messages.append(client.message(timeout=30))
    return messages


def _event(client: RawClient, name: str) -> dict[str, Any]:
    while True:
        message = client.message(timeout=30)
        if message.get("event") == name:
            return message


def _readelf(path: Path) -> str:
    result = subprocess.run(["readelf", "-W", "-a", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout


def _loads(text: str) -> list[tuple[int, int, int]]:
    """(offset, physical address, size) of every PT_LOAD that readelf lists."""
    rows = re.findall(r"^\s+LOAD\s+(0x[0-9a-f]+) 0x[0-9a-f]+ (0x[0-9a-f]+) (0x[0-9a-f]+)", text, re.M)
    return [(int(offset, 16), int(paddr, 16), int(size, 16)) for offset, paddr, size in rows]


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils is not installed")
def test_a_running_guest_is_dumped_paused_and_resumed(tmp_path: Path) -> None:
    server, dumps = _start(tmp_path)
    try:
        with RawClient(server.socket_path, timeout=30) as client:
            client.negotiate()
            # Both CPUs counting (the banner of CPU 1 comes before the boot CPU's first count on a loaded machine).
            wait_until(lambda: all(read_u64s(client, COUNTERS, 2)), timeout=30)
            before = read_u64s(client, COUNTERS, 2)
            messages = _until_reply(client, "dump-guest-memory", {"paging": False, "protocol": "file:core.elf"})
            names = [m.get("event", "reply") for m in messages]
            assert names == ["STOP", "DUMP_COMPLETED", "RESUME", "reply"], messages
            assert messages[-1] == OK
            done = {"status": "completed", "completed": RAM, "total": RAM}
            assert messages[1]["data"] == {"result": done}
            assert client.execute("query-dump") == {"return": done}
            assert client.execute("query-status")["return"]["status"] == "running"
            after = read_u64s(client, COUNTERS, 2)
        core = dumps / "core.elf"
        assert core.stat().st_mode & 0o777 == 0o400  # as QEMU creates it: S_IRUSR
        text = _readelf(core)
        assert text.count("NT_PRSTATUS") == 2 and text.count("QEMU ") == 2
        assert len(re.findall(r"^\s+NOTE\s", text, re.M)) == 1
        assert _loads(text) == [(_loads(text)[0][0], 0, RAM)]
        offset = _loads(text)[0][0]
        with core.open("rb") as file:
            file.seek(offset + COUNTERS)
            dumped = list(struct.unpack("<2Q", file.read(16)))
        # The vCPUs count while they run: the dump's values lie between what xp showed before and after.
        for low, value, high in zip(before, dumped, after, strict=True):
            assert low <= value <= high, (before, dumped, after)
        assert dumped[0] > 0
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_gdb_reads_each_vcpu_s_registers(tmp_path: Path) -> None:
    server, dumps = _start(tmp_path)
    try:
        with RawClient(server.socket_path, timeout=30) as client:
            client.negotiate()
            assert client.execute("stop") == OK
            rips = []
            for index in (0, 1):
                registers = client.execute("human-monitor-command", {"command-line": f"info registers {index}"})
                rip = re.search(r"RIP=([0-9a-f]+)", registers["return"])
                assert rip is not None, registers
                rips.append(int(rip.group(1), 16))
            reply = client.execute("dump-guest-memory", {"paging": False, "protocol": "file:core.elf"})
            assert reply == OK
            assert client.execute("query-status")["return"]["status"] == "paused"  # it was paused: not resumed
        gdb = ["gdb", "-nx", "-batch", "-ex", "info threads", "-ex", "thread apply all info registers rip"]
        result = subprocess.run([*gdb, "-c", str(dumps / "core.elf")], capture_output=True, text=True, timeout=60)
        found = [int(value, 16) for value in re.findall(r"^rip\s+(0x[0-9a-f]+)", result.stdout, re.M)]
        assert sorted(found) == sorted(rips), result.stdout + result.stderr
    finally:
        server.stop()


def test_a_detached_dump_replies_first_then_completes(tmp_path: Path) -> None:
    server, dumps = _start(tmp_path)
    try:
        with RawClient(server.socket_path, timeout=30) as client:
            client.negotiate()
            arguments = {"paging": False, "protocol": "file:detached.elf", "detach": True}
            messages = _until_reply(client, "dump-guest-memory", arguments)
            assert [m.get("event", "reply") for m in messages] == ["STOP", "reply"] and messages[1] == OK
            progress = client.execute("query-dump")["return"]
            assert progress["status"] in ("active", "completed") and progress["total"] == RAM
            completed = _event(client, "DUMP_COMPLETED")
            assert completed["data"] == {"result": {"status": "completed", "completed": RAM, "total": RAM}}
            assert _event(client, "RESUME")["event"] == "RESUME"
            assert client.execute("query-status")["return"]["status"] == "running"
            reply = client.execute("dump-guest-memory", {"paging": False, "protocol": "fd:dump"})
            assert reply["error"]["desc"] == "File descriptor named 'dump' has not been found"
            reply = client.execute("dump-guest-memory", {"paging": False, "protocol": "file:../outside.elf"})
            assert "only inside" in reply["error"]["desc"]
        assert (dumps / "detached.elf").stat().st_size > RAM
        assert not (tmp_path / "outside.elf").exists()
    finally:
        server.stop()


def test_a_dump_is_refused_while_a_migration_runs(tmp_path: Path) -> None:
    """QEMU 7.2's text; the target file is created before the refusal, as QEMU creates it."""
    server = start_qmpd(["-machine", "pc", "-m", "64", "-S"], tmp_path)
    try:
        with RawClient(server.socket_path, timeout=15) as client:
            client.negotiate()
            assert client.execute("migrate", {"uri": "exec:sleep 30"}) == {"return": {}}
            reply = client.execute("dump-guest-memory", {"paging": False, "protocol": "file:core"})
            assert reply == {
                "error": {
                    "class": "GenericError",
                    "desc": "disallowing migration blocker (migration/snapshot in progress) for: "
                    "Live migration disabled: dump-guest-memory in progress",
                }
            }
            assert (tmp_path / "core").stat().st_size == 0
            assert client.execute("query-dump")["return"]["status"] == "none"
            assert client.execute("migrate_cancel") == {"return": {}}
    finally:
        server.stop()
