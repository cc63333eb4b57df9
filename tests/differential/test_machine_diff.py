"""The machine core against qemu-system-x86_64 7.2 with the same argv: QOM, CPUs, topology.

Where qmpd differs by design it is said next to the assertion: Unicorn lacks
AVX/AVX2/FMA/F16C (so those features read false and are unavailable), qmpd
allows 1024 CPU slots (QEMU 255/288), and qmpd's CPUs have no memory-region
children.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import QEMU_BINARY, REPO, RawClient, Server, qmpd_command, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
CPU0 = "/machine/unattached/device[0]"


def ask(server: Server, requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    with RawClient(server.socket_path, timeout=30) as client:
        client.negotiate()
        return [client.execute(name, args) for name, args in requests]


def both(tmp_path: Path, argv: list[str], requests: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    qemu = start_qemu(argv, tmp_path, "qemu")
    qmpd = start_qmpd(argv, tmp_path, "qmpd")
    try:
        return ask(qemu, requests), ask(qmpd, requests)
    finally:
        qemu.stop()
        qmpd.stop()


def _without_thread_ids(reply: dict[str, Any]) -> dict[str, Any]:
    if isinstance(reply.get("return"), list):
        return {"return": [{k: v for k, v in e.items() if k != "thread-id"} for e in reply["return"]]}
    return reply


SMP_VARIANTS = [
    ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=2,cores=2,threads=2,maxcpus=8"],
    ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,maxcpus=4"],
    ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=2,cores=3,threads=1,maxcpus=6"],
    ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=3,cores=1,threads=3,maxcpus=9"],
    ["-machine", "pc", "-cpu", "Haswell", "-smp", "1,sockets=1,dies=2,cores=2,threads=2,maxcpus=8"],
    ["-machine", "pc", "-cpu", "Haswell", "-smp", "3"],
    ["-machine", "pc", "-cpu", "Haswell", "-smp", "2,sockets=1,dies=2,cores=1,threads=1"],
    ["-machine", "q35", "-cpu", "qemu64", "-smp", "2,sockets=4,cores=1,threads=1,maxcpus=4"],
    ["-machine", "pc"],
]


@pytest.mark.parametrize("argv", SMP_VARIANTS, ids=[" ".join(v) for v in SMP_VARIANTS])
def test_cpu_slots_and_cpus(tmp_path: Path, argv: list[str]) -> None:
    requests = [
        ("query-hotpluggable-cpus", {}),
        ("query-cpus-fast", {}),
        ("qom-get", {"path": "/machine", "property": "smp"}),
    ]
    expected, actual = both(tmp_path, ["-S", "-nodefaults", *argv], requests)
    assert actual[0] == expected[0]
    assert _without_thread_ids(actual[1]) == _without_thread_ids(expected[1])
    assert actual[2] == expected[2]


def test_machine_none_has_no_cpus(tmp_path: Path) -> None:
    requests = [("query-cpus-fast", {}), ("query-hotpluggable-cpus", {})]
    expected, actual = both(tmp_path, ["-S", "-nodefaults", "-machine", "none"], requests)
    assert actual == expected


PATHS = ["/", "/machine/peripheral", "/machine/peripheral-anon", "peripheral", "", "/no/such/path", "device[0]/lapic"]


def test_qom_paths(tmp_path: Path) -> None:
    requests = [("qom-list", {"path": path}) for path in PATHS]
    requests += [
        ("qom-get", {"path": p, "property": "type"}) for p in ["machine", "//machine", "/machine/", "device[0]"]
    ]
    expected, actual = both(tmp_path, ["-S", "-machine", "pc", "-cpu", "Haswell"], requests)
    for request, want, got in zip(requests, expected, actual, strict=True):
        if request[1].get("path") == "/":
            ours = [p["name"] for p in got["return"]]
            assert ours == [p["name"] for p in want["return"] if p["name"] in ours]
            assert set(ours) == {"type", "objects", "machine", "chardevs"}, "no audio backend object"
            continue
        if request[1].get("path") == "device[0]/lapic":
            names = {p["name"] for p in got["return"]}
            assert names <= {p["name"] for p in want["return"]}, "lapic properties are QEMU's"
            continue
        assert got == want, request


def test_boot_cpu_properties_have_qemus_names_and_types(tmp_path: Path) -> None:
    expected, actual = both(tmp_path, ["-S", "-machine", "pc", "-cpu", "Haswell"], [("qom-list", {"path": CPU0})])
    theirs = {p["name"]: p["type"] for p in expected[0]["return"]}
    ours = {p["name"]: p["type"] for p in actual[0]["return"]}
    assert set(theirs) - set(ours) == {"memory[0]", "memory[1]", "smram[0]"}, "no memory-region children by design"
    assert set(ours) <= set(theirs)
    assert {name: ours[name] for name in ours} == {name: theirs[name] for name in ours}
    # QEMU lists children among its hash-ordered instance properties; compare the order of the rest.
    order = [p["name"] for p in expected[0]["return"] if p["name"] in ours and not p["type"].startswith("child<")]
    assert [p["name"] for p in actual[0]["return"] if not p["type"].startswith("child<")] == order


GETS = [
    "type", "socket-id", "core-id", "thread-id", "die-id", "node-id", "apic-id", "family", "model", "stepping",
    "level", "xlevel", "vendor", "model-id", "realized", "hotplugged", "hotpluggable", "avx512f", "hle", "x2apic",
    "sse4.1", "sse4-1", "sse4_1", "pni", "sse3", "parent_bus", "crash-information", "no-such-prop", "legacy-memory",
    "min-level", "min-xlevel", "phys-bits", "ucode-rev", "start-powered-off", "level-func7", "xlevel2",
]  # fmt: skip


def test_qom_get_on_a_cpu(tmp_path: Path) -> None:
    requests = [("qom-get", {"path": CPU0, "property": name}) for name in GETS]
    requests.append(("qom-get", {"path": CPU0, "property": "unavailable-features"}))
    expected, actual = both(tmp_path, ["-S", "-machine", "pc", "-cpu", "Haswell"], requests)
    for request, want, got in zip(requests[:-1], expected, actual, strict=False):
        assert got == want, request
    # Unicorn also lacks AVX, AVX2, FMA and F16C: QEMU's list, and those.
    assert set(expected[-1]["return"]) <= set(actual[-1]["return"])
    assert set(actual[-1]["return"]) - set(expected[-1]["return"]) == {"avx", "avx2", "fma", "f16c"}


SETS: list[tuple[str, Any]] = [
    ("level", 11), ("xlevel", 0), ("avx2", False), ("socket-id", 1), ("apic-id", 3), ("sse4-1", False),
    ("family", 15), ("model", 3), ("stepping", 2), ("vendor", "AuthenticAMD"), ("model-id", "foo"),
    ("start-powered-off", True), ("realized", True), ("type", "x"), ("hotplugged", True), ("unavailable-features", []),
    ("family", 1000), ("model", -1), ("stepping", 16), ("vendor", "short"), ("vendor", 1), ("family", "6"),
    ("start-powered-off", "on"), ("model-id", "x" * 60), ("nosuch", 1), ("tsc-frequency", -1),
]  # fmt: skip


def test_qom_set_on_a_cpu(tmp_path: Path) -> None:
    requests: list[tuple[str, dict[str, Any]]] = []
    for name, value in SETS:
        requests.append(("qom-set", {"path": CPU0, "property": name, "value": value}))
        requests.append(("qom-get", {"path": CPU0, "property": name}))
    expected, actual = both(tmp_path, ["-S", "-machine", "pc", "-cpu", "Haswell"], requests)
    for request, want, got in zip(requests, expected, actual, strict=True):
        if request[1]["property"] == "avx2" and request[0] == "qom-get":
            continue  # true under QEMU 7.2's TCG, absent from Unicorn
        if request[1]["property"] == "unavailable-features" and request[0] == "qom-get":
            continue
        assert got == want, request


def test_cpu_types_and_their_parents(tmp_path: Path) -> None:
    requests = [
        ("qom-list-types", {"implements": "x86_64-cpu"}),
        ("qom-list-types", {"implements": "x86_64-cpu", "abstract": True}),
        ("qom-list-types", {"implements": "Haswell-x86_64-cpu"}),
        ("qom-list-types", {"implements": "no-such-type"}),
        ("qom-list-types", {"implements": "tcg-accel"}),
    ]
    expected, actual = both(tmp_path, ["-S", "-machine", "none"], requests)
    theirs = {t["name"]: t for t in expected[0]["return"]}
    ours = {t["name"]: t for t in actual[0]["return"]}
    common = set(theirs) & set(ours)
    assert len(common) >= 70, "Unicorn's models and their -v1 names"
    assert {n: ours[n] for n in common} == {n: theirs[n] for n in common}
    assert set(ours) - set(theirs) <= {"Icelake-Client-x86_64-cpu", "Icelake-Client-v1-x86_64-cpu"}
    abstract = [t for t in actual[1]["return"] if t.get("abstract")]
    assert abstract == [t for t in expected[1]["return"] if t.get("abstract")]
    assert actual[2:] == expected[2:]


def test_type_and_property_listing_errors_and_defaults(tmp_path: Path) -> None:
    requests = [
        ("device-list-properties", {"typename": "Haswell-x86_64-cpu"}),
        ("device-list-properties", {"typename": "x86_64-cpu"}),
        ("device-list-properties", {"typename": "no-such-type"}),
        ("device-list-properties", {"typename": "container"}),
        ("qom-list-properties", {"typename": "no-such-type"}),
        ("qom-list-properties", {"typename": "device"}),
        ("qom-list-properties", {"typename": "cpu"}),
    ]
    expected, actual = both(tmp_path, ["-S", "-machine", "none"], requests)
    theirs = {p["name"]: p for p in expected[0]["return"]}
    ours = {p["name"]: p for p in actual[0]["return"]}
    assert set(ours) == set(theirs)
    differ = {name for name in ours if ours[name] != theirs[name]}
    assert differ == set(), differ
    assert actual[1:] == expected[1:]


def test_cpu_definitions_and_expansion(tmp_path: Path) -> None:
    requests = [
        ("query-cpu-definitions", {}),
        ("query-cpu-model-expansion", {"type": "static", "model": {"name": "Haswell"}}),
        ("query-cpu-model-expansion", {"type": "full", "model": {"name": "Haswell"}}),
        ("query-cpu-model-expansion", {"type": "full", "model": {"name": "nosuch"}}),
        ("query-cpu-model-expansion", {"type": "other", "model": {"name": "Haswell"}}),
        (
            "query-cpu-model-expansion",
            {"type": "full", "model": {"name": "Haswell", "props": {"level": 20, "family": 15}}},
        ),
    ]
    expected, actual = both(tmp_path, ["-S", "-machine", "none"], requests)
    theirs = {d["name"]: d for d in expected[0]["return"]}
    ours = {d["name"]: d for d in actual[0]["return"]}
    for name in ("Haswell", "Haswell-v1", "qemu64", "486", "EPYC-Rome", "max", "base"):
        assert set(ours[name]) == set(theirs[name]), name
        for key in ("typename", "static", "migration-safe", "deprecated", "alias-of"):
            assert ours[name].get(key) == theirs[name].get(key), (name, key)
        assert set(theirs[name]["unavailable-features"]) <= set(ours[name]["unavailable-features"]) | {"kvm"}
    for index in (1, 2, 5):
        want, got = expected[index]["return"]["model"], actual[index]["return"]["model"]
        assert got["name"] == want["name"]
        assert set(got["props"]) == set(want["props"])
        for key in (
            "family",
            "model",
            "stepping",
            "vendor",
            "model-id",
            "level",
            "min-level",
            "xlevel",
            "hle",
            "sse4.2",
        ):
            if key in want["props"]:
                assert got["props"][key] == want["props"][key], (index, key)
    assert actual[3:5] == expected[3:5]


def test_hmp_info_cpus(tmp_path: Path) -> None:
    requests = [("human-monitor-command", {"command-line": "info cpus"})]
    expected, actual = both(tmp_path, ["-S", "-machine", "pc", "-smp", "2"], requests)
    strip = lambda text: "".join(line.split("thread_id=")[0] for line in text.split("\r\n"))  # noqa: E731
    assert strip(actual[0]["return"]) == strip(expected[0]["return"])


SMP_ERRORS = [
    "1,sockets=2,cores=2,threads=2,maxcpus=7",
    "8,maxcpus=4",
    "foo",
    "2,sockets=1,cores=1,threads=1",
    "0",
    "4,sockets=0",
    "1,clusters=2",
    "1,foo=2",
]


@pytest.mark.parametrize("smp", SMP_ERRORS)
def test_smp_errors(tmp_path: Path, smp: str) -> None:
    outputs = []
    assert QEMU_BINARY is not None
    for binary in ([QEMU_BINARY, "-nographic"], qmpd_command()):
        argv = [
            *binary,
            "-machine",
            "pc",
            "-S",
            "-nodefaults",
            "-smp",
            smp,
            "-qmp",
            f"unix:{tmp_path}/s.sock,server=on,wait=off",
        ]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=5, env={"PYTHONPATH": str(REPO)})
            stderr, code = result.stderr, result.returncode
        except subprocess.TimeoutExpired as timeout:
            stderr, code = (timeout.stderr or b"").decode(), None
        lines = [
            line.split(": ", 1)[1] for line in stderr.splitlines() if ": " in line and "TCG doesn't support" not in line
        ]
        outputs.append((code, [line for line in lines if not line.startswith("terminating")]))
    assert outputs[1] == outputs[0]


def test_json_is_stable() -> None:
    json.dumps(SMP_VARIANTS)


HMP_LINES = [
    "info hotpluggable-cpus",
    "qom-list /machine/peripheral",
    "qom-get /machine/unattached/device[0] apic-id",
    "qom-get /machine/unattached/device[0] vendor",
    "qom-get /machine smp",
    "qom-get /machine/unattached/device[0] nosuch",
    "qom-get /nosuch x",
    "qom-set /machine/unattached/device[0] family 15",
    "qom-set /machine/unattached/device[0] level 13",
    "qom-list",
    "qom-list /nosuch",
    "cpu 1",
    "cpu 5",
    "cpu",
    "help cpu",
    "help info cpus",
]


def test_hmp_machine_commands(tmp_path: Path) -> None:
    requests = [("human-monitor-command", {"command-line": line}) for line in HMP_LINES]
    requests.append(("human-monitor-command", {"command-line": "info cpus", "cpu-index": 1}))
    argv = ["-S", "-machine", "pc", "-cpu", "Haswell", "-smp", "2,sockets=4,cores=1,threads=1,maxcpus=4"]
    expected, actual = both(tmp_path, argv, requests)
    for request, want, got in zip(requests[:-1], expected, actual, strict=False):
        assert got == want, request
    marker = lambda text: [line[:9] for line in text.split("\r\n")]  # noqa: E731
    assert marker(actual[-1]["return"]) == marker(expected[-1]["return"])


MEMORY_HMP = [
    "xp /4xg 0x300000", "xp /2c 0x300000", "xp /3o 0x300000", "xp /5d 0x300000", "xp /2ub 0x300000",
    "xp /2hx 0x7fffffc", "xp /3xb 0x7fffffe", "xp /2xg 0x8000000", "x /0xg 0", "xp /2xL 0x300000",
    "xp /100xb 0x300000", "x /2xg -8", "xp /2xg -8", "x /4xw 0x300000", "xp 0x300000", "xp /q 0", "xp /x", "x",
    "x /3xg 0x300000", "info registers x", "info registers -b", "info registers 5", "help x", "help xp",
    "help info registers", "help memsave", "help pmemsave", "memsave 0 16 /tmp/not-a-number",
    "memsave 0x7fffff8 16 m", "pmemsave 0 16",
]  # fmt: skip


def test_memory_inspection(tmp_path: Path) -> None:
    """x/xp layout and errors, memsave/pmemsave errors, on RAM neither guest has touched (-S)."""
    requests: list[tuple[str, dict[str, Any]]] = [
        ("human-monitor-command", {"command-line": line}) for line in MEMORY_HMP
    ]
    requests += [
        ("memsave", {"val": 0, "size": 16, "filename": "x", "cpu-index": 5}),
        ("memsave", {"val": 0x7FFFFF8, "size": 16, "filename": "x"}),
        ("memsave", {"val": 0, "size": 16}),
        ("pmemsave", {"val": "0", "size": 16, "filename": "x"}),
    ]
    expected, actual = both(tmp_path, ["-machine", "pc", "-S", "-nodefaults"], requests)
    for line, mine, qemus in zip(MEMORY_HMP + ["memsave"] * 4, actual, expected, strict=True):
        assert mine == qemus, line
