"""The whole QOM tree against QEMU 7.2: a crawl from /machine down on both (qom-list, then qom-get of every
property), on pc, q35 and none under -S, on a pc -S with the command line's ISA devices (-device pvpanic,
isa-debug-exit, isa-debugcon with and without an id, -debugcon), and on a running pc with a plugged CPU.

Every path, property, type and value is compared.  An object on one side only is reported once, with its
type (``path:PATH (TYPE)``), not again for each of its children; a property of an object both have is
reported as ``value:PATH.PROP``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.differential.sweep import Differences, Pair, started
from tests.helpers import REPO, RawClient

pytestmark = pytest.mark.qemu
FIRMWARE = REPO / "qmpd" / "firmware" / "qmpd-firmware.bin"
PLUG = {"driver": "qemu64-x86_64-cpu", "id": "cpu1", "socket-id": 1, "core-id": 0, "thread-id": 0}

#: name -> (argv, plug a CPU and run the guest until it acknowledged it); ``{tmp}`` is a fresh directory.
CONFIGS: dict[str, tuple[list[str], bool]] = {
    "pc -S": (["-S", "-machine", "pc", "-nodefaults", "-smp", "2,sockets=2,cores=2,maxcpus=4"], False),
    "q35 -S": (["-S", "-machine", "q35", "-nodefaults", "-smp", "1,maxcpus=2"], False),
    "none -S": (["-S", "-machine", "none", "-nodefaults"], False),
    "pc -S, ISA devices": (
        [
            *("-S", "-machine", "pc", "-nodefaults", "-device", "pvpanic", "-debugcon", "file:{tmp}/debugcon.txt"),
            *("-device", "isa-debug-exit", "-chardev", "null,id=c2", "-device", "isa-debugcon,iobase=0x402,chardev=c2"),
            *("-chardev", "null,id=c3", "-device", "isa-debugcon,id=dc3,iobase=0x403,chardev=c3"),
        ],
        False,
    ),
    "pc running, CPU plugged": (
        ["-machine", "pc", "-nodefaults", "-smp", "1,sockets=2,maxcpus=2", "-bios", str(FIRMWARE)],
        True,
    ),
}


@pytest.fixture(params=list(CONFIGS), scope="module")
def config(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Pair]]:
    name: str = request.param
    argv, plug = CONFIGS[name]
    tmp = tmp_path_factory.mktemp("tree")
    with started(tmp, [arg.replace("{tmp}", str(tmp)) for arg in argv]) as both:
        if plug:
            for client in (both.qemu, both.qmpd):
                _plug_and_wait(client)
        yield name, both


def _plug_and_wait(client: RawClient) -> None:
    """device_add a CPU and wait (10 s at most) for the firmware's _OST for it."""
    assert client.execute("device_add", PLUG) == {"return": {}}
    deadline = time.monotonic() + 10
    while not any(event["event"] == "ACPI_DEVICE_OST" for event in client.events):
        assert time.monotonic() < deadline, "the guest did not acknowledge the plug"
        time.sleep(0.05)
        client.execute("query-status")  # events are read while waiting for a reply


Tree = dict[str, dict[str, tuple[str, Any]]]


def crawl(client: RawClient) -> Tree:
    """Every object under /machine: path -> property -> (type, qom-get reply)."""
    tree: Tree = {}
    pending = ["/machine"]
    while pending:
        path = pending.pop()
        listing = client.execute("qom-list", {"path": path})["return"]
        props: dict[str, tuple[str, Any]] = {}
        for prop in listing:
            reply = client.execute("qom-get", {"path": path, "property": prop["name"]})
            props[prop["name"]] = (prop["type"], reply)
            if prop["type"].startswith("child<"):
                pending.append(f"{path}/{prop['name']}")
        tree[path] = props
    return tree


def _type(tree: Tree, path: str) -> str:
    entry = tree[path].get("type")
    return str(entry[1].get("return")) if entry is not None else "?"


def _one_sided_child(theirs: Any, ours: Any) -> bool:
    """A child<> property on one side only: the child's path is reported instead."""
    present = theirs if ours is None else ours if theirs is None else None
    return present is not None and str(present[0]).startswith("child<")


def _compare(sweep: Differences, qemu: Tree, qmpd: Tree) -> None:
    reported: list[str] = []
    for path in sorted(set(qemu) | set(qmpd)):
        if path in qemu and path in qmpd:
            sweep.count("paths")
            want, got = qemu[path], qmpd[path]
            sweep.count("properties", len(want))
            for name in sorted(set(want) | set(got)):
                theirs, ours = want.get(name), got.get(name)
                if theirs != ours and not _one_sided_child(theirs, ours):
                    sweep.differ("value", f"{path}.{name}", theirs, ours)
            continue
        if any(path.startswith(top + "/") for top in reported):
            continue  # a child of an object already reported
        reported.append(path)
        tree = qemu if path in qemu else qmpd
        sweep.differ("path", f"{path} ({_type(tree, path)})", path in qemu, path in qmpd)


def test_every_path_property_and_value(config: tuple[str, Pair]) -> None:
    name, both = config
    sweep = Differences(f"QOM tree, {name}")
    _compare(sweep, crawl(both.qemu), crawl(both.qmpd))
    sweep.check()
