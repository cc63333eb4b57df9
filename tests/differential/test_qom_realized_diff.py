"""qom-set of a CPU's ``realized`` against QEMU 7.2: what it sends, what it leaves in the slots.

Setting ``realized`` false unrealizes a CPU without unplugging it: the slot keeps it (query-hotpluggable-cpus
still names it, a plug there is refused), query-cpus-fast drops it, its lapic goes with a DEVICE_DELETED,
except the boot CPU's (QEMU's kvmvapic holds that one), and device_del calls it already being unplugged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.differential.test_machine_diff import _without_thread_ids
from tests.helpers import RawClient, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
ARGV = ["-S", "-machine", "pc", "-nodefaults", "-smp", "2,maxcpus=4"]


def _realized(path: str, value: bool) -> tuple[str, dict[str, Any]]:
    return ("qom-set", {"path": path, "property": "realized", "value": value})


STEPS: list[tuple[str, dict[str, Any]]] = [
    ("device_add", {"driver": "qemu64-x86_64-cpu", "id": "c2", "socket-id": 0, "core-id": 2, "thread-id": 0}),
    _realized("/machine/unattached/device[0]", False),
    ("query-hotpluggable-cpus", {}),
    ("query-cpus-fast", {}),
    _realized("/machine/unattached/device[0]", True),
    ("qom-get", {"path": "/machine/unattached/device[0]", "property": "realized"}),
    _realized("/machine/peripheral/c2", False),
    ("query-hotpluggable-cpus", {}),
    ("query-cpus-fast", {}),
    ("device_del", {"id": "c2"}),
    ("device_del", {"id": "/machine/peripheral/c2"}),
    ("device_add", {"driver": "qemu64-x86_64-cpu", "id": "c3", "socket-id": 0, "core-id": 2, "thread-id": 0}),
    _realized("/machine/unattached/device[2]", False),
    _realized("/machine/unattached/device[2]", False),
    ("qom-list", {"path": "/machine/unattached/device[2]/lapic"}),
    ("human-monitor-command", {"command-line": "info cpus"}),
]


def _run(client: RawClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    client.negotiate()
    replies = [_without_thread_ids(client.execute(name, args)) for name, args in STEPS]
    time.sleep(0.3)  # any late event (QEMU sends the lapic's once the object is finalized)
    client.execute("query-status")
    return replies, [{"event": e["event"], "data": e.get("data")} for e in client.events]


def test_realized_false_unrealizes_without_unplugging(tmp_path: Path) -> None:
    qemu, qmpd = start_qemu(ARGV, tmp_path, "qemu"), start_qmpd(ARGV, tmp_path, "qmpd")
    try:
        with RawClient(qemu.socket_path) as theirs, RawClient(qmpd.socket_path) as ours:
            want, got = _run(theirs), _run(ours)
    finally:
        qemu.stop()
        qmpd.stop()
    for step, expected, actual in zip(STEPS, want[0], got[0], strict=True):
        if step[1].get("command-line") == "info cpus":
            expected = actual = {k: v.split("thread_id")[0] for k, v in expected.items()}
        assert actual == expected, step
    assert got[1] == want[1]
    assert {"event": "DEVICE_DELETED", "data": {"path": "/machine/unattached/device[0]/lapic"}} not in got[1]
