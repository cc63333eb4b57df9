#!/usr/bin/env python3
"""Save and restore of a machine: qmpd and qemu-system-x86_64 side by side, alternating.

Both run `-machine pc -smp 1 -m SIZE -nodefaults` with their default firmware (qmpd's bundled guest;
QEMU's SeaBIOS), running, for a second before the save.
  save     `migrate` -> query-migrate says completed.  qmpd writes `file:PATH`; QEMU 7.2 has no
           file: transport, so it gets `exec:cat > PATH`, its documented way to migrate to a file.
  size     the file's size.
  restore  spawn of a target with the same options and `-incoming file:PATH` (QEMU: `-incoming
           "exec:cat PATH"`) -> query-migrate completed (the machine is running again).
RAM sizes 128 MiB and 1 GiB; medians over repetitions; ratios are qmpd/QEMU of the medians.

Usage: bench/migration_bench.py [--reps N] [--sizes 128 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qmpd_command import QMPD

REPO = Path(__file__).resolve().parents[1]
QEMU = shutil.which("qemu-system-x86_64")


class Monitor:
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
        self.stream = self.sock.makefile("rwb")
        json.loads(self.stream.readline())
        self.execute("qmp_capabilities")

    def execute(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.stream.write(json.dumps(request).encode() + b"\n")
        self.stream.flush()
        while True:
            message = json.loads(self.stream.readline())
            if "return" in message:
                return message["return"]
            if "error" in message:
                raise RuntimeError(f"{name}: {message['error']['desc']}")

    def wait_completed(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.execute("query-migrate").get("status")
            if status == "completed":
                return
            if status == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"migration {status}")
            time.sleep(0.002)

    def close(self) -> None:
        self.sock.close()


def spawn_args(kind: str, args: list[str]) -> subprocess.Popen[bytes]:
    """qmpd or QEMU (no display) with these options, output discarded."""
    base = [*QMPD, "--log-level", "warning"] if kind == "qmpd" else [QEMU or "", "-nographic"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [*base, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )


def spawn(kind: str, ram_mib: int, sock: str, extra: list[str]) -> subprocess.Popen[bytes]:
    argv = ["-machine", "pc", "-smp", "1", "-m", str(ram_mib), "-nodefaults"]
    return spawn_args(kind, [*argv, "-qmp", f"unix:{sock},server=on,wait=off", *extra])


def save_state(kind: str, ram_mib: int, work: Path) -> tuple[Path, float]:
    """A machine run for a second, then saved to a file: the file and the save's seconds."""
    state = work / f"{kind}-{ram_mib}.state"
    source = spawn(kind, ram_mib, str(work / "source.sock"), [])
    try:
        monitor = Monitor(str(work / "source.sock"))
        time.sleep(1.0)
        uri = f"file:{state}" if kind == "qmpd" else f"exec:cat > {state}"
        started = time.perf_counter()
        monitor.execute("migrate", {"uri": uri})
        monitor.wait_completed()
        save = time.perf_counter() - started
        monitor.close()
    finally:
        source.terminate()
        source.wait()
    return state, save


def once(kind: str, ram_mib: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix=f"migration-bench-{kind}-"))
    state, save = save_state(kind, ram_mib, work)
    size = state.stat().st_size
    incoming = f"file:{state}" if kind == "qmpd" else f"exec:cat {state}"
    started = time.perf_counter()
    target = spawn(kind, ram_mib, str(work / "target.sock"), ["-incoming", incoming])
    try:
        monitor = Monitor(str(work / "target.sock"))
        monitor.wait_completed()
        restore = time.perf_counter() - started
        monitor.close()
    finally:
        target.terminate()
        target.wait()
    shutil.rmtree(work, ignore_errors=True)
    return {"save": save, "restore": restore, "size": float(size)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 1024], help="RAM sizes in MiB")
    args = parser.parse_args()
    kinds = ["qmpd"] + (["qemu"] if QEMU else [])
    print(f"save / restore, median of {args.reps} runs (seconds; size in KiB)")
    print(f"{'RAM':>6} {'emulator':<8} {'save':>8} {'restore':>8} {'size':>10}")
    for ram in args.sizes:
        samples: dict[str, dict[str, list[float]]] = {kind: {} for kind in kinds}
        for rep in range(args.reps):
            for kind in kinds if rep % 2 == 0 else list(reversed(kinds)):
                for metric, value in once(kind, ram).items():
                    samples[kind].setdefault(metric, []).append(value)
        medians = {kind: {m: statistics.median(v) for m, v in samples[kind].items()} for kind in kinds}
        for kind in kinds:
            row = medians[kind]
            print(f"{ram:>5}M {kind:<8} {row['save']:>8.3f} {row['restore']:>8.3f} {row['size'] / 1024:>10.0f}")
        if "qemu" in medians:
            q, m = medians["qemu"], medians["qmpd"]
            print(
                f"{ram:>5}M qmpd/qemu save {m['save'] / q['save']:.2f}  restore {m['restore'] / q['restore']:.2f}"
                f"  size {m['size'] / q['size']:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
