"""Guests that really run: the bundled firmware and small test guests (tests/guests/*.S), over real sockets.

The firmware keeps, per CPU, COUNTERS (an ``inc [mem]`` read-modify-write)
and SHADOW (a separate load, inc, store) at 0x200000 and 0x202000.  A
re-executed RMW after a stop would make COUNTERS run ahead of SHADOW; a
lost instruction would make them differ the other way.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, build_guest, hmp, read_u64s, start_qmpd, wait_until

COUNTERS = 0x200000
SHADOW = 0x202000
CPUID_RESULTS = 0x300000
CPUID_DONE = 0x2FF000
FLAG = 0x2FF000


def _debugcon(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _counters(client: RawClient, cpus: int) -> tuple[list[int], list[int]]:
    return read_u64s(client, COUNTERS, cpus), read_u64s(client, SHADOW, cpus)


def _register(text: str, cpu: int, name: str) -> int:
    block = text.split(f"CPU#{cpu}\n", 1)[1]
    match = re.search(rf"{name}\s*=([0-9a-f]+)", block)
    assert match, block
    return int(match.group(1), 16)


@pytest.fixture
def two_cpus(tmp_path: Path) -> Any:
    debugcon = tmp_path / "debugcon.txt"
    server = start_qmpd(["-machine", "pc", "-smp", "2", "-debugcon", f"file:{debugcon}"], tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            yield server, client, debugcon
    finally:
        server.stop()


def test_firmware_banners_on_debugcon(two_cpus: tuple[Server, RawClient, Path]) -> None:
    _, _, debugcon = two_cpus
    wait_until(lambda: "CPU 1 (APIC ID 1) online" in _debugcon(debugcon))
    lines = _debugcon(debugcon).splitlines()
    assert lines[:3] == [
        "qmpd firmware: booting",
        "qmpd firmware: CPU 0 (APIC ID 0) online",
        "qmpd firmware: CPU 1 (APIC ID 1) online",
    ]


def test_two_vcpus_count_in_parallel_while_qmp_answers(two_cpus: tuple[Server, RawClient, Path]) -> None:
    server, client, debugcon = two_cpus
    wait_until(lambda: "CPU 1 (APIC ID 1) online" in _debugcon(debugcon))
    before, _ = _counters(client, 2)
    for _ in range(50):
        assert client.execute("query-status")["return"]["status"] == "running"
        time.sleep(0.005)
    after, _ = _counters(client, 2)
    assert after[0] > before[0] and after[1] > before[1], (before, after)
    # thread-id is the kernel id of the thread running that vCPU, named as QEMU names it.
    for entry in client.execute("query-cpus-fast")["return"]:
        comm = Path(f"/proc/{server.process.pid}/task/{entry['thread-id']}/comm").read_text()
        assert comm == f"CPU {entry['cpu-index']}/TCG\n"
    info = hmp(client, "info cpus")
    assert re.fullmatch(r"\* CPU #0: thread_id=\d+\r\n  CPU #1: thread_id=\d+\r\n", info)


@pytest.mark.parametrize("thread", ["multi", "single"])
def test_stop_cont_500_times_loses_and_doubles_nothing(tmp_path: Path, thread: str) -> None:
    debugcon = tmp_path / "debugcon.txt"
    argv = ["-machine", "pc", "-smp", "2", "-accel", f"tcg,thread={thread}", "-debugcon", f"file:{debugcon}"]
    server = start_qmpd(argv, tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            wait_until(lambda: "CPU 1 (APIC ID 1) online" in _debugcon(debugcon))
            first, _ = _counters(client, 2)
            for cycle in range(500):
                assert client.execute("stop") == {"return": {}}
                if cycle % 50 == 0:
                    counters, shadow = _counters(client, 2)
                    assert counters == shadow, (cycle, counters, shadow)
                    time.sleep(0.01)
                    assert _counters(client, 2) == (counters, shadow), "a vCPU ran while the machine was paused"
                assert client.execute("cont") == {"return": {}}
            assert client.execute("stop") == {"return": {}}
            counters, shadow = _counters(client, 2)
            registers = hmp(client, "info registers -a").replace("\r\n", "\n")
            assert client.execute("query-status")["return"]["status"] == "paused"
        events = [event["event"] for event in client.events]
        assert events.count("STOP") == 501 and events.count("RESUME") == 500
        assert counters == shadow
        assert all(now > then for now, then in zip(counters, first, strict=True)), (first, counters)
        # The firmware's register counter (RBP, one per loop iteration) agrees with memory.
        for cpu in range(2):
            assert counters[cpu] - _register(registers, cpu, "RBP") in (0, 1)
    finally:
        server.stop()


def test_system_reset_restarts_the_firmware_and_keeps_ram(two_cpus: tuple[Server, RawClient, Path]) -> None:
    _, client, debugcon = two_cpus
    wait_until(lambda: "CPU 1 (APIC ID 1) online" in _debugcon(debugcon))
    wait_until(lambda: min(_counters(client, 2)[0]) > 5_000_000)
    before, _ = _counters(client, 2)
    assert client.execute("system_reset") == {"return": {}}
    assert [event["event"] for event in client.events][-1:] == ["RESET"]
    wait_until(lambda: _debugcon(debugcon).count("CPU 1 (APIC ID 1) online") == 2)
    # Counting goes on from the values RAM kept (a wiped RAM would restart from 0, far below).
    assert all(a >= b for a, b in zip(_counters(client, 2)[0], before, strict=True))
    assert client.execute("stop") == {"return": {}}
    after, shadow = _counters(client, 2)
    assert after == shadow
    assert client.execute("cont") == {"return": {}}
    assert client.execute("query-status")["return"]["status"] == "running"


LEAVES = [
    (0, 0), (1, 0), (6, 0), (7, 0), (7, 1), (0xB, 0), (0xB, 1), (0xD, 1), (0x14, 0), (0x19, 0),
    (0x80000000, 0), (0x80000001, 0), (0x80000002, 0), (0x80000003, 0), (0x80000004, 0),
    (0x80000007, 0), (0x80000008, 0), (0x8000000A, 0), (0xC0000001, 0),
]  # fmt: skip
REGISTERS = {"EAX": 0, "EBX": 1, "ECX": 2, "EDX": 3}


def test_cpuid_seen_by_the_guest_matches_qom(tmp_path: Path) -> None:
    include = "".join(f"        .long {leaf:#x}, {subleaf:#x}\n" for leaf, subleaf in LEAVES)
    image = build_guest("cpuid", tmp_path, include=include)
    model_id = "qmpd guest CPUID test"
    cpu = f"Haswell,-sse4.2,stepping=3,model-id={model_id}"
    argv = ["-machine", "pc", "-smp", "2", "-cpu", cpu, "-bios", str(image)]
    server = start_qmpd(argv, tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            wait_until(lambda: read_u64s(client, CPUID_DONE, 2) == [1, 1])
            cpus = client.execute("query-cpus-fast")["return"]
            for cpu in cpus:
                path = cpu["qom-path"]

                def prop(name: str, path: str = path) -> Any:
                    reply = client.execute("qom-get", {"path": path, "property": name})
                    return reply["return"]

                apic_id = prop("apic-id")
                words = read_u64s(client, CPUID_RESULTS + apic_id * 4096, 2 * len(LEAVES))
                results = {}
                for i, key in enumerate(LEAVES):
                    low, high = words[2 * i], words[2 * i + 1]
                    results[key] = (low & 0xFFFFFFFF, low >> 32, high & 0xFFFFFFFF, high >> 32)
                _check_cpuid(results, prop, apic_id, model_id)
    finally:
        server.stop()


def _check_cpuid(results: dict[tuple[int, int], tuple[int, ...]], prop: Any, apic_id: int, model_id: str) -> None:
    eax, ebx, ecx, edx = results[(0, 0)]
    assert eax == prop("level")
    assert (ebx.to_bytes(4, "little") + edx.to_bytes(4, "little") + ecx.to_bytes(4, "little")).decode() == prop(
        "vendor"
    )
    signature, ebx1, ecx1, _ = results[(1, 0)]
    family = (signature >> 8 & 0xF) + (signature >> 20 & 0xFF)
    model = (signature >> 4 & 0xF) | (signature >> 16 & 0xF) << 4
    assert (family, model, signature & 0xF) == (prop("family"), prop("model"), prop("stepping"))
    assert signature & 0xF == 3
    assert ebx1 >> 24 == apic_id
    assert results[(0xB, 0)][3] == apic_id
    assert results[(0x80000000, 0)] == (prop("xlevel"), ebx, ecx, edx)
    brand = b"".join(r.to_bytes(4, "little") for leaf in range(2, 5) for r in results[(0x80000000 + leaf, 0)])
    assert brand.rstrip(b"\0").decode() == model_id == prop("model-id")
    assert not ecx1 & 1 << 20 and prop("sse4.2") is False
    checked = set()
    for kind, expect_set in (("feature-words", True), ("filtered-features", False)):
        for word in prop(kind):
            key = (word["cpuid-input-eax"], word.get("cpuid-input-ecx", 0))
            if key not in results:
                continue
            value = results[key][REGISTERS[word["cpuid-register"]]]
            bits = word["features"]
            if expect_set:
                assert value & bits == bits, (kind, word, hex(value))
                checked.add(key)
            else:
                assert value & bits == 0, (kind, word, hex(value))
    assert {(1, 0), (7, 0), (0x80000001, 0)} <= checked


@contextlib.contextmanager
def fault_guest(tmp_path: Path, kind: int, *argv: str) -> Iterator[tuple[RawClient, Path]]:
    """tests/guests/fault.S built with KIND=kind on a pc machine: a negotiated client and the debugcon file."""
    image = build_guest("fault", tmp_path, defsym={"KIND": kind})
    debugcon = tmp_path / "debugcon.txt"
    server = start_qmpd(["-machine", "pc", "-bios", str(image), "-debugcon", f"file:{debugcon}", *argv], tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            yield client, debugcon
    finally:
        server.stop()


@pytest.mark.parametrize("kind", [0, 2, 3], ids=["invalid-opcode", "int3", "divide-error"])
def test_an_exception_without_an_idt_is_a_triple_fault_that_resets_as_in_qemu(tmp_path: Path, kind: int) -> None:
    with fault_guest(tmp_path, kind, "-S") as (client, debugcon):
        assert client.execute("cont") == {"return": {}}
        wait_until(lambda: "recovered" in _debugcon(debugcon))
        assert _status(client) == "running"  # and the events sent before its reply are in
        assert [(e["event"], e.get("data")) for e in client.events] == [
            ("RESUME", None),
            ("RESET", {"guest": True, "reason": "guest-reset"}),
        ]
        assert read_u64s(client, FLAG, 1) == [1]
    assert _debugcon(debugcon) == "F\nrecovered\n"


def test_unassigned_memory_reads_zero_without_a_fault(tmp_path: Path) -> None:
    with fault_guest(tmp_path, 1) as (client, debugcon):
        wait_until(lambda: "HLT=1" in hmp(client, "info registers"))
        assert "RAX=0000000000000000" in hmp(client, "info registers")
        assert _status(client) == "running"
        assert client.events == [] and client.drain(0.2) == []
    assert _debugcon(debugcon) == "F\n"


def test_an_emulator_error_panics_and_system_reset_recovers(tmp_path: Path) -> None:
    """A guest sweeping unassigned memory past qmpd's bound: its CPU cannot go on, a guest panic
    (paused under -no-shutdown, as libvirt runs it; the default powers off, see test_guest_fault_diff)."""
    with fault_guest(tmp_path, 4, "-S", "-no-shutdown") as (client, debugcon):
        assert client.execute("cont") == {"return": {}}
        wait_until(lambda: _status(client) == "guest-panicked")
        names = [event["event"] for event in client.events]
        assert names == ["RESUME", "GUEST_PANICKED", "STOP"], names
        assert client.events[1]["data"] == {"action": "pause"}
        assert "return" in client.execute("query-version")
        assert client.execute("system_reset") == {"return": {}}
        assert _status(client) == "prelaunch"
        assert client.execute("cont") == {"return": {}}
        wait_until(lambda: "recovered" in _debugcon(debugcon))
        assert _status(client) == "running"
    assert _debugcon(debugcon) == "F\nrecovered\n"


def _status(client: RawClient) -> str:
    status: str = client.execute("query-status")["return"]["status"]
    return status


def test_isa_debug_exit_ends_the_process_with_qemus_status(tmp_path: Path) -> None:
    image = build_guest("exit", tmp_path)
    argv = ["-machine", "pc", "-bios", str(image), "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    server = start_qmpd(argv, tmp_path)
    try:
        assert server.process.wait(timeout=20) == (0x2A << 1) | 1
    finally:
        server.stop()


def test_hlt_parks_a_cpu_and_ipis_wake_it(tmp_path: Path) -> None:
    image = build_guest("wake", tmp_path)
    debugcon = tmp_path / "debugcon.txt"
    server = start_qmpd(["-machine", "pc", "-smp", "2", "-bios", str(image), "-debugcon", f"file:{debugcon}"], tmp_path)
    try:
        wait_until(lambda: "woken 200 times" in _debugcon(debugcon))
        with RawClient(server.socket_path) as client:
            client.negotiate()
            assert read_u64s(client, 0x2FF000, 1) == [200]
            registers = hmp(client, "info registers -a").replace("\r\n", "\n")
            assert "HLT=1" in registers.split("CPU#1\n")[1]
    finally:
        server.stop()


def test_memsave_and_pmemsave_write_only_inside_the_dump_directory(tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    debugcon = tmp_path / "debugcon.txt"
    argv = ["-machine", "pc", "-smp", "2", "-debugcon", f"file:{debugcon}", "--dump-dir", str(dumps)]
    server = start_qmpd(argv, tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            wait_until(lambda: "CPU 1 (APIC ID 1) online" in _debugcon(debugcon))
            assert client.execute("stop") == {"return": {}}
            counters = read_u64s(client, COUNTERS, 2)
            ok = {"return": {}}
            assert client.execute("pmemsave", {"val": COUNTERS, "size": 16, "filename": "p.bin"}) == ok
            assert client.execute("memsave", {"val": COUNTERS, "size": 16, "filename": "v.bin", "cpu-index": 1}) == ok
            assert hmp(client, f"pmemsave {COUNTERS:#x} 16 h.bin") == ""
            expected = b"".join(value.to_bytes(8, "little") for value in counters)
            for name in ("p.bin", "v.bin", "h.bin"):
                assert (dumps / name).read_bytes() == expected
            # Physical addresses beyond RAM read as zeros (QEMU's unassigned memory); virtual ones must be mapped.
            assert client.execute("pmemsave", {"val": 0x7FFFFF8, "size": 16, "filename": "edge.bin"}) == ok
            top = read_u64s(client, 0x7FFFFF8, 1)[0].to_bytes(8, "little")
            assert (dumps / "edge.bin").read_bytes() == top + bytes(8)
            reply = client.execute("memsave", {"val": 0x7FFFFF8, "size": 16, "filename": "bad.bin"})
            assert reply["error"]["desc"] == "Invalid addr 0x0000000007fffff8/size 16 specified"
            for outside in (str(tmp_path / "escape.bin"), "../escape.bin", "/etc/escape.bin"):
                reply = client.execute("pmemsave", {"val": 0, "size": 16, "filename": outside})
                assert reply["error"]["class"] == "GenericError"
                assert "only inside" in reply["error"]["desc"], reply
            reply = client.execute("pmemsave", {"val": 0, "size": -1, "filename": "neg.bin"})
            assert reply["error"]["desc"] == "Parameter 'size' expects a non-negative size"
            assert hmp(client, "info registers 1").startswith("\r\nCPU#1\r\nRAX=")
        assert sorted(p.name for p in dumps.iterdir()) == ["edge.bin", "h.bin", "p.bin", "v.bin"]
        assert not (tmp_path / "escape.bin").exists()
    finally:
        server.stop()


@pytest.mark.parametrize("thread", ["single", "multi"])
def test_locked_increments_are_exact_with_thread_single(tmp_path: Path, thread: str) -> None:
    image = build_guest("atomic", tmp_path)
    argv = ["-machine", "pc", "-smp", "2", "-accel", f"tcg,thread={thread}", "-bios", str(image)]
    server = start_qmpd(argv, tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            wait_until(lambda: read_u64s(client, 0x2FF110, 2) == [1, 1], timeout=60)
            (total,) = read_u64s(client, 0x2FF100, 1)
        if thread == "single":
            assert total == 2_000_000
        else:
            # Unicorn's `lock` is not atomic across instances: increments may be lost (any number), none added.
            assert 0 < total <= 2_000_000
    finally:
        server.stop()


@pytest.mark.parametrize(("chardev", "kept"), [(None, False), ("append=on", True)])
def test_the_console_file_is_truncated_unless_append_is_on(tmp_path: Path, chardev: str | None, kept: bool) -> None:
    """As QEMU's file chardev: what the file held is gone at start, unless ``-chardev file,...,append=on``."""
    console = tmp_path / "console.txt"
    console.write_text("an earlier run\n")
    if chardev is None:
        argv = ["-machine", "pc", "-debugcon", f"file:{console}"]
    else:
        file = f"file,id=d,path={console},{chardev}"
        argv = ["-machine", "pc", "-chardev", file, "-device", "isa-debugcon,chardev=d"]
    server = start_qmpd(argv, tmp_path)
    try:
        wait_until(lambda: "qmpd firmware" in console.read_text())
        assert console.read_text().startswith("an earlier run\n") is kept
    finally:
        server.stop()
