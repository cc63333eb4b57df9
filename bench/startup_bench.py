#!/usr/bin/env python3
"""From spawn to ready: qmpd and qemu-system-x86_64 side by side, alternating, in one run.

Three rows, each the time a management layer waits before it can use a fresh process:
  probe    libvirt's emulator probe (bench/probe_bench.py: `-machine none,accel=... -S -daemonize`,
           the 51 commands one at a time) -> last answer;
  start    `-machine pc -cpu Haswell -smp 2,maxcpus=8 -S -nodefaults` -> the greeting, qmp_capabilities,
           and `query-status` answered;
  restore  `-machine pc -smp 1 -m 128 -nodefaults -incoming file:PATH` (QEMU: `exec:cat PATH`, its
           way to read a file) of a running machine saved once before the repetitions -> query-migrate
           says completed (the machine runs again).
and two floors under qmpd's rows, timed in the same repetitions, against QEMU's start row:
  floor      spawn -> exit of `python -c "import asyncio"` (the interpreter and the event loop's
             modules, before any of qmpd);
  libraries  spawn -> exit of an interpreter importing every module the start row's daemon has
             loaded but qmpd's own (the standard library's, uvloop's, ...; listed once per run by
             running that daemon): what any Python daemon built on the same libraries pays.
Each repetition runs qmpd and QEMU once per row, the order reversed every other repetition; medians
over repetitions; ratios are qmpd/QEMU of the medians.  The machine may be shared: quote the ratios.
With --only qmpd it times qmpd alone (for an A/B of two trees: run it on each, alternating).

Usage: bench/startup_bench.py [--reps N] [--rows probe start restore floor libraries]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import migration_bench
import probe_bench

QEMU = shutil.which("qemu-system-x86_64")
ROWS = ("probe", "start", "restore", "floor", "libraries")
#: What each row measures, as the report labels it.
LABELS = {
    "probe": "spawn -> libvirt's 51 probe commands answered (s)",
    "start": "spawn -> query-status answered, -machine pc -cpu Haswell -smp 2,maxcpus=8 -S (s)",
    "restore": "spawn -> -incoming file: of a 128 MiB machine completed (s)",
    "floor": "floor: spawn -> exit of python -c 'import asyncio' (s; QEMU: its start above)",
    "libraries": "floor: spawn -> exit of python importing the start row's modules but qmpd's (s; QEMU: its start)",
}
START_ARGS = ["-machine", "pc", "-cpu", "Haswell", "-smp", "2,maxcpus=8", "-S", "-nodefaults"]
RESTORE_RAM_MIB = 128


def start_once(kind: str, work: Path) -> float:
    """Seconds from spawn to the answer of query-status (after the greeting and qmp_capabilities)."""
    sock = work / f"start-{kind}.sock"
    started = time.perf_counter()
    process = migration_bench.spawn_args(kind, [*START_ARGS, "-qmp", f"unix:{sock},server=on,wait=off"])
    try:
        monitor = migration_bench.Monitor(str(sock))
        assert monitor.execute("query-status")["status"] == "prelaunch"
        elapsed = time.perf_counter() - started
        monitor.close()
    finally:
        process.terminate()
        process.wait()
    sock.unlink(missing_ok=True)
    return elapsed


def floor_once() -> float:
    """Seconds from spawn to exit of an interpreter that imports asyncio and nothing of qmpd."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import asyncio"], check=True)
    return time.perf_counter() - started


#: qmpd's console-script lines, recording at exit every module the process had loaded (not the names
#: it keeps out with a None entry: rich, greenlet).
_RECORDING = (
    "import atexit, json, sys\n"
    "record = sys.argv.pop(1)\n"
    "atexit.register(lambda: json.dump(sorted(n for n, m in sys.modules.items() if m), open(record, 'w')))\n"
    "from qmpd.main import main\n"
    "sys.exit(main())\n"
)


def libraries_of_start(work: Path) -> list[str]:
    """Every module but qmpd's that the start row's daemon has loaded once it answered query-status."""
    sock, record = work / "libraries.sock", work / "libraries.json"
    argv = [sys.executable, "-c", _RECORDING, str(record), *START_ARGS, "-qmp", f"unix:{sock},server=on,wait=off"]
    env = dict(os.environ, PYTHONPATH=str(migration_bench.REPO))
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=migration_bench.REPO
    )
    try:
        monitor = migration_bench.Monitor(str(sock))
        monitor.execute("query-status")
        monitor.execute("quit")
        monitor.close()
    finally:
        process.wait()
    loaded = json.loads(record.read_text())
    return [name for name in loaded if name != "qmpd" and not name.startswith(("qmpd.", "__main__"))]


def libraries_once(modules: list[str]) -> float:
    """Seconds from spawn to exit of an interpreter that imports ``modules`` (the start's, not qmpd's)."""
    code = f"for name in {modules!r}:\n    try:\n        __import__(name)\n    except Exception:\n        pass\n"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def restore_once(kind: str, work: Path, state: Path) -> float:
    """Seconds from spawn with -incoming to query-migrate's completed."""
    sock = work / f"restore-{kind}.sock"
    incoming = f"file:{state}" if kind == "qmpd" else f"exec:cat {state}"
    started = time.perf_counter()
    target = migration_bench.spawn(kind, RESTORE_RAM_MIB, str(sock), ["-incoming", incoming])
    try:
        monitor = migration_bench.Monitor(str(sock))
        monitor.wait_completed()
        elapsed = time.perf_counter() - started
        monitor.close()
    finally:
        target.terminate()
        target.wait()
    sock.unlink(missing_ok=True)
    return elapsed


def measure(kinds: list[str], rows: list[str], reps: int) -> dict[str, dict[str, list[float]]]:
    """samples[row][kind]: seconds per repetition."""
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    samples: dict[str, dict[str, list[float]]] = {row: {kind: [] for kind in kinds} for row in rows}
    try:
        states = {
            kind: migration_bench.save_state(kind, RESTORE_RAM_MIB, work)[0] for kind in kinds if "restore" in rows
        }
        probe_bench.probe_once("qmpd")  # warm the page cache and bytecode
        libraries = libraries_of_start(work) if "libraries" in rows else []
        for rep in range(reps):
            order = kinds if rep % 2 == 0 else list(reversed(kinds))
            for row in rows:
                for kind in order:
                    if row == "floor":
                        value = floor_once() if kind == "qmpd" else start_once(kind, work)
                    elif row == "libraries":
                        value = libraries_once(libraries) if kind == "qmpd" else start_once(kind, work)
                    elif row == "probe":
                        value = probe_bench.probe_once("qmpd" if kind == "qmpd" else "qemu-tcg")["probe"]
                    elif row == "start":
                        value = start_once(kind, work)
                    else:
                        value = restore_once(kind, work, states[kind])
                    samples[row][kind].append(value)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--only", choices=("qmpd",), help="time qmpd alone")
    args = parser.parse_args()
    kinds = ["qmpd"] + (["qemu"] if QEMU and not args.only else [])
    samples = measure(kinds, args.rows, args.reps)
    print(f"spawn -> ready, median of {args.reps} runs, seconds")
    print(f"{'row':<8} {'qmpd':>8} {'QEMU':>8} {'ratio':>6}  all qmpd samples")
    for row in args.rows:
        qmpd = statistics.median(samples[row]["qmpd"])
        qemu = statistics.median(samples[row]["qemu"]) if "qemu" in kinds else None
        ratio = f"{qmpd / qemu:6.2f}" if qemu else f"{'-':>6}"
        qemu_text = f"{qemu:8.3f}" if qemu is not None else f"{'-':>8}"
        spread = " ".join(f"{value:.3f}" for value in samples[row]["qmpd"])
        print(f"{row:<8} {qmpd:8.3f} {qemu_text} {ratio}  {spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
