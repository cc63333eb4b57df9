"""libvirt 9.0 runs qmpd as a domain's ``<emulator>``: probe, define, start, plug, unplug, destroy.

A real libvirtd is started as the README's libvirt section describes (root, no systemd, the
configuration in examples/libvirt/), with examples/libvirt/qmpd-domain.xml and a wrapper that runs
this checkout's qmpd.  Everything the test changes on the host (qemu.conf, the libvirt-qemu
account, the capabilities cache entry, the domain, the daemon) is put back afterwards.  CI sets
QMPD_REQUIRE_LIBVIRT=1 so that a missing libvirt fails instead of skipping.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, wait_until

REQUIRE = os.environ.get("QMPD_REQUIRE_LIBVIRT") == "1"
URI = "qemu:///system"
DOMAIN = "qmpd-demo"
SOCKET = Path("/run/libvirt/libvirt-sock")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
EXAMPLES = REPO / "examples" / "libvirt"


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"libvirt test required (QMPD_REQUIRE_LIBVIRT=1): {reason}")
    pytest.skip(reason)


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: rc={result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def virsh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return _run("virsh", "-c", URI, *args, check=check, timeout=timeout)


class Host:
    """What the fixture changed, to undo it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.old_qemu_conf: bytes | None = QEMU_CONF.read_bytes() if QEMU_CONF.exists() else None
        self.created_account = False
        self.created_log_dir = False
        self.created_run_dir = not Path("/run/libvirt").exists()
        self.pidfile = work / "libvirtd.pid"
        self.emulator = work / "qmpd-emulator.sh"
        self.conf = work / "libvirtd.conf"

    def start_libvirtd(self) -> None:
        daemon = "/usr/sbin/libvirtd" if Path("/usr/sbin/libvirtd").exists() else "libvirtd"
        _run(daemon, "-d", "-f", str(self.conf), "-p", str(self.pidfile))
        wait_until(lambda: SOCKET.exists() and self.pidfile.exists(), timeout=30)

    def stop_libvirtd(self) -> None:
        """SIGTERM, as a service manager stops it: running domains are left running."""
        if self.pidfile.exists():
            pid = int(self.pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30)


@pytest.fixture(scope="module")
def libvirt_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    if os.geteuid() != 0:
        _unavailable("libvirtd as configured here needs root")
    if shutil.which("libvirtd") is None and not Path("/usr/sbin/libvirtd").exists():
        _unavailable("libvirtd is not installed")
    if shutil.which("virsh") is None:
        _unavailable("virsh is not installed")
    if SOCKET.exists() and _run("pgrep", "-x", "libvirtd", check=False).returncode == 0:
        _unavailable("a libvirtd is already running on this host; not touching it")
    host = Host(tmp_path_factory.mktemp("libvirt"))
    if _run("getent", "group", "libvirt-qemu", check=False).returncode != 0:
        _run("groupadd", "--system", "libvirt-qemu")
        _run("useradd", "--system", "--no-create-home", "-g", "libvirt-qemu", "libvirt-qemu")
        host.created_account = True
    log_dir = Path("/var/log/libvirt")
    if not log_dir.exists():
        log_dir.mkdir(parents=True)
        host.created_log_dir = True
    QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
    QEMU_CONF.write_text((EXAMPLES / "qemu.conf").read_text())
    conf = host.conf
    conf.write_text(
        (EXAMPLES / "libvirtd.conf").read_text()
        + 'log_filters = "1:qemu.qemu_monitor 1:qemu.qemu_monitor_json 1:util.command 3:*"\n'
        f'log_outputs = "1:file:{host.work}/libvirtd.log"\n'
    )
    # The emulator: this checkout's qmpd, run by the interpreter running the tests (the project's venv).
    host.emulator.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m qmpd "$@"\n')
    host.emulator.chmod(0o755)
    try:
        host.start_libvirtd()
        yield host
    finally:
        virsh("destroy", DOMAIN, check=False)
        virsh("undefine", DOMAIN, check=False)
        host.stop_libvirtd()
        cache = CAPS_CACHE / f"{hashlib.sha256(str(host.emulator).encode()).hexdigest()}.xml"
        cache.unlink(missing_ok=True)
        for log in (Path(f"/var/log/libvirt/qemu/{DOMAIN}.log"),):
            log.unlink(missing_ok=True)
        if host.old_qemu_conf is None:
            QEMU_CONF.unlink(missing_ok=True)
        else:
            QEMU_CONF.write_bytes(host.old_qemu_conf)
        if host.created_account:
            _run("userdel", "libvirt-qemu", check=False)
            _run("groupdel", "libvirt-qemu", check=False)
        if host.created_log_dir:
            shutil.rmtree("/var/log/libvirt", ignore_errors=True)
        if host.created_run_dir:
            shutil.rmtree("/run/libvirt", ignore_errors=True)


def _domain_xml(host: Host, debugcon: Path) -> Path:
    text = (EXAMPLES / "qmpd-domain.xml").read_text()
    text = text.replace("@EMULATOR@", str(host.emulator))
    text = text.replace("@FIRMWARE@", str(REPO / "qmpd" / "firmware" / "qmpd-firmware.bin"))
    text = text.replace("@DEBUGCON@", str(debugcon))
    path = host.work / "domain.xml"
    path.write_text(text)
    return path


def _live_vcpus() -> int:
    match = re.search(r"current\s+live\s+(\d+)", virsh("vcpucount", DOMAIN).stdout)
    assert match
    return int(match.group(1))


def _hmp(line: str) -> str:
    return virsh("qemu-monitor-command", DOMAIN, "--hmp", line).stdout


def test_libvirt_probes_starts_plugs_unplugs_and_destroys_qmpd(libvirt_host: Host) -> None:
    host = libvirt_host
    caps = virsh("domcapabilities", "--emulatorbin", str(host.emulator), "--virttype", "qemu", timeout=120).stdout
    assert "<machine>pc-i440fx-7.2</machine>" in caps
    assert re.search(r"<model usable='(yes|no)' vendor='Intel'>Haswell</model>", caps)
    assert "<vcpu max='1024'/>" in caps
    debugcon = host.work / "debugcon.log"

    def console() -> str:
        return debugcon.read_text() if debugcon.exists() else ""

    virsh("define", str(_domain_xml(host, debugcon)))
    virsh("start", DOMAIN, timeout=120)
    wait_until(lambda: "CPU 0 (APIC ID 0) online" in console())
    pid = int(Path(f"/run/libvirt/qemu/{DOMAIN}.pid").read_text().split()[0])
    assert "qmpd" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")

    # Plug: libvirt's device_add for slots (socket 0, core 1) and (socket 1, core 0); the guest onlines them.
    virsh("setvcpus", DOMAIN, "3", "--live")
    wait_until(lambda: "CPU 1 (APIC ID 1) online" in console() and "CPU 2 (APIC ID 2) online" in console())
    assert _live_vcpus() == 3
    virsh("setvcpu", DOMAIN, "3", "--enable", "--live")
    wait_until(lambda: "CPU 3 (APIC ID 3) online" in console())
    assert _live_vcpus() == 4
    counters = [int(word, 16) for word in re.findall(r"0x([0-9a-f]+)", _hmp("xp /4xg 0x200000"))]
    assert len(counters) == 4 and all(counters), counters

    # Unplug: device_del, the firmware ejects, DEVICE_DELETED arrives; no 5 s libvirt timeout.
    started = time.monotonic()
    virsh("setvcpus", DOMAIN, "2", "--live")
    assert time.monotonic() - started < 5
    assert _live_vcpus() == 2
    assert console().count("parked") == 2

    # vcpuinfo and info cpus show qmpd's real vCPU threads.
    info = _hmp("info cpus")
    thread_ids = [int(tid) for tid in re.findall(r"thread_id=(\d+)", info)]
    assert len(thread_ids) == 2
    for tid in thread_ids:
        assert Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith("CPU ")
    assert virsh("vcpuinfo", DOMAIN).stdout.count("VCPU:") == 2
    types = virsh(
        "qemu-monitor-command", DOMAIN, '{"execute":"qom-list-types","arguments":{"implements":"x86_64-cpu"}}'
    ).stdout
    assert '"name":"Haswell-x86_64-cpu"' in types.replace(" ", "")

    # A libvirtd restart: libvirt reconnects to the running domain's monitor (qmp_capabilities, then
    # query-status, query-hotpluggable-cpus, query-cpus-fast, query-block, query-chardev, query-jobs ...) and
    # keeps the domain; it used to give the domain up ("shut off (daemon)") on a refused query-jobs.
    host.stop_libvirtd()
    host.start_libvirtd()
    wait_until(lambda: virsh("domstate", DOMAIN, check=False).stdout.strip() == "running", timeout=30)
    assert Path(f"/proc/{pid}").exists()
    virsh("setvcpus", DOMAIN, "3", "--live")
    assert _live_vcpus() == 3
    virsh("setvcpus", DOMAIN, "2", "--live")
    assert _live_vcpus() == 2

    # reboot (ACPI): system_powerdown, the firmware enters S5, libvirt's fake reboot (system_reset + cont).
    boots = console().count("qmpd firmware: booting")
    virsh("reboot", DOMAIN, "--mode", "acpi")
    wait_until(lambda: console().count("qmpd firmware: booting") == boots + 1, timeout=30)
    wait_until(lambda: virsh("domstate", DOMAIN, check=False).stdout.strip() == "running", timeout=30)
    assert Path(f"/proc/{pid}").exists()

    # shutdown (ACPI): the same power button; libvirt ends the domain once the guest is off.
    virsh("shutdown", DOMAIN, "--mode", "acpi")
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    wait_until(lambda: "shut off" in virsh("domstate", DOMAIN, "--reason", check=False).stdout, timeout=30)
    assert "(shutdown)" in virsh("domstate", DOMAIN, "--reason").stdout
    virsh("undefine", DOMAIN)
