"""libvirt 9.0 runs qmpd as a domain's ``<emulator>`` through its everyday lifecycle: probe, define,
start --paused and resume, plug and unplug, save and restore, managedsave and start, dump, a libvirtd
restart, reboot and shutdown; after each, qmpd answers and has leaked no fd.

A real libvirtd is started as the README's libvirt section describes (root, no systemd, the
configuration in examples/libvirt/, qmpd run as the unprivileged account ``qmpd``), with
examples/libvirt/qmpd-domain.xml and a wrapper that runs this checkout's qmpd.  Everything the test
changes on the host (qemu.conf, the libvirt-qemu and qmpd accounts, the capabilities cache entry, the
domain, the daemon) is put back afterwards.  CI sets QMPD_REQUIRE_LIBVIRT=1 so that a missing libvirt
fails instead of skipping.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, wait_until

REQUIRE = os.environ.get("QMPD_REQUIRE_LIBVIRT") == "1"
URI = "qemu:///system"
DOMAIN = "qmpd-demo"
SOCKET = Path("/run/libvirt/libvirt-sock")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
EXAMPLES = REPO / "examples" / "libvirt"
#: The account examples/libvirt/qemu.conf runs emulators as: one that cannot open /dev/kvm.
EMULATOR_ACCOUNT = "qmpd"


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


def _reachable_by_others(path: Path) -> bool:
    """Whether an account other than root can run ``path`` (every directory on the way searchable)."""
    real = path.resolve()
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents) and bool(
        real.stat().st_mode & stat.S_IXOTH
    )


def _emulator_script() -> str:
    """This checkout's qmpd, run by the interpreter running the tests (the project's venv), as the
    unprivileged emulator account: when that interpreter lives where the account cannot reach it
    (a pyenv under /root), the system's python3 of the same version with the venv's packages."""
    if _reachable_by_others(Path(sys.executable)):
        return f'#!/bin/sh\nexec "{sys.executable}" -m qmpd "$@"\n'
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        _unavailable(f"the emulator account cannot reach {sys.executable} and there is no {system}")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    return f'#!/bin/sh\nPYTHONPATH="{REPO}:{site}" exec "{system}" -m qmpd "$@"\n'


class Host:
    """What the fixture changed, to undo it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.old_qemu_conf: bytes | None = QEMU_CONF.read_bytes() if QEMU_CONF.exists() else None
        self.created_account = False
        self.created_emulator_account = False
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
    # Files the emulator account reads or writes live outside pytest's private (0700) directories.
    work = Path(tempfile.mkdtemp(prefix="qmpd-libvirt-"))
    work.chmod(0o755)
    host = Host(work)
    if _run("getent", "group", "libvirt-qemu", check=False).returncode != 0:
        _run("groupadd", "--system", "libvirt-qemu")
        _run("useradd", "--system", "--no-create-home", "-g", "libvirt-qemu", "libvirt-qemu")
        host.created_account = True
    if _run("getent", "passwd", EMULATOR_ACCOUNT, check=False).returncode != 0:
        _run("useradd", "--system", "--no-create-home", "--user-group", EMULATOR_ACCOUNT)
        host.created_emulator_account = True
    console_dir = work / "console"
    console_dir.mkdir()
    shutil.chown(console_dir, EMULATOR_ACCOUNT, EMULATOR_ACCOUNT)
    log_dir = Path("/var/log/libvirt")
    if not log_dir.exists():
        log_dir.mkdir(parents=True)
        host.created_log_dir = True
    QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
    QEMU_CONF.write_text((EXAMPLES / "qemu.conf").read_text())
    conf = host.conf
    conf.write_text(
        (EXAMPLES / "libvirtd.conf").read_text()
        + 'log_filters = "1:qemu.qemu_capabilities 1:qemu.qemu_monitor 1:qemu.qemu_monitor_json 1:util.command 3:*"\n'
        f'log_outputs = "1:file:{host.work}/libvirtd.log"\n'
    )
    host.emulator.write_text(_emulator_script())
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
        if host.created_emulator_account:
            _run("userdel", EMULATOR_ACCOUNT, check=False)
            _run("groupdel", EMULATOR_ACCOUNT, check=False)
        shutil.rmtree(work, ignore_errors=True)
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


def _qmp(command: str) -> Any:
    return json.loads(virsh("qemu-monitor-command", DOMAIN, json.dumps({"execute": command})).stdout)["return"]


def _pid() -> int:
    return int(Path(f"/run/libvirt/qemu/{DOMAIN}.pid").read_text().split()[0])


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _state() -> str:
    return virsh("domstate", DOMAIN, "--reason", check=False).stdout.strip()


def _counters(count: int) -> list[int]:
    """The firmware's per-CPU counters (0x200000 + 8 x APIC ID)."""
    return [int(word, 16) for word in re.findall(r"0x([0-9a-f]+)", _hmp(f"xp /{count}xg 0x200000"))]


def _cpus() -> list[tuple[str, Any]]:
    """The vCPUs as query-cpus-fast lists them, without thread ids (which change with the process)."""
    return [(cpu["qom-path"], cpu["props"]) for cpu in _qmp("query-cpus-fast")]


def _probes(log: Path) -> int:
    """Capabilities probes libvirtd ran (of any emulator) so far."""
    return log.read_text(errors="replace").count("-machine none")


@dataclass
class Domain:
    """The running domain as a case finds it: its qmpd process, that process's fd count, and the console."""

    debugcon: Path
    pid: int = 0
    fds: int = 0

    def console(self) -> str:
        return self.debugcon.read_text() if self.debugcon.exists() else ""

    def boots(self) -> int:
        return self.console().count("qmpd firmware: booting")

    def healthy(self, status: str = "running", qmp_status: str | None = None) -> None:
        """qmpd answers on libvirt's monitor with the run state libvirt reports."""
        assert _qmp("query-status")["status"] == (qmp_status or status)
        assert _state().startswith(status)
        self.pid = _pid()
        assert "qmpd" in Path(f"/proc/{self.pid}/cmdline").read_bytes().decode(errors="replace")

    def mark(self) -> None:
        """Count the qmpd process's fds before a case."""
        self.fds = _fds(self.pid)

    def no_fd_leaked(self) -> None:
        """The qmpd process holds as many fds as when marked (a restored one as many as the saved one)."""
        wait_until(lambda: _fds(self.pid) <= self.fds, timeout=10)
        assert _fds(self.pid) == self.fds


def test_libvirt_drives_a_qmpd_domain_through_its_lifecycle(libvirt_host: Host) -> None:
    host = libvirt_host
    log = host.work / "libvirtd.log"
    caps = virsh("domcapabilities", "--emulatorbin", str(host.emulator), "--virttype", "qemu", timeout=120).stdout
    assert "<machine>pc-i440fx-7.2</machine>" in caps
    assert re.search(r"<model usable='(yes|no)' vendor='Intel'>Haswell</model>", caps)
    assert "<vcpu max='1024'/>" in caps
    domain = Domain(host.work / "console" / "debugcon.log")

    # define uses the cached capabilities: the emulator account cannot open /dev/kvm, so libvirt's check
    # that an emulator without KVM was probed when KVM was unusable holds (it probed qmpd at every lookup).
    probes, started = _probes(log), time.monotonic()
    virsh("define", str(_domain_xml(host, domain.debugcon)))
    if not _kvm_usable_by(EMULATOR_ACCOUNT):  # where it is (/dev/kvm 0666), libvirt re-probes: README
        assert time.monotonic() - started < 2
        assert _probes(log) == probes, "define probed the emulator again"

    # start --paused, then resume: the firmware boots only once resumed.
    virsh("start", DOMAIN, "--paused", timeout=120)
    domain.healthy("paused", "prelaunch")  # as QEMU under -S before its first cont
    assert Path(f"/proc/{domain.pid}/status").read_text().count(f"Uid:\t{_uid(EMULATOR_ACCOUNT)}") == 1
    assert domain.boots() == 0
    domain.mark()
    virsh("resume", DOMAIN)
    wait_until(lambda: "CPU 0 (APIC ID 0) online" in domain.console())
    domain.healthy()
    domain.no_fd_leaked()

    # Plug: libvirt's device_add for slots (socket 0, core 1) and (socket 1, core 0); the guest onlines them.
    virsh("setvcpus", DOMAIN, "3", "--live")
    wait_until(
        lambda: "CPU 1 (APIC ID 1) online" in domain.console() and "CPU 2 (APIC ID 2) online" in domain.console()
    )
    assert _live_vcpus() == 3
    virsh("setvcpu", DOMAIN, "3", "--enable", "--live")
    wait_until(lambda: "CPU 3 (APIC ID 3) online" in domain.console())
    assert _live_vcpus() == 4
    assert all(_counters(4)), _counters(4)

    # Unplug: device_del, the firmware ejects, DEVICE_DELETED arrives; no 5 s libvirt timeout.
    started = time.monotonic()
    virsh("setvcpus", DOMAIN, "2", "--live")
    assert time.monotonic() - started < 5
    assert _live_vcpus() == 2
    assert domain.console().count("parked") == 2

    # vcpuinfo and info cpus show qmpd's real vCPU threads.
    thread_ids = [int(tid) for tid in re.findall(r"thread_id=(\d+)", _hmp("info cpus"))]
    assert len(thread_ids) == 2
    for tid in thread_ids:
        assert Path(f"/proc/{domain.pid}/task/{tid}/comm").read_text().startswith("CPU ")
    assert virsh("vcpuinfo", DOMAIN).stdout.count("VCPU:") == 2
    types = virsh(
        "qemu-monitor-command", DOMAIN, '{"execute":"qom-list-types","arguments":{"implements":"x86_64-cpu"}}'
    ).stdout
    assert '"name":"Haswell-x86_64-cpu"' in types.replace(" ", "")
    domain.healthy()
    domain.no_fd_leaked()

    # save + restore: libvirt's stream through a pipe into its own file format; the restore starts qmpd with
    # -incoming defer, device_adds the hot-plugged vCPUs, then migrate-incoming fd:N.
    virsh("setvcpus", DOMAIN, "3", "--live")
    wait_until(lambda: all(_counters(3)))
    _saved_and_restored(
        domain, ["save", DOMAIN, str(host.work / "domain.save")], ["restore", str(host.work / "domain.save")]
    )

    # managedsave + start: the same, through libvirt's managed save file.
    _saved_and_restored(domain, ["managedsave", DOMAIN], ["start", DOMAIN])

    # dump --memory-only --format elf: an ELF core readelf accepts, with a note per vCPU.
    domain.mark()
    core = host.work / "domain.core"
    virsh("dump", DOMAIN, str(core), "--memory-only", "--format", "elf", timeout=120)
    readelf = _run("readelf", "-a", "-W", str(core))
    assert "Core file" in readelf.stdout and not readelf.stderr, readelf.stderr
    assert readelf.stdout.count("NT_PRSTATUS") == _live_vcpus() == 3
    domain.healthy()
    domain.no_fd_leaked()
    core.unlink()

    # A libvirtd restart: libvirt reconnects to the running domain's monitor (qmp_capabilities, then
    # query-status, query-hotpluggable-cpus, query-cpus-fast, query-block, query-chardev, query-jobs ...) and
    # keeps the domain; it used to give the domain up ("shut off (daemon)") on a refused query-jobs.
    pid = domain.pid
    domain.mark()
    host.stop_libvirtd()
    host.start_libvirtd()
    wait_until(lambda: _state().startswith("running"), timeout=30)
    domain.healthy()
    assert domain.pid == pid
    virsh("setvcpus", DOMAIN, "3", "--live")
    assert _live_vcpus() == 3
    virsh("setvcpus", DOMAIN, "2", "--live")
    assert _live_vcpus() == 2
    domain.no_fd_leaked()

    # inject-nmi and send-key: the firmware reports each NMI per CPU and echoes the keyboard's bytes.
    _nmi_and_keys(domain)

    # reboot (ACPI): system_powerdown, the firmware enters S5, libvirt's fake reboot (system_reset + cont).
    boots = domain.boots()
    domain.mark()
    virsh("reboot", DOMAIN, "--mode", "acpi")
    wait_until(lambda: domain.boots() == boots + 1, timeout=30)
    wait_until(lambda: _state().startswith("running"), timeout=30)
    assert domain.boots() == boots + 1 == 2, "the firmware's banner twice: at start and after the reboot"
    assert _pid() == pid
    domain.healthy()
    domain.no_fd_leaked()

    # shutdown (ACPI): the same power button; libvirt ends the domain once the guest is off.
    virsh("shutdown", DOMAIN, "--mode", "acpi")
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    wait_until(lambda: "shut off" in _state(), timeout=30)
    assert _state() == "shut off (shutdown)"
    virsh("undefine", DOMAIN, "--managed-save")


def _nmi_and_keys(domain: Domain) -> None:
    """virsh inject-nmi: one "NMI" line per vCPU; virsh send-key KEY_A: set 1 make and break codes."""
    domain.mark()
    live, nmis = _live_vcpus(), domain.console().count(") NMI")
    virsh("inject-nmi", DOMAIN)
    wait_until(lambda: domain.console().count(") NMI") == nmis + live)
    assert all(f"CPU {n} (APIC ID {n}) NMI" in domain.console() for n in range(live))
    virsh("send-key", DOMAIN, "KEY_A")
    wait_until(lambda: "kbd 1e" in domain.console() and "kbd 9e" in domain.console())
    domain.healthy()
    domain.no_fd_leaked()


def _kvm_usable_by(account: str) -> bool:
    """libvirt's test: can ``account`` open /dev/kvm for reading and writing?"""
    if not Path("/dev/kvm").exists():
        return False
    return (
        _run("runuser", "-u", account, "--", "test", "-r", "/dev/kvm", "-a", "-w", "/dev/kvm", check=False).returncode
        == 0
    )


def _uid(account: str) -> int:
    return int(_run("id", "-u", account).stdout)


def _saved_and_restored(domain: Domain, save: list[str], restore: list[str]) -> None:
    """Save the running domain and bring it back: same vCPUs, counters going on, no boot, unplug works."""
    domain.mark()
    cpus, boots = _cpus(), domain.boots()
    live = _live_vcpus()
    old = domain.pid
    before = _counters(live)
    virsh(*save, timeout=120)
    assert "shut off (saved)" in _state()
    assert not Path(f"/proc/{old}").exists()
    virsh(*restore, timeout=120)
    domain.healthy()
    assert domain.pid != old
    assert _cpus() == cpus and _live_vcpus() == live
    wait_until(lambda: all(now > then for now, then in zip(_counters(live), before, strict=True)))
    after = _counters(live)
    assert all(then < now < then + 10**10 for now, then in zip(after, before, strict=True)), "went on"
    assert domain.boots() == boots, "restored, not booted again"
    domain.no_fd_leaked()  # the restored qmpd holds as many as the saved one did
    parked = domain.console().count("parked")
    virsh("setvcpus", DOMAIN, str(live - 1), "--live")
    assert _live_vcpus() == live - 1
    assert domain.console().count("parked") == parked + 1
    domain.no_fd_leaked()
    virsh("setvcpus", DOMAIN, str(live), "--live")
    assert _live_vcpus() == live
    domain.healthy()


def test_libvirt_meets_a_guest_that_ignores_and_refuses_unplug(libvirt_host: Host) -> None:
    """qmpd-guest-policy (README "Guest hot-plug policy") given on the domain's command line: libvirt's
    unplug times out against a guest that ignores it and against one that refuses it (libvirt 9.0 turns
    a refusing eject _OST into an error for DIMMs only; for a CPU it waits out its 5 s, as its log shows),
    and succeeds once the policy says eject; the domain stays running throughout."""
    host = libvirt_host
    domain = Domain(host.work / "console" / "debugcon-policy.log")  # the emulator account writes there

    def policy(name: str, value: object) -> None:
        command = {"execute": "qom-set", "arguments": {"path": "/objects/gp", "property": name, "value": value}}
        assert '"return":{}' in virsh("qemu-monitor-command", DOMAIN, json.dumps(command)).stdout.replace(" ", "")

    xml = _domain_xml(host, domain.debugcon)
    object_arg = "<qemu:arg value='-object'/><qemu:arg value='qmpd-guest-policy,id=gp,on-unplug=ignore'/>"
    xml.write_text(xml.read_text().replace("</qemu:commandline>", f"{object_arg}</qemu:commandline>"))
    virsh("define", str(xml))
    try:
        virsh("start", DOMAIN, timeout=120)
        wait_until(lambda: "CPU 0 (APIC ID 0) online" in domain.console())
        domain.healthy()
        virsh("setvcpus", DOMAIN, "2", "--live")
        assert _live_vcpus() == 2
        started = time.monotonic()
        ignored = virsh("setvcpus", DOMAIN, "1", "--live", check=False)
        assert ignored.returncode != 0 and "timed out" in ignored.stderr, ignored.stderr
        assert time.monotonic() - started >= 5
        assert _live_vcpus() == 2
        policy("on-unplug", "refuse")
        policy("ost-status", 0x82)  # "device busy", one libvirt would take as a refusal for a DIMM
        refused = virsh("setvcpus", DOMAIN, "1", "--live", check=False)
        assert refused.returncode != 0 and "timed out" in refused.stderr, refused.stderr
        assert _live_vcpus() == 2
        assert {"device": "vcpu1", "slot": "1", "slot-type": "CPU", "source": 3, "status": 0x82} in _qmp(
            "query-acpi-ospm-status"
        )
        policy("on-unplug", "eject")
        virsh("setvcpus", DOMAIN, "1", "--live")
        assert _live_vcpus() == 1
        domain.healthy()
        assert "CPU 1 (APIC ID 1) unplug refused (guest policy)" in domain.console()
    finally:
        virsh("destroy", DOMAIN, check=False)
        virsh("undefine", DOMAIN, check=False)
