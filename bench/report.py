#!/usr/bin/env python3
"""One benchmark report: every benchmark in bench/, qmpd side by side with qemu-system-x86_64 and raw Unicorn.

Runs, in this order and in this one process (the benchmarks' own functions, imported):
  qmp        bench/qmp_bench.py: start-up, query-status round trips (every sample kept for the
             latency plot), 1000 pipelined commands, throughput with 1, 2, 4 and 8 clients, 1 MiB input
  guest      bench/guest_bench.py: guest M insn/s of loops A, B, C for qmpd 1 and 2 vCPUs (and
             thread=single), QEMU TCG and raw Unicorn; QMP round trips against a busy qmpd
  hotplug    bench/hotplug_bench.py: device_add latencies (-S and with the guest running), plugging
             every slot of -smp 1,maxcpus=N for a sweep of N (time and VmRSS; QEMU up to its TCG
             limit 255), N CPUs brought online by the firmware (qmpd)
  probe      bench/probe_bench.py: libvirt's emulator probe, its 51 commands (QEMU with accel=tcg)
  migration  bench/migration_bench.py: save to a file and restore, 128 MiB and 1 GiB of RAM
  startup    bench/startup_bench.py: spawn -> ready for libvirt's probe, a -S pc start, a 128 MiB
             restore, and the floor (an interpreter importing asyncio) against QEMU's start
Every measurement runs REPS times in fresh processes, qmpd and QEMU alternating (order reversed every
other repetition), as the benchmarks themselves do; the table shows medians and qmpd/QEMU ratios of
medians.  Without qemu-system-x86_64 the QEMU column stays empty.

Writes to OUT (default bench/results): latest.md (the table, with the previous run's numbers beside
it), latest.png (plots: QMP latency distribution, throughput vs clients, hot-plug time vs slot count,
guest MIPS vs vCPUs, RSS vs vCPUs, and every ratio at a glance) and latest.json (every number, read by
the next run).  An existing latest.* is renamed to previous.* first, once the new run has finished.

Sizes: the default is the benchmarks' own defaults (about 10 minutes on 2 cores); --quick is a
medium run (a few minutes); --smoke is a minimal run (well under 90 s) that only shows the report is
produced; its numbers mean little.  --smoke writes to bench/results/smoke unless --out is given.
Exit status 1 if any benchmark failed (the report is still written, with the error).

Usage: bench/report.py [--smoke | --quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import guest_bench
import hotplug_bench
import migration_bench
import probe_bench
import qmp_bench
import startup_bench

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
QEMU = shutil.which("qemu-system-x86_64")
KINDS = ["qmpd", "qemu"] if QEMU else ["qmpd"]
#: QEMU's TCG limit on maxcpus for -machine pc.
QEMU_MAXCPUS = 255
BENCHMARKS = ("qmp", "guest", "hotplug", "probe", "migration", "startup")


@dataclass(frozen=True)
class Profile:
    name: str
    reps: int
    rtt_requests: int
    pipe_requests: int
    clients: tuple[int, ...]
    per_client: int
    input_bytes: int
    loops: tuple[str, ...]
    l2_divisor: int  # L2 = the loop's default / this
    busy_requests: int
    fails: int
    plug_sizes: tuple[int, ...]  # maxcpus values of the plug-every-slot sweep
    online: int
    probe_reps: int
    migration_sizes: tuple[int, ...]
    migration_reps: int
    startup_reps: int


PROFILES = {
    "smoke": Profile(
        name="smoke",
        reps=1,
        rtt_requests=200,
        pipe_requests=200,
        clients=(1, 2, 4, 8),
        per_client=50,
        input_bytes=1 << 16,
        loops=("A",),
        l2_divisor=10,
        busy_requests=100,
        fails=1,
        plug_sizes=(8, 16, 32),
        online=8,
        probe_reps=1,
        migration_sizes=(128,),
        migration_reps=1,
        startup_reps=1,
    ),
    "quick": Profile(
        name="quick",
        reps=2,
        rtt_requests=1000,
        pipe_requests=500,
        clients=(1, 2, 4, 8),
        per_client=250,
        input_bytes=1 << 18,
        loops=("A", "B", "C"),
        l2_divisor=4,
        busy_requests=1000,
        fails=5,
        plug_sizes=(8, 32, 64, 128, 255, 512),
        online=32,
        probe_reps=3,
        migration_sizes=(128, 1024),
        migration_reps=2,
        startup_reps=3,
    ),
    "full": Profile(
        name="full",
        reps=3,
        rtt_requests=2000,
        pipe_requests=1000,
        clients=(1, 2, 4, 8),
        per_client=500,
        input_bytes=1 << 20,
        loops=("A", "B", "C"),
        l2_divisor=1,
        busy_requests=2000,
        fails=10,
        plug_sizes=(8, 32, 64, 128, 255, 512, 1024),
        online=64,
        probe_reps=7,
        migration_sizes=(128, 1024),
        migration_reps=5,
        startup_reps=7,
    ),
}


@dataclass
class Row:
    bench: str
    key: str
    label: str
    better: str  # "lower" or "higher"
    qmpd: float | None
    qemu: float | None = None
    raw: float | None = None  # raw Unicorn, guest rows only

    def ratio(self) -> float | None:
        if self.qmpd is None or not self.qemu:
            return None
        return self.qmpd / self.qemu

    def advantage(self) -> float | None:
        """How many times better qmpd is than QEMU (> 1: qmpd ahead), whatever the metric's direction."""
        ratio = self.ratio()
        if ratio is None or ratio <= 0:
            return None
        return ratio if self.better == "higher" else 1 / ratio


#: Plot data: series[plot][line] = [[x, y], ...] (for "rtt_us": the samples' distribution, sorted).
Series = dict[str, dict[str, list[Any]]]


@dataclass
class Report:
    meta: dict[str, Any]
    rows: list[Row]
    series: Series
    errors: dict[str, str]
    durations: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "rows": [asdict(row) for row in self.rows],
            "series": self.series,
            "errors": self.errors,
            "durations": self.durations,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        return cls(
            meta=data.get("meta", {}),
            rows=[Row(**row) for row in data.get("rows", [])],
            series=data.get("series", {}),
            errors=data.get("errors", {}),
            durations=data.get("durations", {}),
        )


def log(message: str) -> None:
    print(f"[report] {message}", file=sys.stderr, flush=True)


def order(rep: int) -> list[str]:
    """qmpd and QEMU alternating: the order is reversed every other repetition."""
    return KINDS if rep % 2 == 0 else list(reversed(KINDS))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(sorted_samples: list[float], fraction: float) -> float:
    return sorted_samples[min(int(len(sorted_samples) * fraction), len(sorted_samples) - 1)]


def distribution(samples: list[float], points: int = 1000) -> list[float]:
    """At most `points` evenly spaced order statistics (first and last included), to 0.1: enough for a CDF."""
    ordered = sorted(samples)
    if len(ordered) > points:
        ordered = [ordered[round(i * (len(ordered) - 1) / (points - 1))] for i in range(points)]
    return [round(value, 1) for value in ordered]


def pairs(points: dict[int, list[float]]) -> list[list[float]]:
    """[[x, median y], ...] sorted by x, for the points that have samples."""
    return [[x, statistics.median(ys)] for x, ys in sorted(points.items()) if ys]


# --- the benchmarks ------------------------------------------------------------------------------


def run_qmp(p: Profile, series: Series) -> list[Row]:
    values: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    clients: dict[str, dict[int, list[float]]] = {kind: {n: [] for n in p.clients} for kind in KINDS}

    def add(kind: str, key: str, value: float) -> None:
        values[kind].setdefault(key, []).append(value)

    for rep in range(p.reps):
        log(f"qmp: repetition {rep + 1} of {p.reps}")
        for kind in order(rep):
            add(kind, "start_ms", qmp_bench.m_start(kind)["start_ms"])
        for kind in order(rep):
            rtt = qmp_bench.rtt_samples(kind, p.rtt_requests)
            samples[kind] += rtt
            add(kind, "rtt_p50_us", percentile(rtt, 0.5) * 1e6)
            add(kind, "rtt_p99_us", percentile(rtt, 0.99) * 1e6)
        for kind in order(rep):
            add(kind, "pipe_cmd_s", qmp_bench.m_pipe(kind, p.pipe_requests)["pipe_cmd_s"])
        for n in p.clients:
            for kind in order(rep):
                rate = qmp_bench.m_clients(kind, n, p.per_client)[f"clients{n}_cmd_s"]
                clients[kind][n].append(rate)
                add(kind, f"clients{n}_cmd_s", rate)
        for kind in order(rep):
            add(kind, "input_mb_s", qmp_bench.m_input(kind, p.input_bytes)["input_mb_s"])
    series["rtt_us"] = {kind: distribution([s * 1e6 for s in samples[kind]]) for kind in KINDS}
    series["clients"] = {kind: pairs(clients[kind]) for kind in KINDS}
    labels = {
        "start_ms": ("spawn -> greeting (ms)", "lower"),
        "rtt_p50_us": (f"query-status round trip p50, {p.rtt_requests} sequential (us)", "lower"),
        "rtt_p99_us": ("query-status round trip p99 (us)", "lower"),
        "pipe_cmd_s": (f"{p.pipe_requests} pipelined query-status (commands/s)", "higher"),
        **{
            f"clients{n}_cmd_s": (
                f"{n} client{'s' if n > 1 else ''}, {p.per_client} sequential each (commands/s)",
                "higher",
            )
            for n in p.clients
        },
        "input_mb_s": (f"one command with a {p.input_bytes >> 10} KiB id (input MB/s)", "higher"),
    }
    return [
        Row("qmp", key, label, better, median(values["qmpd"].get(key, [])), median(values.get("qemu", {}).get(key, [])))
        for key, (label, better) in labels.items()
    ]


def run_guest(p: Profile, series: Series) -> list[Row]:
    loops = tuple(loop for loop in guest_bench.LOOPS if loop.name in p.loops)
    l2 = {loop.name: max(loop.l2 // p.l2_divisor, guest_bench.L1 + 1) for loop in loops}
    log(f"guest: loops {', '.join(l2)} with L2 {', '.join(f'{n:.0e}' for n in l2.values())}, {p.reps} repetitions")
    rates = guest_bench.guest_rates(p.reps, l2, loops)
    rows = []
    mips: dict[str, dict[str, float]] = {}
    for loop in loops:
        got = {kind: statistics.median(values) / 1e6 for kind, values in rates[loop.name].items() if values}
        mips[loop.name] = got
        head = f"loop {loop.name} ({loop.insns} insns/iteration)"
        rows += [
            Row("guest", f"{loop.name}_1cpu_mips", f"{head}, 1 vCPU (M insn/s)", "higher", got.get("qmpd1"),
                got.get("qemu"), got.get("raw")),
            Row("guest", f"{loop.name}_2cpu_mips", f"{head}, 2 vCPUs (M insn/s)", "higher", got.get("qmpd2")),
            Row("guest", f"{loop.name}_single_mips", f"{head}, 2 vCPUs, thread=single (M insn/s)", "higher",
                got.get("single")),
        ]  # fmt: skip
    series["mips"] = {loop: [[kind, value] for kind, value in got.items()] for loop, got in mips.items()}
    log(f"guest: QMP round trips, idle and busy qmpd, {p.busy_requests} each")
    p99: dict[str, list[float]] = {"idle": [], "busy": []}
    p50: dict[str, list[float]] = {"idle": [], "busy": []}
    busy_samples: list[float] = []
    for rep in range(p.reps):
        for busy in (False, True) if rep % 2 == 0 else (True, False):
            samples = guest_bench.qmp_samples(busy, p.busy_requests)
            state = "busy" if busy else "idle"
            p50[state].append(percentile(samples, 0.5) * 1e6)
            p99[state].append(percentile(samples, 0.99) * 1e6)
            if busy:
                busy_samples += samples
    series.setdefault("rtt_us", {})["qmpd, 2 vCPUs busy"] = distribution([s * 1e6 for s in busy_samples])
    busy_p99, idle_p99 = median(p99["busy"]), median(p99["idle"])
    rows += [
        Row("guest", "busy_p50_us", "QMP round trip p50, qmpd -smp 2 running the firmware (us)", "lower",
            median(p50["busy"])),
        Row("guest", "busy_p99_us", "QMP round trip p99, qmpd -smp 2 running the firmware (us)", "lower", busy_p99),
        Row("guest", "busy_idle_p99", "busy p99 / idle p99 (qmpd -machine pc -smp 2)", "lower",
            busy_p99 / idle_p99 if busy_p99 and idle_p99 else None),
    ]  # fmt: skip
    return rows


def run_hotplug(p: Profile, series: Series) -> list[Row]:
    cfg = hotplug_bench.Config(quick=True)
    cfg.fails, cfg.online = p.fails, p.online
    pooled: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}

    def pool(kind: str, samples: hotplug_bench.Samples) -> None:
        for key, values in samples.items():
            pooled[kind].setdefault(key, []).extend(values)

    plug_s: dict[str, dict[int, list[float]]] = {kind: {} for kind in KINDS}
    rss: dict[str, dict[int, list[float]]] = {kind: {} for kind in KINDS}
    per_cpu: dict[str, dict[int, list[float]]] = {kind: {} for kind in KINDS}
    for rep in range(p.reps):
        log(f"hotplug: repetition {rep + 1} of {p.reps}")
        for kind in order(rep):
            pool(kind, hotplug_bench.m_plug(kind, cfg))
        for kind in order(rep):
            pool(kind, hotplug_bench.m_guest(kind, cfg))
        for size in p.plug_sizes:
            for kind in order(rep):
                if kind == "qemu" and size > QEMU_MAXCPUS:
                    continue
                result = hotplug_bench.plug_all(kind, size)
                plug_s[kind].setdefault(size, []).extend(result[f"all{size}_s"])
                rss[kind].setdefault(size, []).extend(result[f"all{size}_rss_mib"])
                per_cpu[kind].setdefault(size, []).extend(result[f"all{size}_kib_per_cpu"])
        pool("qmpd", hotplug_bench.m_online("qmpd", cfg))
    series["plug_s"] = {kind: pairs(plug_s[kind]) for kind in KINDS}
    series["rss_mib"] = {kind: pairs(rss[kind]) for kind in KINDS}
    online_rss = median(pooled["qmpd"].get(f"online{p.online}_rss_mib", []))
    if online_rss is not None:
        series["rss_mib"]["qmpd, all CPUs online (firmware)"] = [[p.online, online_rss]]

    def get(kind: str, key: str) -> float | None:
        values = pooled.get(kind, {}).get(key)
        return median(values) if values else None

    rows = [
        Row("hotplug", "add_ms", "device_add -> return, -S, maxcpus=8 (p50 ms)", "lower",
            get("qmpd", "add_ms"), get("qemu", "add_ms")),
        Row("hotplug", "visible_ms", "device_add -> in query-cpus-fast (p50 ms)", "lower",
            get("qmpd", "visible_ms"), get("qemu", "visible_ms")),
        Row("hotplug", "fail_ms", "failing device_add (boot slot) -> error (p50 ms)", "lower",
            get("qmpd", "fail_ms"), get("qemu", "fail_ms")),
        Row("hotplug", "add_running_ms", "device_add -> return, guest running (p50 ms)", "lower",
            get("qmpd", "add_running_ms"), get("qemu", "add_running_ms")),
        Row("hotplug", "ost_ms", "device_add -> ACPI_DEVICE_OST online (p50 ms; QEMU: no guest OS)", "lower",
            get("qmpd", "ost_ms"), get("qemu", "ost_ms")),
        Row("hotplug", "deleted_ms", "device_del -> DEVICE_DELETED (p50 ms; QEMU: no guest OS)", "lower",
            get("qmpd", "deleted_ms"), get("qemu", "deleted_ms")),
    ]  # fmt: skip
    for size in p.plug_sizes:
        qemu_has = "qemu" in KINDS and size <= QEMU_MAXCPUS
        rows.append(
            Row("hotplug", f"all{size}_s", f"plug {size - 1} CPUs, -S, maxcpus={size} (s)", "lower",
                median(plug_s["qmpd"].get(size, [])), median(plug_s["qemu"].get(size, [])) if qemu_has else None)
        )  # fmt: skip
    for size in p.plug_sizes:
        qemu_has = "qemu" in KINDS and size <= QEMU_MAXCPUS
        rows.append(
            Row("hotplug", f"all{size}_rss_mib", f"VmRSS with {size} CPUs, -S (MiB)", "lower",
                median(rss["qmpd"].get(size, [])), median(rss["qemu"].get(size, [])) if qemu_has else None)
        )  # fmt: skip
    both = [size for size in p.plug_sizes if size <= QEMU_MAXCPUS]
    if both:
        size = both[-1]
        rows.append(
            Row("hotplug", "kib_per_cpu", f"VmRSS growth per plugged CPU, maxcpus={size} (KiB)", "lower",
                median(per_cpu["qmpd"].get(size, [])),
                median(per_cpu["qemu"].get(size, [])) if "qemu" in KINDS else None)
        )  # fmt: skip
    rows += [
        Row("hotplug", "online_s", f"plug {p.online - 1} CPUs -> all online, firmware, maxcpus={p.online} (s)",
            "lower", get("qmpd", f"online{p.online}_s")),
        Row("hotplug", "online_rss_mib", f"VmRSS with {p.online} CPUs online (MiB)", "lower", online_rss),
    ]  # fmt: skip
    return rows


def run_probe(p: Profile, series: Series) -> list[Row]:
    kinds = ["qmpd", "qemu-tcg"] if QEMU else ["qmpd"]
    samples: dict[str, dict[str, list[float]]] = {kind: {} for kind in kinds}
    probe_bench.probe_once("qmpd")  # warm the page cache and bytecode, as probe_bench does
    for rep in range(p.probe_reps):
        log(f"probe: repetition {rep + 1} of {p.probe_reps}")
        for kind in kinds if rep % 2 == 0 else list(reversed(kinds)):
            for metric, value in probe_bench.probe_once(kind).items():
                samples[kind].setdefault(metric, []).append(value)
    commands = len(probe_bench.PROBE) + 1
    labels = {
        "greeting": "spawn (-daemonize) -> greeting (s)",
        "probe": f"spawn -> last of libvirt's {commands} probe commands answered (s)",
        "total": "spawn -> probe done -> SIGTERM -> process gone (s)",
    }
    return [
        Row("probe", key, label, "lower", median(samples["qmpd"].get(key, [])),
            median(samples["qemu-tcg"].get(key, [])) if QEMU else None)
        for key, label in labels.items()
    ]  # fmt: skip


def run_migration(p: Profile, series: Series) -> list[Row]:
    rows = []
    for ram in p.migration_sizes:
        samples: dict[str, dict[str, list[float]]] = {kind: {} for kind in KINDS}
        for rep in range(p.migration_reps):
            log(f"migration: {ram} MiB, repetition {rep + 1} of {p.migration_reps}")
            for kind in order(rep):
                for metric, value in migration_bench.once(kind, ram).items():
                    samples[kind].setdefault(metric, []).append(value)

        def get(
            kind: str, metric: str, scale: float = 1.0, got: dict[str, dict[str, list[float]]] = samples
        ) -> float | None:
            value = median(got.get(kind, {}).get(metric, []))
            return None if value is None else value * scale

        size = f"{ram} MiB" if ram < 1024 else f"{ram // 1024} GiB"
        rows += [
            Row("migration", f"save{ram}_s", f"{size} RAM: migrate to a file -> completed (s)", "lower",
                get("qmpd", "save"), get("qemu", "save")),
            Row("migration", f"restore{ram}_s", f"{size} RAM: spawn with -incoming -> running (s)", "lower",
                get("qmpd", "restore"), get("qemu", "restore")),
            Row("migration", f"size{ram}_mib", f"{size} RAM: state file size (MiB)", "lower",
                get("qmpd", "size", 1 / 1048576), get("qemu", "size", 1 / 1048576)),
        ]  # fmt: skip
    return rows


def run_startup(p: Profile, series: Series) -> list[Row]:
    log(f"startup: {p.startup_reps} repetitions of {', '.join(startup_bench.ROWS)}")
    samples = startup_bench.measure(KINDS, list(startup_bench.ROWS), p.startup_reps)
    start_qemu = median(samples["start"].get("qemu", []))
    return [
        Row("startup", row, startup_bench.LABELS[row], "lower", median(samples[row]["qmpd"]),
            start_qemu if row == "floor" else median(samples[row].get("qemu", [])))
        for row in startup_bench.ROWS
    ]  # fmt: skip


RUNNERS: dict[str, Callable[[Profile, Series], list[Row]]] = {
    "qmp": run_qmp,
    "guest": run_guest,
    "hotplug": run_hotplug,
    "probe": run_probe,
    "migration": run_migration,
    "startup": run_startup,
}


# --- the report ----------------------------------------------------------------------------------


def command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def metadata(profile: Profile) -> dict[str, Any]:
    commit = command_output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    if command_output(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    qemu_version = command_output([QEMU, "--version"]).splitlines()[0] if QEMU else "not installed"
    try:
        import unicorn

        unicorn_version = str(unicorn.__version__)
    except (ImportError, AttributeError):
        unicorn_version = "unknown"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "profile": profile.name,
        "profile_sizes": asdict(profile),
        "host": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.node()}",
        "python": platform.python_version(),
        "qemu": qemu_version,
        "unicorn": unicorn_version,
    }


def number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def change(latest: float | None, previous: float | None, better: str) -> str:
    if latest is None or not previous:
        return "-"
    delta = (latest - previous) / abs(previous)
    if abs(delta) < 0.005:
        return "same"
    improved = (delta < 0) == (better == "lower")
    return f"{delta:+.0%} ({'better' if improved else 'worse'})"


def markdown(report: Report, previous: Report | None, image: str) -> str:
    meta = report.meta
    sizes = meta["profile_sizes"]
    lines = [
        "# qmpd benchmark report",
        "",
        f"- run: {meta['date']}, commit {meta['commit']}, profile **{meta['profile']}** "
        f"({sizes['reps']} repetition{'s' if sizes['reps'] > 1 else ''}), {sum(report.durations.values()):.0f} s",
        f"- host: {meta['host']}; Python {meta['python']}; {meta['qemu']}; Unicorn {meta['unicorn']}",
    ]
    if previous is not None:
        pm = previous.meta
        lines.append(f"- previous run: {pm.get('date', '?')}, commit {pm.get('commit', '?')}, "
                     f"profile {pm.get('profile', '?')} (previous.md)")  # fmt: skip
    else:
        lines.append("- previous run: none")
    lines += [
        "",
        "Medians over repetitions, each in fresh processes, qmpd and QEMU alternating.  qmpd/QEMU is the ratio "
        "of the medians; *better* says which way favours qmpd.  *qmpd change* compares qmpd's number with the "
        "previous run (on a noisy machine, watch the ratios rather than the absolute numbers).",
        "",
    ]
    if report.meta["profile"] == "smoke":
        lines += ["**Smoke run: minimal sizes, the numbers show that the report works, not how fast qmpd is.**", ""]
    before = {(row.bench, row.key): row for row in previous.rows} if previous else {}
    lines += [
        "| benchmark | metric | better | qmpd | QEMU | qmpd/QEMU | raw Unicorn | previous qmpd "
        "| previous qmpd/QEMU | qmpd change |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report.rows:
        old = before.get((row.bench, row.key))
        cells = [
            row.bench,
            row.label,
            row.better,
            number(row.qmpd),
            number(row.qemu),
            "-" if row.ratio() is None else f"{row.ratio():.2f}",
            number(row.raw),
            number(old.qmpd) if old else "-",
            "-" if old is None or old.ratio() is None else f"{old.ratio():.2f}",
            change(row.qmpd, old.qmpd if old else None, row.better),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![plots]({image})", "", "Time per benchmark (s): "]
    lines[-1] += ", ".join(f"{name} {seconds:.0f}" for name, seconds in report.durations.items())
    if report.errors:
        lines += ["", "## Errors", ""]
        for name, text in report.errors.items():
            lines += [f"### {name}", "", "```", text.rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


COLORS = {"qmpd": "tab:blue", "qemu": "tab:orange", "raw": "tab:green", "previous": "tab:gray"}
NAMES = {"qmpd": "qmpd", "qemu": "QEMU 7.2"}


def plot(report: Report, previous: Report | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(19, 11))
    title = f"qmpd benchmarks: {report.meta['date']}, commit {report.meta['commit']}, profile {report.meta['profile']}"
    fig.suptitle(title)
    old = previous.series if previous else {}

    def prev_line(ax: Any, plot_name: str, line: str = "qmpd") -> None:
        points = old.get(plot_name, {}).get(line)
        if points:
            xs, ys = xy(points)
            ax.plot(xs, ys, ":", color=COLORS["previous"], marker=".", label="qmpd, previous run")

    # QMP round-trip latency distribution: a CDF of every sample.
    ax = axes[0][0]
    for line, samples in report.series.get("rtt_us", {}).items():
        if samples:
            ys = [(i + 1) / len(samples) for i in range(len(samples))]
            style = "--" if "busy" in line else "-"
            ax.plot(samples, ys, style, color=COLORS.get(line, "tab:purple"), label=NAMES.get(line, line))
    old_rtt = old.get("rtt_us", {}).get("qmpd")
    if old_rtt:
        ax.plot(old_rtt, [(i + 1) / len(old_rtt) for i in range(len(old_rtt))], ":", color=COLORS["previous"],
                label="qmpd, previous run")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("query-status round trip (us)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("QMP round-trip latency (CDF)")

    # Throughput vs clients.
    ax = axes[0][1]
    for line, points in report.series.get("clients", {}).items():
        if points:
            xs, ys = xy(points)
            ax.plot(xs, ys, "-o", color=COLORS.get(line), label=NAMES.get(line, line))
    prev_line(ax, "clients")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("clients (one monitor each, sequential requests)")
    ax.set_ylabel("commands/s (all clients)")
    ax.set_title("QMP throughput vs clients")
    ax.set_ylim(bottom=0)

    # Hot-plug time vs slot count.
    ax = axes[0][2]
    for line, points in report.series.get("plug_s", {}).items():
        if points:
            xs, ys = xy(points)
            ax.plot(xs, ys, "-o", color=COLORS.get(line), label=NAMES.get(line, line))
    prev_line(ax, "plug_s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("maxcpus (device_add of all maxcpus - 1 free slots)")
    ax.set_ylabel("total time (s)")
    ax.set_title("CPU hot-plug: time to fill every slot")

    # Guest MIPS vs vCPUs: grouped bars per loop.
    ax = axes[1][0]
    bars = [
        ("qmpd1", "qmpd, 1 vCPU", "tab:blue", ""),
        ("qmpd2", "qmpd, 2 vCPUs", "tab:cyan", ""),
        ("single", "qmpd, 2 vCPUs, thread=single", "tab:purple", ""),
        ("qemu", "QEMU TCG, 1 vCPU", "tab:orange", ""),
        ("raw", "raw Unicorn, 1 vCPU", "tab:green", "//"),
    ]
    mips = report.series.get("mips", {})
    width = 0.8 / len(bars)
    for i, (kind, label, color, hatch) in enumerate(bars):
        where: list[float] = []
        heights: list[float] = []
        for j, loop in enumerate(mips):
            got = dict(mips[loop])
            if kind in got:
                where.append(j + (i - (len(bars) - 1) / 2) * width)
                heights.append(max(got[kind], 0.0))
        if where:
            ax.bar(where, heights, width, color=color, hatch=hatch, label=label)
    ax.set_xticks(range(len(mips)), [f"loop {loop}" for loop in mips])
    ax.set_ylabel("M guest insn/s (all vCPUs)")
    ax.set_title("guest speed vs vCPUs")

    # RSS vs vCPUs.
    ax = axes[1][1]
    for line, points in report.series.get("rss_mib", {}).items():
        if points:
            xs, ys = xy(points)
            marker = "-o" if len(points) > 1 else "*"
            ax.plot(xs, ys, marker, color=COLORS.get(line, "tab:red"), markersize=8, label=NAMES.get(line, line))
    prev_line(ax, "rss_mib")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("CPUs (1 booted + hot-plugged, -S)")
    ax.set_ylabel("VmRSS (MiB)")
    ax.set_title("memory vs vCPUs")
    ax.set_ylim(bottom=0)

    # Every ratio at a glance, oriented so that right of 1 means qmpd ahead.
    ax = axes[1][2]
    rated = [(row, row.advantage()) for row in report.rows]
    shown = [(row, value) for row, value in rated if value is not None]
    if shown:
        labels = [f"{row.bench}: {row.key}" for row, _ in shown]
        advantages = [value for _, value in shown]
        colors = ["tab:blue" if value >= 1 else "tab:red" for value in advantages]
        ax.barh(range(len(advantages)), advantages, color=colors)
        ax.set_yticks(range(len(advantages)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
    ax.set_xlabel("how many times better qmpd is than QEMU (log; > 1: qmpd ahead)")
    ax.set_title("qmpd vs QEMU, every metric")

    for ax, plot_name in ((axes[0][1], "clients"), (axes[0][2], "plug_s"), (axes[1][1], "rss_mib")):
        ticks = sorted({point[0] for points in report.series.get(plot_name, {}).values() for point in points})
        if ticks:
            ax.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
            ax.minorticks_off()
    for row_axes in axes:
        for ax in row_axes:
            ax.grid(True, which="major", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def xy(points: list[list[float]]) -> tuple[list[float], list[float]]:
    return [point[0] for point in points], [point[1] for point in points]


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def rotate(out: Path) -> None:
    """latest.* -> previous.*, the markdown's image link following the rename."""
    if not (out / "latest.json").exists():
        return
    for suffix in (".json", ".png"):
        if (out / f"latest{suffix}").exists():
            os.replace(out / f"latest{suffix}", out / f"previous{suffix}")
    if (out / "latest.md").exists():
        text = (out / "latest.md").read_text().replace("](latest.png)", "](previous.png)")
        write_atomically(out / "previous.md", text.encode())
        (out / "latest.md").unlink()


def load(path: Path) -> Report | None:
    try:
        return Report.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as error:
        if path.exists():
            log(f"ignoring {path}: {error}")
        return None


def run(profile: Profile, only: list[str]) -> Report:
    series: Series = {}
    rows: list[Row] = []
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    meta = metadata(profile)
    for name in only:
        log(f"{name}: starting")
        started = time.perf_counter()
        try:
            rows += RUNNERS[name](profile, series)
        except Exception:  # the report still shows the other benchmarks, and this error
            errors[name] = traceback.format_exc()
            log(f"{name}: FAILED\n{errors[name]}")
        durations[name] = time.perf_counter() - started
        log(f"{name}: {durations[name]:.1f} s")
    return Report(meta, rows, series, errors, durations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="minimal sizes (< 90 s): shows the report is produced")
    size.add_argument("--quick", action="store_true", help="medium sizes: a few minutes")
    parser.add_argument("--out", type=Path, help="output directory (default bench/results, bench/results/smoke)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), help="these benchmarks")
    args = parser.parse_args()
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    out: Path = args.out or (RESULTS / "smoke" if args.smoke else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    if QEMU is None:
        log("qemu-system-x86_64 not found: the QEMU column stays empty")
    report = run(profile, args.only)
    rotate(out)
    previous = load(out / "previous.json")
    write_atomically(out / "latest.json", json.dumps(report.to_json(), indent=1).encode())
    write_atomically(out / "latest.md", markdown(report, previous, "latest.png").encode())
    tmp = out / "latest.png.tmp"
    plot(report, previous, tmp)
    os.replace(tmp, out / "latest.png")
    print((out / "latest.md").read_text())
    log(f"wrote {out / 'latest.md'}, {out / 'latest.png'} and {out / 'latest.json'}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
