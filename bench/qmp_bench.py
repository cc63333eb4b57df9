#!/usr/bin/env python3
"""QMP protocol benchmark: qmpd and qemu-system-x86_64 side by side, alternating.

Measures, for both servers with the same argv (-machine none -S):
  start    spawn -> greeting line received
  rtt      sequential query-status round trips (p50, p99)
  pipe     1000 query-status in one write -> all replies
  clients  8 clients on 8 monitors, 500 sequential query-status each, one select loop
  input    one command with a 1 MiB string id -> its reply (input bytes per second)
Every metric runs REPS times per server, alternating qmpd/QEMU, each run in a fresh
process; the table shows medians and the qmpd/QEMU ratio of medians.
bench/rtt_anatomy.py cuts the rtt round trips into phases (wake-ups, server work) with perf.

Usage: bench/qmp_bench.py [--reps N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QEMU = shutil.which("qemu-system-x86_64")
ARGV = ["-machine", "none", "-S", "-nodefaults"]
QUERY = b'{"execute":"query-status"}'


def server_cmd(kind: str) -> list[str]:
    if kind == "qmpd":
        return [sys.executable, "-m", "qmpd", "--log-level", "warning"]
    assert QEMU is not None
    return [QEMU, "-nographic"]


class Proc:
    def __init__(self, kind: str, monitors: int = 1) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"bench-{kind}-")
        self.socks = [os.path.join(self.dir, f"m{i}.sock") for i in range(monitors)]
        argv = server_cmd(kind) + ARGV
        for path in self.socks:
            argv += ["-qmp", f"unix:{path},server=on,wait=off"]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )

    def connect(self, index: int = 0, timeout: float = 20.0) -> socket.socket:
        deadline = time.perf_counter() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(self.socks[index])
                return sock
            except OSError:
                sock.close()
                if time.perf_counter() > deadline:
                    raise
                time.sleep(0.0005)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def negotiate(self) -> None:
        self.line()
        self.sock.sendall(b'{"execute":"qmp_capabilities"}')
        self.line()


def m_start(kind: str) -> dict[str, float]:
    times = []
    for _ in range(5):
        proc = Proc(kind)
        try:
            conn = Conn(proc.connect())
            conn.line()
            times.append(time.perf_counter() - proc.started)
        finally:
            proc.close()
    return {"start_ms": statistics.median(times) * 1000}


def rtt_samples(kind: str, n: int = 2000) -> list[float]:
    """Seconds of n sequential query-status round trips (after 100 warm-up ones), sorted."""
    proc = Proc(kind)
    try:
        conn = Conn(proc.connect())
        conn.negotiate()
        for _ in range(100):
            conn.sock.sendall(QUERY)
            conn.line()
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.sock.sendall(QUERY)
            conn.line()
            samples.append(time.perf_counter() - t0)
        samples.sort()
        return samples
    finally:
        proc.close()


def m_rtt(kind: str, n: int = 2000) -> dict[str, float]:
    samples = rtt_samples(kind, n)
    return {"rtt_p50_us": samples[len(samples) // 2] * 1e6, "rtt_p99_us": samples[int(len(samples) * 0.99)] * 1e6}


def m_pipe(kind: str, n: int = 1000) -> dict[str, float]:
    proc = Proc(kind)
    try:
        conn = Conn(proc.connect())
        conn.negotiate()
        payload = QUERY * n
        t0 = time.perf_counter()
        conn.sock.sendall(payload)
        for _ in range(n):
            conn.line()
        return {"pipe_cmd_s": n / (time.perf_counter() - t0)}
    finally:
        proc.close()


def m_clients(kind: str, clients: int = 8, per_client: int = 500) -> dict[str, float]:
    proc = Proc(kind, monitors=clients)
    try:
        conns = []
        for i in range(clients):
            conn = Conn(proc.connect(i))
            conn.negotiate()
            conns.append(conn)
        selector = selectors.DefaultSelector()
        remaining = {}
        for conn in conns:
            conn.sock.setblocking(False)
            selector.register(conn.sock, selectors.EVENT_READ, conn)
            remaining[conn] = per_client
        t0 = time.perf_counter()
        for conn in conns:
            conn.sock.sendall(QUERY)
        active = clients
        while active:
            for key, _ in selector.select():
                conn = key.data
                data = conn.sock.recv(1 << 16)
                conn.buf += data
                while b"\n" in conn.buf:
                    _, _, conn.buf = conn.buf.partition(b"\n")
                    remaining[conn] -= 1
                    if remaining[conn]:
                        conn.sock.sendall(QUERY)
                    else:
                        active -= 1
                        selector.unregister(conn.sock)
        return {f"clients{clients}_cmd_s": clients * per_client / (time.perf_counter() - t0)}
    finally:
        proc.close()


def m_input(kind: str, size: int = 1 << 20) -> dict[str, float]:
    proc = Proc(kind)
    try:
        conn = Conn(proc.connect())
        conn.negotiate()
        payload = b'{"execute":"query-status","id":"' + b"x" * size + b'"}'
        t0 = time.perf_counter()
        conn.sock.sendall(payload)
        conn.line()
        return {"input_mb_s": len(payload) / (time.perf_counter() - t0) / 1e6}
    finally:
        proc.close()


METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "start": m_start,
    "rtt": m_rtt,
    "pipe": m_pipe,
    "clients": m_clients,
    "input": m_input,
}
#: For these, smaller is better; the goal compares qmpd/QEMU against a bound.
GOALS = {
    "start_ms": ("<=", 2.0),
    "rtt_p50_us": ("<=", 0.5),
    "rtt_p99_us": ("<=", 0.5),
    "pipe_cmd_s": (">=", 3.0),
    "clients8_cmd_s": (">=", 3.0),
    "input_mb_s": (">=", 20.0),
}


#: --quick: smaller request counts and input (QEMU takes seconds to parse 1 MiB): a smoke run.
QUICK_SIZES: dict[str, dict[str, int]] = {
    "rtt": {"n": 300},
    "pipe": {"n": 200},
    "clients": {"per_client": 100},
    "input": {"size": 1 << 16},
}


def run(
    reps: int, only: list[str], sizes: dict[str, dict[str, int]] | None = None
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {"qmpd": {}, "qemu": {}}
    kinds = ["qmpd", "qemu"] if QEMU else ["qmpd"]
    for name in only:
        kwargs = (sizes or {}).get(name, {})
        for rep in range(reps):
            for kind in kinds if rep % 2 == 0 else list(reversed(kinds)):
                for key, value in METRICS[name](kind, **kwargs).items():
                    results[kind].setdefault(key, []).append(value)
    return results


def table(results: dict[str, dict[str, list[float]]]) -> str:
    lines = ["| metric | qmpd | QEMU 7.2 | qmpd/QEMU | goal | met |", "|---|---|---|---|---|---|"]
    for key, values in results["qmpd"].items():
        ours = statistics.median(values)
        theirs_values = results["qemu"].get(key)
        if theirs_values:
            theirs = statistics.median(theirs_values)
            ratio = ours / theirs
            op, bound = GOALS[key]
            met = ratio <= bound if op == "<=" else ratio >= bound
            lines.append(
                f"| {key} | {ours:.1f} | {theirs:.1f} | {ratio:.3f} | {op} {bound} | {'yes' if met else 'NO'} |"
            )
        else:
            lines.append(f"| {key} | {ours:.1f} | - | - | - | - |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(METRICS), choices=list(METRICS))
    parser.add_argument(
        "--quick", action="store_true", help="one repetition, fewer requests, 64 KiB input: a smoke run"
    )
    parser.add_argument("--json", help="also write raw results to this file")
    args = parser.parse_args()
    results = run(1 if args.quick else args.reps, args.only, QUICK_SIZES if args.quick else None)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
