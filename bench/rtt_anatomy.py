#!/usr/bin/env python3
"""Where a sequential query-status round trip goes, seen from the kernel (needs perf and root).

qmp_bench.py gives the p50/p99 of round trips; this says why the p99 of a run moves around on a
small VM.  For qmpd and QEMU in turn (same argv as qmp_bench.py), it times N sequential round trips
while `perf record` traces, for the client and the server process, read/write syscalls and the
local timer interrupt, on CLOCK_MONOTONIC (the clock of time.perf_counter).  Each round trip is cut
in three:
  to server    the client's send -> a server thread's read returns the request (the wake-up of a
               halted vCPU: an IPI, then the host runs that vCPU again)
  server       -> the server's write of the reply returns (parse, dispatch, encode, and the write,
               which wakes the client; for QEMU also the hand-offs between its monitor I/O thread
               and its main loop)
  to client    -> the client has the reply (the client's wake-up, and its read)
A round trip is "ticked" when the scheduler tick interrupted a server thread during it (the server
is hit in proportion to the time it is busy: busy us / 4000 us at HZ=250).  The table says whether
the tail is the tick (p99 of the others well below the whole p99) or grows in every phase (wake-up
noise of the VM).  Tracing costs time of its own, per syscall, so absolute numbers here are higher
than qmp_bench.py's, QEMU's much more (its main loop makes many more syscalls): use this for the
phases, and qmp_bench.py for the ratio.

Usage: bench/rtt_anatomy.py [--requests N] [--reps N]
"""

from __future__ import annotations

import argparse
import bisect
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import qmp_bench

TICK = "irq_vectors:local_timer_entry"
READS = {"syscalls:sys_exit_read", "syscalls:sys_exit_readv", "syscalls:sys_exit_recvmsg"}
WRITES = {"syscalls:sys_exit_write", "syscalls:sys_exit_writev", "syscalls:sys_exit_sendmsg"}
EVENTS = [*sorted(READS | WRITES), TICK]
#: `perf script -F tid,cpu,time,event,trace` line: the running thread, the CPU, the time, the event.
LINE = re.compile(r"\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)")


@dataclass(frozen=True)
class Event:
    time: float
    tid: int
    cpu: int
    name: str
    detail: str


@dataclass
class Breakdown:
    """One run's round trips (seconds) with their phases, in request order."""

    totals: list[float] = field(default_factory=list)
    to_server: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    to_client: list[float] = field(default_factory=list)
    ticked: list[bool] = field(default_factory=list)
    client_ticked: list[bool] = field(default_factory=list)


def read_events(data: Path) -> list[Event]:
    out = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "tid,cpu,time,event,trace"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    events = []
    for line in out.splitlines():
        match = LINE.match(line)
        if match:
            tid, cpu, stamp, name, detail = match.groups()
            events.append(Event(float(stamp), int(tid), int(cpu), name, detail))
    events.sort(key=lambda event: event.time)
    return events


def split(
    rounds: list[tuple[float, float]], events: list[Event], server: set[int], client: int, reply: int
) -> Breakdown:
    """Cut each round trip where a server thread's read returns data and where its write of the reply returns.

    The reply's write is the one that returns the reply's length in bytes (QEMU's threads also write
    to event notifiers).
    The server is every thread of its process: QEMU reads and writes the socket in its monitor I/O
    thread and runs the command in its main loop.
    """
    times = [event.time for event in events]
    result = Breakdown()
    for sent, answered in rounds:
        window = events[bisect.bisect_left(times, sent) : bisect.bisect_right(times, answered)]
        read = next((e.time for e in window if e.tid in server and e.name in READS and returned(e) > 0), None)
        if read is None:
            continue
        wrote = next(
            (e.time for e in window if e.tid in server and e.name in WRITES and returned(e) == reply and e.time > read),
            None,
        )
        if wrote is None:
            continue
        result.totals.append(answered - sent)
        result.to_server.append(read - sent)
        result.server.append(wrote - read)
        result.to_client.append(answered - wrote)
        ticks = {event.tid for event in window if event.name == TICK}
        result.ticked.append(bool(ticks & server))
        result.client_ticked.append(client in ticks)
    return result


def returned(event: Event) -> int:
    """A syscall exit's return value (perf prints it in hex, errors as 0xffff...): bytes, or -1."""
    value = event.detail.strip()
    return int(value, 16) if value.startswith("0x") and not value.startswith("0xffff") else -1


def traced_run(kind: str, requests: int, workdir: Path) -> Breakdown:
    proc = qmp_bench.Proc(kind)
    data = workdir / f"{kind}.data"
    try:
        conn = qmp_bench.Conn(proc.connect())
        conn.negotiate()
        for _ in range(200):
            conn.sock.sendall(qmp_bench.QUERY)
            conn.line()
        threads = {int(tid) for tid in os.listdir(f"/proc/{proc.proc.pid}/task")}
        perf = subprocess.Popen(
            ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-p", f"{proc.proc.pid},{os.getpid()}", "-o", str(data)]
            + [arg for name in EVENTS for arg in ("-e", name)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # perf needs a moment before it records
        rounds = []
        reply = 0
        for _ in range(requests):
            sent = time.perf_counter()
            conn.sock.sendall(qmp_bench.QUERY)
            reply = len(conn.line()) + 1
            rounds.append((sent, time.perf_counter()))
        time.sleep(0.1)
        perf.terminate()
        perf.wait()
        return split(rounds, read_events(data), threads, os.getpid(), reply)
    finally:
        proc.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def row(kind: str, runs: list[Breakdown]) -> str:
    def med(pick: str, fraction: float = 0.5) -> str:
        values = [percentile(getattr(run, pick), fraction) for run in runs]
        return f"{statistics.median(values) * 1e6:.0f}"

    totals = [t for run in runs for t in run.totals]
    if not totals:
        return f"| {kind} | 0 (perf recorded nothing usable) |"
    ticked = [t for run in runs for t, hit in zip(run.totals, run.ticked, strict=True) if hit]
    clean = [t for run in runs for t, hit in zip(run.totals, run.ticked, strict=True) if not hit]
    share = 100 * len(ticked) / len(totals)
    client_share = 100 * sum(sum(run.client_ticked) for run in runs) / len(totals)
    p99s = " ".join(f"{percentile(run.totals, 0.99) * 1e6:.0f}" for run in runs)
    # The slowest 1 % of each run: which phase grew?
    slow = [
        (run.to_server[i], run.server[i], run.to_client[i])
        for run in runs
        for i in sorted(range(len(run.totals)), key=run.totals.__getitem__)[-max(1, len(run.totals) // 100) :]
    ]
    slow_phases = " / ".join(f"{statistics.median(phase) * 1e6:.0f}" for phase in zip(*slow, strict=True))
    return (
        f"| {kind} | {len(totals)} | {med('totals')} | {med('totals', 0.99)} ({p99s}) "
        f"| {med('to_server')} / {med('server')} / {med('to_client')} | {slow_phases} "
        f"| {share:.2f} % | {client_share:.2f} % | {percentile(ticked, 0.5) * 1e6:.0f} "
        f"| {percentile(clean, 0.99) * 1e6:.0f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("perf") is None or os.geteuid() != 0:
        print("rtt_anatomy.py needs perf (linux-perf) and root, to trace syscalls and the tick", file=sys.stderr)
        return 2
    kinds = ["qmpd", "qemu"] if qmp_bench.QEMU else ["qmpd"]
    runs: dict[str, list[Breakdown]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="rtt-anatomy-") as tmp:
        for rep in range(args.reps):
            for kind in kinds if rep % 2 == 0 else list(reversed(kinds)):
                runs[kind].append(traced_run(kind, args.requests, Path(tmp)))
    print(
        "| server | round trips | p50 us | p99 us (each run) | to server / server / to client, p50 us "
        "| the same, slowest 1 % | ticked: server | ticked: client | ticked p50 us | others p99 us |"
    )
    print("|---|---:|---:|---|---|---|---:|---:|---:|---:|")
    for kind in kinds:
        print(row(kind, runs[kind]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
