#!/usr/bin/env python3
"""libvirt's emulator probe, timed: qmpd and qemu-system-x86_64 side by side, alternating.

libvirt 9.0 probes every emulator it finds (and, where /dev/kvm works, re-probes one that reported KVM
disabled at each domain lookup).  One probe, as libvirt-observed.md §2 records it:
  spawn   `EMULATOR -S -no-user-config -nodefaults -nographic -machine none,accel=ACCEL
          -qmp unix:P,server=on,wait=off -pidfile F -daemonize`, wait for the parent to exit 0,
          read the pid from F, connect to P;
  talk    the 51 commands libvirt sends, one at a time, each waiting for its answer (errors count:
          QEMU answers query-sev-capabilities with one under TCG);
  end     SIGTERM to the daemon, wait until it is gone.
Columns: greeting = spawn -> greeting read; probe = spawn -> last answer (what libvirt waits for);
total = spawn -> process gone.  Emulators: qmpd with libvirt's `accel=kvm:tcg` (qmpd is TCG-only and
says so in query-kvm), QEMU with `accel=tcg` (a TCG-only host, the case qmpd competes with), and QEMU
with `accel=kvm:tcg` (on a host with a usable /dev/kvm, for reference; libvirt then also starts a
second QEMU for `accel=tcg`, not counted here).  Each repetition runs every emulator once, the order
rotating; medians over repetitions; ratios are qmpd/QEMU(tcg) of the medians.

With --libvirt (root, libvirt installed, no libvirtd running) it also times what libvirt itself spends:
a libvirtd is started as in tests/integration/test_libvirt.py, and `virsh domcapabilities --emulatorbin W`
runs with W a new wrapper script for each emulator and repetition, so each call is a full probe (libvirt
caches capabilities per path; the wrappers and their cache entries are removed afterwards).  On a host
with a usable /dev/kvm libvirt probes QEMU twice (accel=kvm:tcg, then tcg) and qmpd once; it also
re-probes qmpd at every lookup there, because qmpd truthfully reports KVM disabled.

Usage: bench/probe_bench.py [--reps N] [--libvirt]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QEMU = shutil.which("qemu-system-x86_64")

sys.path.insert(0, str(REPO))  # libvirt's probe has one copy, shared with the differential test
from qmpd_command import QMPD  # noqa: E402

from tests.libvirt_probe import PROBE  # noqa: E402


def command(kind: str) -> tuple[list[str], str]:
    if kind == "qmpd":
        # No --log-level: libvirt passes none, so qmpd logs at its default level (into /dev/null, -daemonize).
        return list(QMPD), "kvm:tcg"
    assert QEMU is not None
    return [QEMU], "tcg" if kind == "qemu-tcg" else "kvm:tcg"


def probe_once(kind: str) -> dict[str, float]:
    """One libvirt-style probe; seconds from spawn to greeting, last answer, and exit."""
    base, accel = command(kind)
    work = Path(tempfile.mkdtemp(prefix=f"probe-bench-{kind}-"))
    sock_path, pidfile = work / "qmp.monitor", work / "qmp.pid"
    argv = [
        *base, "-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", f"none,accel={accel}",
        "-qmp", f"unix:{sock_path},server=on,wait=off", "-pidfile", str(pidfile), "-daemonize",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    parent = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=REPO, timeout=60)
    if parent.returncode != 0:
        raise RuntimeError(f"{kind}: exit {parent.returncode}: {parent.stderr.decode(errors='replace')}")
    pid = int(pidfile.read_text().split()[0])
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(sock_path))
            stream = sock.makefile("rwb")  # buffered: an unbuffered readline costs one recv per byte
            json.loads(stream.readline())
            greeting = time.perf_counter() - start
            for name, arguments in [("qmp_capabilities", {}), *PROBE]:
                stream.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
                stream.flush()
                while True:
                    message = json.loads(stream.readline())
                    if "return" in message or "error" in message:
                        break
            probe = time.perf_counter() - start
    finally:
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
            time.sleep(0.001)
    total = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    return {"greeting": greeting, "probe": probe, "total": total}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie"


LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")
CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")


def libvirt_probes(reps: int) -> dict[str, list[float]]:
    """Seconds per `virsh domcapabilities` with an empty cache, per emulator wrapper."""
    work = Path(tempfile.mkdtemp(prefix="probe-bench-libvirt-"))
    targets = {"qmpd": f'"{sys.executable}" -m qmpd'}
    if QEMU is not None:
        targets["qemu"] = f'"{QEMU}"'
    wrappers: list[Path] = []

    def wrapper(kind: str, rep: int) -> Path:
        """A new path each time: libvirt keeps probed capabilities in memory, keyed by path."""
        path = work / f"{kind}-{rep}.sh"
        path.write_text(f'#!/bin/sh\nexec {targets[kind]} "$@"\n')
        path.chmod(0o755)
        wrappers.append(path)
        return path

    old_conf = QEMU_CONF.read_bytes() if QEMU_CONF.exists() else None
    QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
    # The probe as root: the interpreter running the bench may be out of the qmpd account's reach.
    conf = (REPO / "examples" / "libvirt" / "qemu.conf").read_text()
    QEMU_CONF.write_text(conf.replace('user = "qmpd"', 'user = "root"').replace('group = "qmpd"', 'group = "root"'))
    account = subprocess.run(["getent", "group", "libvirt-qemu"], capture_output=True).returncode != 0
    if account:  # libvirt looks up its built-in account even when qemu.conf says root
        subprocess.run(["groupadd", "--system", "libvirt-qemu"], check=True)
        subprocess.run(["useradd", "--system", "--no-create-home", "-g", "libvirt-qemu", "libvirt-qemu"], check=True)
    pidfile = work / "libvirtd.pid"
    daemon_conf = work / "libvirtd.conf"  # the example's, logging beside it (/var/log/libvirt may not exist)
    daemon_conf.write_text(
        (REPO / "examples" / "libvirt" / "libvirtd.conf").read_text() + f'log_outputs = "3:file:{work}/libvirtd.log"\n'
    )
    subprocess.run(
        ["/usr/sbin/libvirtd", "-d", "-f", str(daemon_conf), "-p", str(pidfile)],
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    samples: dict[str, list[float]] = {kind: [] for kind in targets}
    try:
        while not (LIBVIRT_SOCKET.exists() and pidfile.exists()):
            time.sleep(0.05)
        for rep in range(reps):
            kinds = list(targets) if rep % 2 == 0 else list(reversed(targets))
            for kind in kinds:
                path = wrapper(kind, rep)
                start = time.perf_counter()
                subprocess.run(
                    ["virsh", "-c", "qemu:///system", "domcapabilities", "--emulatorbin", str(path),
                     "--virttype", "qemu"],
                    check=True, capture_output=True, timeout=120,
                )  # fmt: skip
                samples[kind].append(time.perf_counter() - start)
    finally:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
            time.sleep(0.01)
        for path in wrappers:
            (CAPS_CACHE / f"{hashlib.sha256(str(path).encode()).hexdigest()}.xml").unlink(missing_ok=True)
        if old_conf is None:
            QEMU_CONF.unlink(missing_ok=True)
        else:
            QEMU_CONF.write_bytes(old_conf)
        if account:
            subprocess.run(["userdel", "libvirt-qemu"], check=False)
            subprocess.run(["groupdel", "libvirt-qemu"], check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--libvirt", action="store_true", help="also time libvirt's own probe (root)")
    args = parser.parse_args()
    kinds = ["qmpd"]
    if QEMU is not None:
        kinds += ["qemu-tcg"]
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            kinds += ["qemu-kvm"]
    samples: dict[str, dict[str, list[float]]] = {kind: {} for kind in kinds}
    probe_once("qmpd")  # warm the page cache and bytecode
    for rep in range(args.reps):
        for kind in kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]:
            for metric, value in probe_once(kind).items():
                samples[kind].setdefault(metric, []).append(value)
    print(f"libvirt probe ({len(PROBE) + 1} commands), median of {args.reps} runs, seconds")
    print(f"{'emulator':<10} {'greeting':>9} {'probe':>9} {'total':>9}")
    medians = {kind: {m: statistics.median(v) for m, v in samples[kind].items()} for kind in kinds}
    for kind in kinds:
        row = medians[kind]
        print(f"{kind:<10} {row['greeting']:>9.3f} {row['probe']:>9.3f} {row['total']:>9.3f}")
    if "qemu-tcg" in medians:
        ratios = {m: medians["qmpd"][m] / medians["qemu-tcg"][m] for m in ("greeting", "probe", "total")}
        print("qmpd/qemu-tcg  " + "  ".join(f"{m} {r:.2f}" for m, r in ratios.items()))
    if args.libvirt:
        times = {kind: statistics.median(values) for kind, values in libvirt_probes(args.reps).items()}
        print(f"virsh domcapabilities with an empty cache (libvirt's whole probe), median of {args.reps}, seconds")
        for kind, value in times.items():
            print(f"{kind:<10} {value:>9.3f}")
        if "qemu" in times:
            print(f"qmpd/qemu  {times['qmpd'] / times['qemu']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
