"""Ports of QEMU's own qtests, run against qmpd over a real socket.

qom-test (walk the whole tree), device-introspect-test (type listings stay
consistent and listing properties changes nothing), test-x86-cpuid-compat
(levels and their automatic raise, -cpu +/- parsing) and the enumeration half
of cpu-plug-test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import RawClient, Server


def _ok(reply: dict[str, Any]) -> Any:
    assert "return" in reply, reply
    return reply["return"]


@pytest.mark.parametrize("machine", ["pc", "q35", "none"])
def test_qom_test_walks_the_whole_tree(qmpd: Callable[..., Server], machine: str) -> None:
    server = qmpd("-machine", machine, "-S", "-smp", "1" if machine == "none" else "2,maxcpus=4")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        visited = 0

        def walk(path: str) -> None:
            nonlocal visited
            visited += 1
            for prop in _ok(client.execute("qom-list", {"path": path})):
                child = f"{path}/{prop['name']}"
                if prop["type"].startswith("child<"):
                    walk(child)
                elif prop["type"].startswith("link<"):
                    target = _ok(client.execute("qom-get", {"path": path, "property": prop["name"]}))
                    if target:
                        _ok(client.execute("qom-list", {"path": target}))
                else:
                    reply = client.execute("qom-get", {"path": path, "property": prop["name"]})
                    assert "return" in reply or "error" in reply

        walk("/machine")
        assert visited > 3
        assert client.execute("quit") == {"return": {}}


def test_device_introspect(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "none", "-S", "-nodefaults")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        tree_before = _ok(client.execute("human-monitor-command", {"command-line": "info qom-tree"}))
        all_types = _ok(client.execute("qom-list-types", {"abstract": True}))
        concrete = {t["name"] for t in _ok(client.execute("qom-list-types", {"abstract": False}))}
        by_name = {t["name"]: t for t in all_types}
        for entry in all_types:
            assert entry.get("abstract", False) == (entry["name"] not in concrete), entry
        for ancestor in ("object", "device", "sys-bus-device"):
            for entry in _ok(client.execute("qom-list-types", {"implements": ancestor, "abstract": True})):
                name = entry["name"]
                while name != ancestor:
                    name = by_name[name]["parent"]
        for entry in _ok(client.execute("qom-list-types", {"implements": "interface", "abstract": True})):
            chain, name = [], entry["name"]
            while name in by_name and "parent" in by_name[name]:
                name = by_name[name]["parent"]
                chain.append(name)
            if "interface" in chain or entry["name"] == "interface":
                assert entry.get("abstract") is True, entry
        assert (
            client.execute("device-list-properties", {"typename": "nonexistent"})["error"]["class"] == "DeviceNotFound"
        )
        assert "error" in client.execute("device-list-properties", {"typename": "device"})
        devices = _ok(client.execute("qom-list-types", {"implements": "device", "abstract": False}))
        assert len(devices) > 70
        for entry in devices:
            assert isinstance(_ok(client.execute("device-list-properties", {"typename": entry["name"]})), list)
        tree_after = _ok(client.execute("human-monitor-command", {"command-line": "info qom-tree"}))
        assert tree_after == tree_before, "listing properties creates nothing in the tree"


LEVELS = [
    ("phenom", "level", 5), ("Conroe", "level", 10), ("SandyBridge", "level", 0xD),
    ("486", "xlevel", 0), ("core2duo", "xlevel", 0x80000008), ("phenom", "xlevel", 0x8000001A),
    ("athlon", "xlevel", 0x80000008),
    ("486,arat=on", "level", 6), ("phenom,fsgsbase=on", "level", 7), ("phenom,avx512vbmi=on", "level", 7),
    ("phenom,xsaveopt=on", "level", 0xD), ("486,3dnow=on", "xlevel", 0x80000001),
    ("486,sse4a=on", "xlevel", 0x80000001), ("486,invtsc=on", "xlevel", 0x80000007),
    ("486,svm=on,npt=on", "xlevel", 0x8000000A), ("athlon,svm=on", "xlevel", 0x8000000A),
    ("phenom,xstore=on", "xlevel2", 0xC0000001), ("486,level=0xF,arat=on", "level", 0xF),
    ("phenom,level=0,fsgsbase=on", "level", 0), ("486,xlevel=0x80000002,3dnow=on", "xlevel", 0x80000002),
    ("486,full-cpuid-auto-level=off,arat=on", "level", 1),
]  # fmt: skip


@pytest.mark.parametrize(("cpu", "prop", "value"), LEVELS, ids=[f"{c}:{p}" for c, p, _ in LEVELS])
def test_x86_cpuid_compat_levels(qmpd: Callable[..., Server], cpu: str, prop: str, value: int) -> None:
    server = qmpd("-machine", "pc", "-S", "-cpu", cpu)
    with RawClient(server.socket_path) as client:
        client.negotiate()
        path = _ok(client.execute("query-cpus-fast"))[0]["qom-path"]
        assert _ok(client.execute("qom-get", {"path": path, "property": prop})) == value


def test_x86_cpuid_compat_plus_minus(qmpd: Callable[..., Server]) -> None:
    server = qmpd("-machine", "pc", "-S", "-cpu", "pentium,-fpu,+fpu,-mce,mce=on,+cx8,cx8=off,+sse4_1,sse4_2=on")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        path = _ok(client.execute("query-cpus-fast"))[0]["qom-path"]
        values = {
            name: _ok(client.execute("qom-get", {"path": path, "property": name}))
            for name in ("fpu", "mce", "cx8", "sse4-1", "sse4.1", "sse4-2", "sse4.2")
        }
    assert values == {
        "fpu": False,
        "mce": False,
        "cx8": True,
        "sse4-1": True,
        "sse4.1": True,
        "sse4-2": True,
        "sse4.2": True,
    }
    assert 'Ambiguous CPU model string. Don\'t mix both "-mce" and "mce=on"' in server.stderr()


@pytest.mark.parametrize("machine", ["pc", "q35", "pc-i440fx-7.2", "pc-q35-7.2"])
def test_cpu_plug_test_enumeration(qmpd: Callable[..., Server], machine: str) -> None:
    server = qmpd("-machine", machine, "-S", "-cpu", "Haswell", "-smp", "1,sockets=1,cores=3,threads=2,maxcpus=6")
    with RawClient(server.socket_path) as client:
        client.negotiate()
        slots = _ok(client.execute("query-hotpluggable-cpus"))
    free = [slot for slot in slots if "qom-path" not in slot]
    assert len(slots) == 6 and len(free) == 5
    for slot in free:
        assert slot["props"] and slot["type"] == "Haswell-x86_64-cpu" and slot["vcpus-count"] == 1
