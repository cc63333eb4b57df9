#!/usr/bin/env python3
"""Guest code speed: qmpd's vCPUs against QEMU TCG and raw Unicorn, alternating.

Measures guest instructions per second for three 64-bit loop bodies (bench/guest/loops.S):
  A  dec ecx; jnz                                                        2 insns/iteration
  B  add eax, ebx; xor edx, eax; inc esi; dec ecx; jnz                   5 insns/iteration
  C  mov [rbx], ax; add dx, [rbx]; add rbx, 2; and ebx, r9d; dec ecx; jnz  6 insns/iteration
     (two memory accesses; the `and` keeps rbx inside a 4 KiB RAM buffer per CPU)
on five runners:
  qmpd 1 vCPU        qmpd -machine pc -nodefaults -bios IMAGE -device isa-debug-exit,...
  qmpd 2 vCPU        the same with -smp 2: CPU 0 starts CPU 1 (INIT, STARTUP), both run the loop,
                     CPU 0 waits for CPU 1's flag in RAM; the rate is the sum of both CPUs
  thread=single      qmpd 2 vCPU with -accel tcg,thread=single (vCPUs take turns)
  QEMU TCG           qemu-system-x86_64 -cpu Haswell with a 64 KiB -bios (bench/guest/bios64k.S) that
                     enters long mode, copies the same flat image to 0x10000 and jumps to it
  raw Unicorn        Uc(UC_ARCH_X86, UC_MODE_64) in this process, the same image at 0x10000, an OUT
                     hook that stops; only emu_start is timed (a lower bound on any daemon's overhead)
Each loop runs with L1 = 1 and with L2 iterations (per CPU) in fresh processes, timed from spawn to
exit; the guest exits through isa-debug-exit (write 0 -> status 1, checked), so start-up cancels:
rate = cpus * insns_per_iteration * (L2 - L1) / (t(L2) - t(L1)).  Runners alternate within each
repetition (order reversed every other one); the table shows medians of the per-repetition rates.

Also QMP query-status round trips (p50, p99) over a Unix socket against an idle qmpd (-S) and a busy
one (-smp 2 running the bundled firmware, which keeps both vCPUs busy), idle and busy alternating.

Images are assembled at run time (as --64, ld, objcopy -O binary) into a temporary directory.

Usage: bench/guest_bench.py [--reps N] [--l2 N | --l2 NA NB NC] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import unicorn.x86_const as x86
from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_64, Uc

REPO = Path(__file__).resolve().parents[1]
GUEST = Path(__file__).resolve().parent / "guest"
QEMU = shutil.which("qemu-system-x86_64")
QMPD = [sys.executable, "-m", "qmpd", "--log-level", "warning"]
EXIT_DEVICE = ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
#: Process exit status after the guest writes 0 to isa-debug-exit: (0 << 1) | 1.
EXIT_OK = 1
IMAGE_BASE = 0x10000
BIOS_BASE = 0xF0000
BIOS_SIZE = 64 << 10
L1 = 1
QUERY = b'{"execute":"query-status"}'


class Loop(NamedTuple):
    name: str
    number: int  # LOOP in loops.S
    insns: int  # per iteration
    l2: int  # default L2 (qmpd 1 vCPU takes ~1-3 s)


LOOPS = (
    Loop("A", 0, 2, 200_000_000),
    Loop("B", 1, 5, 200_000_000),
    # Stores are slow in Unicorn 2.1 (every one takes the softmmu slow path), hence a smaller L2.
    Loop("C", 2, 6, 25_000_000),
)


class Images:
    """Assembles and caches the guest images in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="guest-bench-"))

    def _assemble(self, source: Path, out: Path, base: int, defsyms: dict[str, int]) -> None:
        obj, elf = out.with_suffix(".o"), out.with_suffix(".elf")
        syms = [arg for name, value in defsyms.items() for arg in ("--defsym", f"{name}={value}")]
        for argv in (
            ["as", "--64", "-I", str(self.dir), *syms, "-o", str(obj), str(source)],
            ["ld", "-m", "elf_x86_64", f"-Ttext={base:#x}", "-e", "_start", "-o", str(elf), str(obj)],
            ["objcopy", "-O", "binary", "-j", ".text", str(elf), str(out)],
        ):
            subprocess.run(argv, check=True, capture_output=True)

    def flat(self, loop: Loop, iters: int, cpus: int) -> Path:
        """The flat image for qmpd and raw Unicorn."""
        out = self.dir / f"loop{loop.name}-{iters}-{cpus}.bin"
        if not out.exists():
            self._assemble(GUEST / "loops.S", out, IMAGE_BASE, {"LOOP": loop.number, "ITERS": iters, "NCPUS": cpus})
        return out

    def bios(self, loop: Loop, iters: int) -> Path:
        """The 64 KiB QEMU -bios image wrapping the one-CPU flat image."""
        out = self.dir / f"bios{loop.name}-{iters}.bin"
        if not out.exists():
            shutil.copyfile(self.flat(loop, iters, 1), self.dir / "image.bin")  # .incbin "image.bin"
            self._assemble(GUEST / "bios64k.S", out, BIOS_BASE, {})
            size = out.stat().st_size
            if size != BIOS_SIZE:
                raise RuntimeError(f"{out}: {size} bytes, not {BIOS_SIZE}")
        return out

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def timed_run(argv: list[str]) -> float:
    """Spawn to exit, in seconds; the exit status must be isa-debug-exit's for 0."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=600)
    elapsed = time.perf_counter() - t0
    if proc.returncode != EXIT_OK:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}, not {EXIT_OK}: {' '.join(argv)}\n{tail}")
    return elapsed


def raw_unicorn(image: Path) -> float:
    """emu_start of the flat image on a fresh Uc, in seconds; the guest must OUT 0 to port 0xf4."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0, 128 << 20)
    uc.mem_write(IMAGE_BASE, image.read_bytes())
    uc.reg_write(x86.UC_X86_REG_RSP, 0x8000)
    outs: list[tuple[int, int]] = []

    def on_out(uc: Uc, port: int, size: int, value: int, user_data: Any) -> None:
        outs.append((port, value))
        uc.emu_stop()

    uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, x86.UC_X86_INS_OUT)
    t0 = time.perf_counter()
    uc.emu_start(IMAGE_BASE, 0xFFFF_FFFF_FFFF_FFFF)
    elapsed = time.perf_counter() - t0
    if outs != [(0xF4, 0)]:
        raise RuntimeError(f"raw Unicorn: expected OUT 0 to port 0xf4, got {outs}")
    return elapsed


class Runner(NamedTuple):
    title: str
    cpus: int
    run: Callable[[Images, Loop, int], float]  # seconds for one run with this many iterations


def qmpd_runner(cpus: int, extra: list[str]) -> Callable[[Images, Loop, int], float]:
    def run(images: Images, loop: Loop, iters: int) -> float:
        image = images.flat(loop, iters, cpus)
        argv = [*QMPD, "-machine", "pc", "-nodefaults", "-smp", str(cpus), *extra]
        return timed_run([*argv, "-bios", str(image), *EXIT_DEVICE])

    return run


def qemu_run(images: Images, loop: Loop, iters: int) -> float:
    assert QEMU is not None
    bios = images.bios(loop, iters)
    argv = [QEMU, "-machine", "pc,accel=tcg", "-cpu", "Haswell", "-nodefaults", "-nographic", "-display", "none"]
    return timed_run([*argv, "-bios", str(bios), *EXIT_DEVICE])


RUNNERS = {
    "qmpd1": Runner("qmpd 1 vCPU", 1, qmpd_runner(1, [])),
    "qmpd2": Runner("qmpd 2 vCPU", 2, qmpd_runner(2, [])),
    "single": Runner("qmpd thread=single 2 vCPU", 2, qmpd_runner(2, ["-accel", "tcg,thread=single"])),
    "qemu": Runner("QEMU TCG", 1, qemu_run),
    "raw": Runner("raw Unicorn", 1, lambda images, loop, iters: raw_unicorn(images.flat(loop, iters, 1))),
}


def guest_rates(reps: int, l2: dict[str, int], loops: tuple[Loop, ...] = LOOPS) -> dict[str, dict[str, list[float]]]:
    """rates[loop][runner]: insns/s of each repetition."""
    kinds = [kind for kind in RUNNERS if kind != "qemu" or QEMU]
    rates: dict[str, dict[str, list[float]]] = {loop.name: {kind: [] for kind in kinds} for loop in loops}
    images = Images()
    try:
        for rep in range(reps):
            for loop in loops:
                for kind in kinds if rep % 2 == 0 else list(reversed(kinds)):
                    runner = RUNNERS[kind]
                    t1 = runner.run(images, loop, L1)
                    t2 = runner.run(images, loop, l2[loop.name])
                    rate = runner.cpus * loop.insns * (l2[loop.name] - L1) / (t2 - t1)
                    rates[loop.name][kind].append(rate)
                    print(f"  rep {rep + 1} {loop.name} {runner.title}: {rate / 1e6:.1f} M insn/s", file=sys.stderr)
    finally:
        images.close()
    return rates


def qmp_latency(busy: bool, n: int) -> tuple[float, float]:
    """p50 and p99 of n sequential query-status round trips, in microseconds."""
    samples = qmp_samples(busy, n)
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def qmp_samples(busy: bool, n: int) -> list[float]:
    """Seconds of n sequential query-status round trips against an idle or a busy qmpd, sorted."""
    tmp = tempfile.mkdtemp(prefix="guest-bench-qmp-")
    path = os.path.join(tmp, "qmp.sock")
    argv = [*QMPD, "-machine", "pc", "-nodefaults", "-smp", "2", "-qmp", f"unix:{path},server=on,wait=off"]
    proc = subprocess.Popen(
        [*argv] + ([] if busy else ["-S"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    sock = socket.socket(socket.AF_UNIX)
    try:
        deadline = time.perf_counter() + 20
        while True:
            try:
                sock.connect(path)
                break
            except OSError:
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.005)
        reader = sock.makefile("rb")

        def request(payload: bytes) -> bytes:
            sock.sendall(payload)
            while True:
                line = reader.readline()
                if not line:
                    raise EOFError("qmpd closed the monitor")
                if b'"return"' in line or b'"error"' in line:
                    return line

        reader.readline()  # greeting
        request(b'{"execute":"qmp_capabilities"}')
        time.sleep(0.3)  # let the busy firmware start both CPUs
        status = request(QUERY)
        if (b'"running": true' in status) != busy:
            raise RuntimeError(f"unexpected status for {'busy' if busy else 'idle'} qmpd: {status!r}")
        for _ in range(100):
            request(QUERY)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            request(QUERY)
            samples.append(time.perf_counter() - t0)
        samples.sort()
        return samples
    finally:
        sock.close()
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def latencies(reps: int, n: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"idle": [], "busy": []}
    for rep in range(reps):
        for busy in (False, True) if rep % 2 == 0 else (True, False):
            results["busy" if busy else "idle"].append(qmp_latency(busy, n))
    return results


def mips(rates: list[float]) -> str:
    return f"{statistics.median(rates) / 1e6:.1f}" if rates else "-"


def ratio(ours: list[float], theirs: list[float]) -> float | None:
    return statistics.median(ours) / statistics.median(theirs) if ours and theirs else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rates: dict[str, dict[str, list[float]]], l2: dict[str, int]) -> str:
    titles = [RUNNERS[kind].title for kind in ("qmpd1", "qmpd2")] + ["2/1"]
    titles += [RUNNERS[kind].title for kind in ("single", "qemu", "raw")] + ["qmpd/raw", "qmpd/QEMU"]
    lines = [
        "M guest insn/s (median); QEMU TCG runs the same 64-bit code after its own long-mode switch",
        "| loop | insns/iter | L2 | " + " | ".join(titles) + " |",
        "|---" * (len(titles) + 3) + "|",
    ]
    goals = []
    for loop in LOOPS:
        row = rates[loop.name]
        get = row.get
        two_one = ratio(get("qmpd2", []), get("qmpd1", []))
        vs_raw = ratio(get("qmpd1", []), get("raw", []))
        cells = [mips(get("qmpd1", [])), mips(get("qmpd2", [])), fmt(two_one)]
        cells += [mips(get("single", [])), mips(get("qemu", [])), mips(get("raw", []))]
        cells += [fmt(vs_raw), fmt(ratio(get("qmpd1", []), get("qemu", [])))]
        lines.append(f"| {loop.name} | {loop.insns} | {l2[loop.name]:.0e} | " + " | ".join(cells) + " |")
        goals.append(f"{loop.name}: qmpd/raw {fmt(vs_raw)} ({'met' if vs_raw and vs_raw >= 0.5 else 'NOT met'})")
        goals.append(f"2/1 {fmt(two_one)} ({'met' if two_one and two_one >= 1.7 else 'NOT met'})")
    lines.append("goals (qmpd/raw >= 0.5, 2/1 >= 1.7): " + ", ".join(goals))
    return "\n".join(lines)


def latency_lines(results: dict[str, list[tuple[float, float]]], n: int) -> str:
    p50 = {key: statistics.median(p for p, _ in values) for key, values in results.items()}
    p99 = {key: statistics.median(p for _, p in values) for key, values in results.items()}
    busy_idle = p99["busy"] / p99["idle"]
    return "\n".join(
        [
            f"QMP query-status round trip, {n} sequential requests, median over rounds:",
            f"  idle qmpd (-S, -smp 2):               p50 {p50['idle']:.0f} us  p99 {p99['idle']:.0f} us",
            f"  busy qmpd (-smp 2, bundled firmware): p50 {p50['busy']:.0f} us  p99 {p99['busy']:.0f} us",
            f"  busy p99 / idle p99: {busy_idle:.2f} (goal <= 2: {'met' if busy_idle <= 2 else 'NOT met'})",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--l2", type=int, nargs="+", help="L2 iterations: one value for every loop, or three for A, B and C"
    )
    parser.add_argument("--quick", action="store_true", help="L2 / 20 and 300 QMP requests: a smoke run")
    parser.add_argument("--requests", type=int, default=2000, help="QMP round trips per latency round")
    args = parser.parse_args()
    if args.l2 is None:
        l2 = {loop.name: loop.l2 // (20 if args.quick else 1) for loop in LOOPS}
    elif len(args.l2) in (1, len(LOOPS)):
        l2 = {loop.name: args.l2[i if len(args.l2) > 1 else 0] for i, loop in enumerate(LOOPS)}
    else:
        parser.error("--l2 takes one value or one per loop")
    if min(l2.values()) <= L1:
        parser.error(f"L2 must be greater than L1 = {L1}")
    requests = 300 if args.quick else args.requests
    started = time.perf_counter()
    rates = guest_rates(args.reps, l2)
    lat = latencies(args.reps, requests)
    print(table(rates, l2))
    print()
    print(latency_lines(lat, requests))
    print(f"\n{args.reps} repetitions, {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
