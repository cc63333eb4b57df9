"""What libvirt 9.0 asks when it probes an emulator and starts a domain, sent to QEMU 7.2 and to qmpd.

The argv are libvirt's (libvirt-observed.md §2 and §3) with the monitor given as ``-qmp`` and TCG
chosen explicitly (this host may have /dev/kvm; qmpd has TCG only).  Where qmpd answers differently
by design the test says why next to the assertion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, start_qemu, start_qmpd
from tests.libvirt_probe import PROBE

pytestmark = pytest.mark.qemu
CPU0 = "/machine/unattached/device[0]"
PROBE_ARGV = ["-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=tcg"]

#: Features Unicorn's CPU cannot run: qmpd's Haswell reports them off and unavailable (qemu-facts §5).
UNICORN_LACKS = {"avx", "avx2", "fma", "f16c"}


def _both(tmp_path: Path, argv: list[str], requests: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    replies: dict[str, list[Any]] = {}
    for name, start in (("qemu", start_qemu), ("qmpd", start_qmpd)):
        server: Server = start(argv, tmp_path, name)
        try:
            with RawClient(server.socket_path, timeout=30) as client:
                client.negotiate()
                replies[name] = [client.execute(command, arguments) for command, arguments in requests]
        finally:
            server.stop()
    return replies["qemu"], replies["qmpd"]


#: Commands of libvirt's probe that qmpd answers exactly as QEMU does (the others differ by design: the tests below).
SAME_COMMANDS = {"query-migrate-capabilities", "query-sev-capabilities", "query-sgx-capabilities", "query-target"}
#: Those requests of the probe and its memory backends' property lists, in libvirt's order.
SAME_IN_PROBE = [
    (command, arguments)
    for command, arguments in PROBE
    if command in SAME_COMMANDS or str(arguments.get("typename", "")).startswith("memory-backend-")
]
#: Around the probe: variants of its requests and what libvirt asks at start, answered as QEMU does.
SAME_AROUND_PROBE: list[tuple[str, dict[str, Any]]] = [
    ("query-command-line-options", {"option": "machine"}),
    ("query-command-line-options", {"option": "smp-opts"}),
    ("query-command-line-options", {"option": "no-such-option"}),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "no-such", "state": True}]}),
    ("migrate-set-capabilities", {"capabilities": [{"capability": "events"}]}),
    ("query-migrate-capabilities", {}),
    ("query-named-block-nodes", {}),
    ("query-named-block-nodes", {"flat": True}),
    ("query-block", {}),
    ("query-iothreads", {}),
    ("query-stats-schemas", {}),
    ("query-stats-schemas", {"provider": "kvm"}),
    ("query-stats", {"target": "vm"}),
    ("query-stats", {"target": "vcpu"}),
    ("query-stats", {"target": "nosuch"}),
    ("query-stats", {"target": "vm", "vcpus": ["/machine/unattached/device[0]"]}),
    ("qom-list-properties", {"typename": "tcg-accel"}),
    ("qom-list-properties", {"typename": "memory-backend-ram"}),
]


def test_probe_answers_equal_qemus(tmp_path: Path) -> None:
    assert len(SAME_IN_PROBE) == 6
    requests = [*SAME_IN_PROBE, *SAME_AROUND_PROBE]
    expected, actual = _both(tmp_path, PROBE_ARGV, requests)
    for request, want, got in zip(requests, expected, actual, strict=True):
        assert got == want, request


@pytest.mark.parametrize("machine_type", ["none-machine", "pc-i440fx-7.2-machine", "pc-q35-7.2-machine"])
def test_machine_properties_are_qemus_for_those_qmpd_has(tmp_path: Path, machine_type: str) -> None:
    expected, actual = _both(tmp_path, PROBE_ARGV, [("qom-list-properties", {"typename": machine_type})])
    ours = actual[0]["return"]
    names = {prop["name"] for prop in ours}
    assert {"type", "usb", "dump-guest-core", "smp", "memory"} <= names
    # QEMU's entries (descriptions included) in QEMU's order, for the properties qmpd's machine has.
    assert ours == [prop for prop in expected[0]["return"] if prop["name"] in names]


def test_command_line_options_are_qemus_for_the_options_qmpd_accepts(tmp_path: Path) -> None:
    requests: list[tuple[str, dict[str, Any]]] = [("query-command-line-options", {})]
    expected, actual = _both(tmp_path, PROBE_ARGV, requests)
    theirs = {entry["option"]: entry for entry in expected[0]["return"]}
    ours = actual[0]["return"]
    names = [entry["option"] for entry in ours]
    assert {"machine", "smp-opts", "chardev", "mon", "accel", "name", "boot-opts", "rtc", "overcommit"} <= set(names)
    assert "drive" not in names and "netdev" not in names, "options qmpd refuses are not advertised"
    for entry in ours:
        assert entry == theirs[entry["option"]]
    # Same relative order as QEMU's list.
    assert names == [name for name in theirs if name in set(names)]


def test_probe_type_lists_hold_what_qmpd_implements(tmp_path: Path) -> None:
    requests: list[tuple[str, dict[str, Any]]] = [
        ("qom-list-types", {"implements": "accel"}),
        ("query-tpm-models", {}),
        ("query-tpm-types", {}),
        ("query-kvm", {}),
    ]
    expected, actual = _both(tmp_path, PROBE_ARGV, requests)
    accels = {entry["name"]: entry for entry in actual[0]["return"]}
    assert accels["tcg-accel"] == {"name": "tcg-accel", "parent": "accel"}
    assert set(accels) == {entry["name"] for entry in expected[0]["return"]} - {"kvm-accel"}, "TCG only"
    # QEMU lists the TPM models and backends it was built with; qmpd has none, and says so.
    assert expected[1]["return"] and actual[1] == {"return": []}
    assert expected[2]["return"] and actual[2] == {"return": []}
    assert actual[3] == {"return": {"enabled": False, "present": False}}


def _libvirt_start_argv(tmp_path: Path) -> list[str]:
    key = tmp_path / "master-key.aes"
    key.write_bytes(bytes(range(32)))
    secret = {"qom-type": "secret", "id": "masterKey0", "format": "raw", "file": str(key)}
    ram = {"qom-type": "memory-backend-ram", "id": "pc.ram", "size": 134217728}
    return [
        "-name", "guest=qmpd-test,debug-threads=on", "-S",
        "-object", json.dumps(secret),
        "-machine", "pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram",
        "-accel", "tcg", "-cpu", "Haswell", "-m", "128",
        "-object", json.dumps(ram),
        "-overcommit", "mem-lock=off", "-smp", "1,maxcpus=4,sockets=2,dies=1,cores=2,threads=1",
        "-uuid", "6c4f2a51-3fb4-4f0e-9a4e-0d0c6f1d1b55", "-display", "none", "-no-user-config", "-nodefaults",
        "-rtc", "base=utc", "-no-shutdown", "-boot", "strict=on",
        "-audiodev", '{"id":"audio1","driver":"none"}', "-msg", "timestamp=on",
    ]  # fmt: skip


def test_start_answers_equal_qemus(tmp_path: Path) -> None:
    requests: list[tuple[str, dict[str, Any]]] = [
        ("query-migrate-capabilities", {}),
        ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}),
        ("query-hotpluggable-cpus", {}),
        ("query-iothreads", {}),
        ("query-named-block-nodes", {"flat": True}),
        ("qom-list", {"path": "/machine/peripheral"}),
        ("query-block", {}),
        ("query-name", {}),
        ("query-status", {}),
        *[("qom-get", {"path": "/machine", "property": name}) for name in ("usb", "dump-guest-core", "acpi")],
        *[("qom-get", {"path": "/machine", "property": name}) for name in ("mem-merge", "suppress-vmdesc")],
    ]
    expected, actual = _both(tmp_path, _libvirt_start_argv(tmp_path), requests)
    for request, want, got in zip(requests, expected, actual, strict=True):
        assert got == want, request


def test_start_chardevs_are_qemus_with_qmpds_socket_path(tmp_path: Path) -> None:
    argv = [*_libvirt_start_argv(tmp_path), "-debugcon", f"file:{tmp_path / 'console.log'}"]
    expected, actual = _both(tmp_path, argv, [("query-chardev", {})])
    ours = json.dumps(actual[0]).replace("qmpd.sock", "qemu.sock")
    assert json.loads(ours) == expected[0]


def test_cpu_properties_libvirt_reads_at_start_are_qemus(tmp_path: Path) -> None:
    """libvirt's qom-list of the boot CPU, then a qom-get of each bool property and unavailable-features."""
    argv = _libvirt_start_argv(tmp_path)
    listing = _both(tmp_path, argv, [("qom-list", {"path": CPU0})])
    names = sorted(p["name"] for p in listing[0][0]["return"] if p["type"] == "bool")
    assert names == sorted(p["name"] for p in listing[1][0]["return"] if p["type"] == "bool")
    assert len(names) > 300
    requests = [("qom-get", {"path": CPU0, "property": name}) for name in [*names, "unavailable-features"]]
    expected, actual = _both(tmp_path, argv, requests)
    differing = {
        name for name, want, got in zip(names, expected, actual, strict=False) if want != got
    }  # zip stops before unavailable-features
    assert differing == UNICORN_LACKS & {name for name in names}
    unavailable_qemu = set(expected[-1]["return"])
    unavailable_qmpd = set(actual[-1]["return"])
    assert unavailable_qmpd == unavailable_qemu | UNICORN_LACKS


@pytest.mark.parametrize("model", ["qemu64", "EPYC", "Dhyana", "Skylake-Server"])
def test_legacy_cache_follows_the_models_cache_descriptors(tmp_path: Path, model: str) -> None:
    argv = ["-S", "-nodefaults", "-machine", "pc", "-cpu", model]
    expected, actual = _both(tmp_path, argv, [("qom-get", {"path": CPU0, "property": "legacy-cache"})])
    assert actual == expected


def test_chardevs_in_qemus_order_with_a_monitor_nobody_uses(tmp_path: Path) -> None:
    """query-chardev lists QEMU's hash-table order of creation; a monitor without a client is disconnected."""
    argv = [
        "-S", "-nodefaults", "-machine", "pc",
        "-qmp", f"unix:{tmp_path / 'idle.sock'},server=on,wait=off",
        "-chardev", "null,id=n0",
        "-debugcon", f"file:{tmp_path / 'console.log'}",
        "-chardev", f"file,id=f0,path={tmp_path / 'f0.log'}",
    ]  # fmt: skip
    expected, actual = _both(tmp_path, argv, [("query-chardev", {})])
    ours = json.loads(json.dumps(actual[0]).replace("qmpd.sock", "qemu.sock"))
    assert ours == expected[0]
    idle = [entry for entry in ours["return"] if entry["label"] == "compat_monitor0"]
    assert idle[0]["filename"].startswith("disconnected:unix:")
