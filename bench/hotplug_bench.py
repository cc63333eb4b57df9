#!/usr/bin/env python3
"""CPU hot-plug benchmark: qmpd and qemu-system-x86_64 side by side, alternating.

Both servers get -machine pc -cpu Haswell -nodefaults and one QMP Unix socket; qmpd runs with
--log-level warning.  Every latency is timed from the write of the command to the arrival of the
line that answers it (reply or event); events are read from the same socket as the replies.
  plug     -smp 1,maxcpus=8 -S: device_add {"driver": "Haswell-x86_64-cpu", "id": ..., socket-id,
           core-id, thread-id} for each of the 7 free slots (props from query-hotpluggable-cpus)
           -> its return, and -> the new CPU's qom-path in query-cpus-fast (polled after the return)
  fail     the same process, before plugging: device_add on the occupied boot slot (socket 0, core 0,
           thread 0 -> "CPU[0] with APIC ID 0 exists") -> its error
  guest    -smp 1,maxcpus=8, no -S: qmpd boots its bundled firmware, which answers ACPI CPU hot-plug;
           QEMU boots SeaBIOS (no OS).  For each free slot: device_add -> return, -> ACPI_DEVICE_OST
           with data.info.source 1 (the guest put the CPU online); device_del -> DEVICE_DELETED with
           "device".  QEMU's rows read "n/a (no guest OS)" when no such event arrives.
  all255   -smp 1,maxcpus=255 -S (QEMU's TCG limit): all 254 free slots plugged by sequential
           device_add (no id, props copied from query-hotpluggable-cpus) -> total time; VmRSS and
           thread count from /proc/PID/status before and after (the CPUs stay plugged but offline)
  all1024  qmpd only, -smp 1,maxcpus=1024 -S: 1023 CPUs the same way
  online64 qmpd only, -smp 1,maxcpus=64 with the firmware running: 63 device_add -> the last of 63
           ACPI_DEVICE_OST events with source 1 (every plugged CPU online), VmRSS after
  idle1024 qmpd only, -smp 1,maxcpus=1024, the firmware in its idle work mode (-fw_cfg
           name=opt/qmpd/work,string=idle: CPUs halt after their banner), console to a file:
           1023 device_add one after another -> the last ACPI_DEVICE_OST
           online, from the first device_add and from the last one's return (the goal: <= 10 s),
           VmRSS after (the goal: <= 1.5 GiB) and its growth per online CPU
Every metric runs REPS times, each run in a fresh process, alternating qmpd/QEMU (order reversed every
other repetition); latency rows pool the samples of all repetitions and show their median (p50),
the others the median over repetitions; ratios are qmpd/QEMU of the medians.

Usage: bench/hotplug_bench.py [--reps N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QEMU = shutil.which("qemu-system-x86_64")
ARGV = ["-machine", "pc", "-cpu", "Haswell", "-nodefaults"]
DRIVER = "Haswell-x86_64-cpu"
BOOT_SLOT = {"socket-id": 0, "core-id": 0, "thread-id": 0}
#: How long to wait for an event that may never come (QEMU has no guest OS to answer).
EVENT_TIMEOUT = 10.0
QEMU_EVENT_TIMEOUT = 2.0

Message = dict[str, Any]


def server_cmd(kind: str) -> list[str]:
    if kind == "qmpd":
        return [sys.executable, "-m", "qmpd", "--log-level", "warning"]
    assert QEMU is not None
    return [QEMU, "-nographic"]


class Proc:
    def __init__(self, kind: str, args: list[str]) -> None:
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix=f"hotplug-bench-{kind}-")
        self.sock = os.path.join(self.dir, "qmp.sock")
        self.stderr_path = os.path.join(self.dir, "stderr")
        argv = server_cmd(kind) + ARGV + args + ["-qmp", f"unix:{self.sock},server=on,wait=off"]
        self.argv = argv
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env
            )

    def connect(self, timeout: float = 30.0) -> Monitor:
        deadline = time.perf_counter() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(self.sock)
                break
            except OSError:
                sock.close()
                if time.perf_counter() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(self.failure("no QMP socket")) from None
                time.sleep(0.002)
        monitor = Monitor(sock, self)
        monitor.read()  # greeting
        monitor.command("qmp_capabilities")
        return monitor

    def status(self) -> dict[str, int]:
        """VmRSS (KiB) and Threads from /proc/PID/status."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                fields[key] = int(value.split()[0])
        return fields

    def failure(self, what: str) -> str:
        code = self.proc.poll()
        tail = Path(self.stderr_path).read_text(errors="replace")[-2000:]
        state = "running" if code is None else f"exit status {code}"
        return f"{self.kind}: {what} ({state}): {' '.join(self.argv)}\n{tail}"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Monitor:
    """One QMP connection: replies in order, events kept with their arrival times."""

    def __init__(self, sock: socket.socket, proc: Proc) -> None:
        self.sock = sock
        self.proc = proc
        self.buf = b""
        self.events: list[tuple[float, Message]] = []

    def read(self, timeout: float | None = None) -> Message | None:
        """The next message, or None once timeout seconds pass without one."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while b"\n" not in self.buf:
            if deadline is not None:
                left = deadline - time.perf_counter()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    return None
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError(self.proc.failure("monitor closed"))
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        message: Message = json.loads(line)
        return message

    def send(self, name: str, args: Message | None = None) -> float:
        request: Message = {"execute": name}
        if args is not None:
            request["arguments"] = args
        t0 = time.perf_counter()
        self.sock.sendall(json.dumps(request).encode())
        return t0

    def reply(self) -> Message:
        while True:
            message = self.read()
            assert message is not None
            if "event" in message:
                self.events.append((time.perf_counter(), message))
            else:
                return message

    def command(self, name: str, args: Message | None = None) -> Any:
        self.send(name, args)
        message = self.reply()
        if "return" not in message:
            raise RuntimeError(self.proc.failure(f"{name} {args}: {message}"))
        return message["return"]

    def wait_event(self, match: Callable[[Message], bool], timeout: float) -> float | None:
        """Arrival time of the first (kept or new) event that matches, removed from the backlog."""
        for i, (arrival, kept) in enumerate(self.events):
            if match(kept):
                del self.events[i]
                return arrival
        deadline = time.perf_counter() + timeout
        while True:
            message = self.read(deadline - time.perf_counter())
            if message is None:
                return None
            if "event" not in message:
                raise RuntimeError(self.proc.failure(f"unexpected reply {message}"))
            now = time.perf_counter()
            if match(message):
                return now
            self.events.append((now, message))


def free_slots(monitor: Monitor) -> list[Message]:
    """Props of the free slots, in query-hotpluggable-cpus order reversed (lowest core first)."""
    slots = monitor.command("query-hotpluggable-cpus")
    return [slot["props"] for slot in reversed(slots) if "qom-path" not in slot]


def device_add(monitor: Monitor, props: Message, dev_id: str | None = None) -> float:
    """device_add one CPU; seconds to the return."""
    args: Message = {"driver": DRIVER, **props}
    if dev_id is not None:
        args["id"] = dev_id
    t0 = monitor.send("device_add", args)
    message = monitor.reply()
    if "return" not in message:
        raise RuntimeError(monitor.proc.failure(f"device_add {args}: {message}"))
    return time.perf_counter() - t0


def ost_online(dev_id: str | None) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        if message["event"] != "ACPI_DEVICE_OST":
            return False
        info = message["data"]["info"]
        return bool(info.get("source") == 1 and (dev_id is None or info.get("device") == dev_id))

    return match


def deleted(dev_id: str) -> Callable[[Message], bool]:
    return lambda message: message["event"] == "DEVICE_DELETED" and message["data"].get("device") == dev_id


Samples = dict[str, list[float]]


def m_plug(kind: str, cfg: Config) -> Samples:
    """Failing device_add on the boot slot, then the 7 free slots of -smp 1,maxcpus=8 -S."""
    proc = Proc(kind, ["-S", "-smp", "1,maxcpus=8"])
    try:
        monitor = proc.connect()
        fail = []
        for _ in range(cfg.fails):
            t0 = monitor.send("device_add", {"driver": DRIVER, **BOOT_SLOT})
            message = monitor.reply()
            fail.append(time.perf_counter() - t0)
            desc = message.get("error", {}).get("desc", "")
            if desc != "CPU[0] with APIC ID 0 exists":
                raise RuntimeError(proc.failure(f"device_add on the boot slot: {message}"))
        add, visible = [], []
        for n, props in enumerate(free_slots(monitor)):
            dev_id = f"cpu{n + 1}"
            path = f"/machine/peripheral/{dev_id}"
            t0 = time.perf_counter()
            add.append(device_add(monitor, props, dev_id))
            while not any(cpu.get("qom-path") == path for cpu in monitor.command("query-cpus-fast")):
                if time.perf_counter() - t0 > EVENT_TIMEOUT:
                    raise RuntimeError(proc.failure(f"{dev_id} never showed in query-cpus-fast"))
            visible.append(time.perf_counter() - t0)
        if len(add) != 7:
            raise RuntimeError(proc.failure(f"{len(add)} free slots, not 7"))
        return {
            "fail_ms": [t * 1e3 for t in fail],
            "add_ms": [t * 1e3 for t in add],
            "visible_ms": [t * 1e3 for t in visible],
        }
    finally:
        proc.close()


def m_guest(kind: str, cfg: Config) -> Samples:
    """With the guest running: device_add -> return and -> ACPI_DEVICE_OST; device_del -> DEVICE_DELETED."""
    proc = Proc(kind, ["-smp", "1,maxcpus=8"])
    timeout = EVENT_TIMEOUT if kind == "qmpd" else QEMU_EVENT_TIMEOUT
    try:
        monitor = proc.connect()
        time.sleep(0.5)  # the firmware (or SeaBIOS) is past its start-up
        if not monitor.command("query-status")["running"]:
            raise RuntimeError(proc.failure("the guest is not running"))
        add: list[float] = []
        ost: list[float] = []
        delete: list[float] = []
        for n, props in enumerate(free_slots(monitor)):
            dev_id = f"cpu{n + 1}"
            t0 = time.perf_counter()
            add.append(device_add(monitor, props, dev_id))
            if kind == "qemu" and n > 0 and not ost:
                continue  # no guest OS: the first slot showed that no event comes
            arrival = monitor.wait_event(ost_online(dev_id), timeout)
            if arrival is None:
                if kind == "qmpd":
                    raise RuntimeError(proc.failure(f"no ACPI_DEVICE_OST for {dev_id}"))
                continue
            ost.append(arrival - t0)
            t0 = monitor.send("device_del", {"id": dev_id})
            message = monitor.reply()
            if "return" not in message:
                raise RuntimeError(proc.failure(f"device_del {dev_id}: {message}"))
            arrival = monitor.wait_event(deleted(dev_id), timeout)
            if arrival is None:
                raise RuntimeError(proc.failure(f"no DEVICE_DELETED for {dev_id}"))
            delete.append(arrival - t0)
        return {
            "add_running_ms": [t * 1e3 for t in add],
            "ost_ms": [t * 1e3 for t in ost],
            "deleted_ms": [t * 1e3 for t in delete],
        }
    finally:
        proc.close()


def plug_all(kind: str, maxcpus: int) -> Samples:
    """-smp 1,maxcpus=N -S: every free slot, sequential device_add without id."""
    proc = Proc(kind, ["-S", "-smp", f"1,maxcpus={maxcpus}"])
    try:
        monitor = proc.connect()
        slots = free_slots(monitor)
        before = proc.status()
        t0 = time.perf_counter()
        for props in slots:
            device_add(monitor, props)
        elapsed = time.perf_counter() - t0
        cpus = len(monitor.command("query-cpus-fast"))
        if cpus != maxcpus:
            raise RuntimeError(proc.failure(f"{cpus} CPUs after plugging, not {maxcpus}"))
        after = proc.status()
        per_cpu = (after["VmRSS"] - before["VmRSS"]) / len(slots)
        return {
            f"all{maxcpus}_s": [elapsed],
            f"all{maxcpus}_rss_mib": [after["VmRSS"] / 1024],
            f"all{maxcpus}_kib_per_cpu": [per_cpu],
            f"all{maxcpus}_threads": [after["Threads"]],
        }
    finally:
        proc.close()


def m_online(kind: str, cfg: Config) -> Samples:
    """Firmware running, -smp 1,maxcpus=N: device_add every free slot -> the last ACPI_DEVICE_OST online."""
    maxcpus = cfg.online
    proc = Proc(kind, ["-smp", f"1,maxcpus={maxcpus}"])
    try:
        monitor = proc.connect()
        time.sleep(0.5)
        slots = free_slots(monitor)
        t0 = time.perf_counter()
        for props in slots:
            device_add(monitor, props)
        last = t0
        for n in range(len(slots)):
            arrival = monitor.wait_event(ost_online(None), 60.0)
            if arrival is None:
                raise RuntimeError(proc.failure(f"{n} of {len(slots)} CPUs came online"))
            last = max(last, arrival)
        after = proc.status()
        return {f"online{maxcpus}_s": [last - t0], f"online{maxcpus}_rss_mib": [after["VmRSS"] / 1024]}
    finally:
        proc.close()


def m_idle(kind: str, cfg: Config) -> Samples:
    """Idle firmware, -smp 1,maxcpus=N: every free slot plugged one after another -> the last CPU online."""
    maxcpus = cfg.idle
    work = tempfile.mkdtemp(prefix="hotplug-bench-idle-")
    try:
        console = os.path.join(work, "console.txt")
        argv = [
            "-smp",
            f"1,maxcpus={maxcpus}",
            "-fw_cfg",
            "name=opt/qmpd/work,string=idle",
            "-debugcon",
            f"file:{console}",
        ]
        proc = Proc(kind, argv)
        try:
            monitor = proc.connect()
            time.sleep(0.5)
            slots = free_slots(monitor)
            before = proc.status()
            t0 = time.perf_counter()
            for props in slots:
                device_add(monitor, props)
            last_add = time.perf_counter()
            last = t0
            for n in range(len(slots)):
                arrival = monitor.wait_event(ost_online(None), 60.0)
                if arrival is None:
                    raise RuntimeError(proc.failure(f"{n} of {len(slots)} CPUs came online"))
                last = max(last, arrival)
            after = proc.status()
            online = Path(console).read_text().count(") online\n")
            if online != maxcpus:
                raise RuntimeError(proc.failure(f"the console shows {online} CPUs online, not {maxcpus}"))
            return {
                f"idle{maxcpus}_s": [last - t0],
                f"idle{maxcpus}_after_last_add_s": [last - last_add],
                f"idle{maxcpus}_rss_mib": [after["VmRSS"] / 1024],
                f"idle{maxcpus}_kib_per_cpu": [(after["VmRSS"] - before["VmRSS"]) / len(slots)],
            }
        finally:
            proc.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Config:
    def __init__(self, quick: bool) -> None:
        self.fails = 3 if quick else 10
        self.all_small = 32 if quick else 255
        self.all_large = 64 if quick else 1024
        self.online = 16 if quick else 64
        self.idle = 64 if quick else 1024


class Metric:
    def __init__(self, run: Callable[[str, Config], Samples], qemu: bool) -> None:
        self.run = run
        self.qemu = qemu


METRICS = {
    "plug": Metric(m_plug, True),
    "guest": Metric(m_guest, True),
    "all255": Metric(lambda kind, cfg: plug_all(kind, cfg.all_small), True),
    "all1024": Metric(lambda kind, cfg: plug_all(kind, cfg.all_large), False),
    "online64": Metric(m_online, False),
    "idle1024": Metric(m_idle, False),
}


def run(reps: int, cfg: Config, only: list[str]) -> dict[str, Samples]:
    results: dict[str, Samples] = {"qmpd": {}, "qemu": {}}
    for name in only:
        metric = METRICS[name]
        kinds = ["qmpd", "qemu"] if QEMU and metric.qemu else ["qmpd"]
        for rep in range(reps):
            for kind in kinds if rep % 2 == 0 else list(reversed(kinds)):
                t0 = time.perf_counter()
                for key, values in metric.run(kind, cfg).items():
                    results[kind].setdefault(key, []).extend(values)
                print(f"  rep {rep + 1} {name} {kind}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return results


Row = tuple[str, str, str, str | None, float | None]


def rows(cfg: Config) -> list[Row]:
    """(key, label, number format, goal operator, goal bound) in table order."""
    small, large, online, idle = cfg.all_small, cfg.all_large, cfg.online, cfg.idle
    return [
        ("add_ms", "device_add -> return, -S, maxcpus=8 (p50 ms)", ".2f", "<=", 0.5),
        ("visible_ms", "device_add -> in query-cpus-fast (p50 ms)", ".2f", None, None),
        ("fail_ms", "failing device_add (boot slot) -> error (p50 ms)", ".2f", "<=", 0.05),
        ("add_running_ms", "device_add -> return, guest running (p50 ms)", ".2f", None, None),
        ("ost_ms", "device_add -> ACPI_DEVICE_OST online (p50 ms)", ".2f", None, None),
        ("deleted_ms", "device_del -> DEVICE_DELETED (p50 ms)", ".2f", None, None),
        (f"all{small}_s", f"plug {small - 1} CPUs, -S, maxcpus={small} (s)", ".2f", "<=", 0.5),
        (f"all{small}_rss_mib", f"VmRSS after {small - 1} plugged (MiB)", ".1f", "<=", 1.0),
        (f"all{small}_kib_per_cpu", "VmRSS growth per plugged CPU (KiB)", ".0f", None, None),
        (f"all{small}_threads", f"threads after {small - 1} plugged", ".0f", None, None),
        (f"all{large}_s", f"plug {large - 1} CPUs, -S, maxcpus={large} (s)", ".2f", None, None),
        (f"all{large}_rss_mib", f"VmRSS after {large - 1} plugged (MiB)", ".1f", None, None),
        (f"all{large}_kib_per_cpu", "VmRSS growth per plugged CPU (KiB)", ".0f", None, None),
        (f"all{large}_threads", f"threads after {large - 1} plugged", ".0f", None, None),
        (f"online{online}_s", f"plug {online - 1} -> all online, firmware, maxcpus={online} (s)", ".2f", None, None),
        (f"online{online}_rss_mib", f"VmRSS after {online - 1} online (MiB)", ".1f", None, None),
        (f"idle{idle}_s", f"plug {idle - 1} -> all online, idle firmware, maxcpus={idle} (s)", ".2f", None, None),
        (f"idle{idle}_after_last_add_s", "  of which after the last device_add returned (s)", ".2f", None, None),
        (f"idle{idle}_rss_mib", f"VmRSS with {idle} CPUs online, idle (MiB)", ".1f", None, None),
        (f"idle{idle}_kib_per_cpu", "VmRSS growth per online CPU, idle (KiB)", ".0f", None, None),
    ]


def cell(values: list[float] | None, spec: str) -> str:
    if values is None:
        return "-"
    if not values:
        return "n/a (no guest OS)"
    return format(statistics.median(values), spec)


def table(results: dict[str, Samples], cfg: Config) -> str:
    lines = ["| metric | qmpd | QEMU 7.2 | qmpd/QEMU | goal | met |", "|---|---|---|---|---|---|"]
    for key, label, spec, op, bound in rows(cfg):
        ours, theirs = results["qmpd"].get(key), results["qemu"].get(key)
        ratio = statistics.median(ours) / statistics.median(theirs) if ours and theirs else None
        goal = met = "-"
        if op is not None and bound is not None:
            goal = f"{op} {bound}"
            if ratio is not None:
                met = "yes" if (ratio <= bound if op == "<=" else ratio >= bound) else "NO"
        ratio_text = "-" if ratio is None else f"{ratio:.3f}"
        lines.append(f"| {label} | {cell(ours, spec)} | {cell(theirs, spec)} | {ratio_text} | {goal} | {met} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(METRICS), choices=list(METRICS))
    parser.add_argument(
        "--quick", action="store_true", help="one repetition, 3 failing adds, maxcpus 32/64/16: a smoke run"
    )
    parser.add_argument("--json", help="also write raw results to this file")
    args = parser.parse_args()
    cfg = Config(args.quick)
    reps = 1 if args.quick else args.reps
    started = time.perf_counter()
    results = run(reps, cfg, args.only)
    print(table(results, cfg))
    print(f"\n{reps} repetitions, {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
