"""inject-nmi and send-key on QEMU 7.2 and on qmpd, with the bundled firmware on pc and q35.

The firmware echoes on debugcon every NMI each CPU takes and every byte the i8042 gives it, so the
same commands must give the same lines on both (NMI lines are compared as a set: the CPUs take the
NMI concurrently).  The argument errors of send-key and inject-nmi, HMP nmi and sendkey, and the two commands'
query-qmp-schema signatures (the KeyValue union, all 150 QKeyCodes) are compared too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from qmpd.devices.ps2 import key_tables
from tests.differential.test_firmware_diff import FIRMWARE, Run
from tests.helpers import RawClient, resolved_signature, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
MACHINES = ["pc", "q35"]
QKEYCODES = key_tables().names
#: Keys whose bytes differ in kind: plain, 0xE0-prefixed, modifiers, Print Screen, Pause, numbers.
KEYS: list[list[dict[str, Any]]] = [
    [{"type": "qcode", "data": "a"}],
    [{"type": "qcode", "data": "kp_enter"}, {"type": "qcode", "data": "right"}],
    [{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}],
    [{"type": "qcode", "data": "print"}],
    [{"type": "qcode", "data": "shift"}, {"type": "qcode", "data": "sysrq"}],
    [{"type": "qcode", "data": "pause"}],
    [{"type": "qcode", "data": "ctrl_r"}, {"type": "qcode", "data": "pause"}],
    [{"type": "number", "data": 0x1E}, {"type": "number", "data": 0x9C}, {"type": "number", "data": 0x300}],
    [{"type": "qcode", "data": "meta_l"}, {"type": "qcode", "data": "f12"}, {"type": "qcode", "data": "kp_divide"}],
]


def _lines(run: Run, marker: str) -> list[str]:
    return [line for line in run.console().splitlines() if marker in line]


def _scenario(run: Run) -> None:
    run.until(lambda: "CPU 1 (APIC ID 1) online" in run.console())
    assert run.execute("inject-nmi") == {"return": {}}
    run.until(lambda: len(_lines(run, ") NMI")) == 2)
    for keys in KEYS:
        before = len(_lines(run, "kbd "))
        assert run.execute("send-key", {"keys": keys, "hold-time": 20}) == {"return": {}}
        run.until(lambda before=before: len(_lines(run, "kbd ")) > before)
        run.settle(0.4)
    assert run.execute("stop") == {"return": {}}
    assert run.execute("inject-nmi") == {"return": {}}
    assert run.execute("send-key", {"keys": [{"type": "qcode", "data": "b"}]}) == {"return": {}}
    run.settle(0.3)
    assert run.execute("cont") == {"return": {}}
    run.until(lambda: len(_lines(run, ") NMI")) == 4)
    run.settle(0.3)


def _start(kind: str, machine: str, tmp_path: Path) -> Run:
    console = tmp_path / f"{kind}-{machine}.debugcon"
    argv = ["-machine", f"{machine},accel=tcg", "-nodefaults", "-cpu", "Haswell", "-smp", "2,maxcpus=4", "-m", "128",
            "-bios", str(FIRMWARE), "-debugcon", f"file:{console}"]  # fmt: skip
    (tmp_path / kind).mkdir(exist_ok=True)
    return Run((start_qemu if kind == "qemu" else start_qmpd)(argv, tmp_path / kind), console)


@pytest.mark.parametrize("machine", MACHINES)
def test_nmi_and_keys_give_the_same_console(tmp_path: Path, machine: str) -> None:
    consoles = {}
    for kind in ("qemu", "qmpd"):
        run = _start(kind, machine, tmp_path)
        try:
            _scenario(run)
        finally:
            run.close()
        consoles[kind] = run
    qemu, qmpd = consoles["qemu"], consoles["qmpd"]
    assert _lines(qmpd, "kbd ") == _lines(qemu, "kbd ")
    assert len(_lines(qemu, "kbd ")) > 30
    assert sorted(_lines(qmpd, ") NMI")) == sorted(_lines(qemu, ") NMI"))
    assert [line for line in qmpd.console().splitlines() if "NMI" not in line and "kbd" not in line] == [
        line for line in qemu.console().splitlines() if "NMI" not in line and "kbd" not in line
    ]


def _every_key(run: Run) -> None:
    """40 ms apart: the guest reads the 16-byte queue long before it fills, even on a busy host."""
    run.until(lambda: "CPU 0 (APIC ID 0) online" in run.console())
    for name in QKEYCODES:
        assert run.execute("send-key", {"keys": [{"type": "qcode", "data": name}], "hold-time": 40}) == {"return": {}}
    # The end: ctrl+esc, bytes that no single key above gives in this order.
    assert run.execute("send-key", {"keys": [{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "esc"}]}) == {
        "return": {}
    }
    end = [f"qmpd firmware: kbd {code}" for code in ("1d", "01", "81", "9d")]
    run.until(lambda: _lines(run, "kbd ")[-4:] == end, timeout=60)


def test_every_key_code_gives_qemus_scancodes(tmp_path: Path) -> None:
    """All 150 QKeyCodes, pressed and released one after the other: the tables match QEMU 7.2's."""
    consoles = {}
    for kind in ("qemu", "qmpd"):
        run = _start(kind, "pc", tmp_path)
        try:
            _every_key(run)
        finally:
            run.close()
        consoles[kind] = _lines(run, "kbd ")
    assert consoles["qmpd"] == consoles["qemu"]
    assert len(consoles["qemu"]) > 300


BAD_ARGUMENTS: list[tuple[str, dict[str, Any] | None]] = [
    ("inject-nmi", {"x": 1}),
    ("send-key", None),
    ("send-key", {"keys": {}}),
    ("send-key", {"keys": ["a"]}),
    ("send-key", {"keys": [{"data": 1}]}),
    ("send-key", {"keys": [{"type": "qcode"}]}),
    ("send-key", {"keys": [{"type": "bogus", "data": 1}]}),
    ("send-key", {"keys": [{"type": "qcode", "data": "foo"}]}),
    ("send-key", {"keys": [{"type": "qcode", "data": 1}]}),
    ("send-key", {"keys": [{"type": "qcode", "data": "a", "x": 1}]}),
    ("send-key", {"keys": [{"type": "number", "data": "a"}]}),
    ("send-key", {"keys": [{"type": "number", "data": 1.5}]}),
    ("send-key", {"keys": [{"type": "qcode", "data": "a"}], "hold-time": "x"}),
    ("send-key", {"keys": [{"type": "qcode", "data": "a"}, {"type": "number"}]}),
    ("send-key", {"keys": []}),
    ("send-key", {"keys": [{"type": "number", "data": -1}], "hold-time": 1}),
]
HMP_LINES = ["nmi", "nmi 3", "sendkey", "sendkey foo", "sendkey a-foo", "sendkey a-", "sendkey 0x", "sendkey 12",
             "sendkey A", "sendkey a 5x", "sendkey < 1", "sendkey 0x1e 1", "help sendkey", "help nmi"]  # fmt: skip


def _replies(server_start: Any, tmp_path: Path, machine: str) -> list[Any]:
    server = server_start(["-machine", f"{machine},accel=tcg", "-nodefaults", "-S"], tmp_path)
    try:
        with RawClient(server.socket_path, timeout=10) as client:
            client.negotiate()
            replies = [client.execute(name, arguments) for name, arguments in BAD_ARGUMENTS]
            replies += [client.execute("human-monitor-command", {"command-line": line}) for line in HMP_LINES]
            schema = client.execute("query-qmp-schema")["return"]
            replies += [resolved_signature(schema, name) for name in ("send-key", "inject-nmi")]
            time.sleep(0.05)
            return replies
    finally:
        server.stop()


@pytest.mark.parametrize("machine", ["pc", "none"])
def test_argument_errors_are_qemus(tmp_path: Path, machine: str) -> None:
    (tmp_path / "qemu").mkdir()
    (tmp_path / "qmpd").mkdir()
    qemu = _replies(start_qemu, tmp_path / "qemu", machine)
    qmpd = _replies(start_qmpd, tmp_path / "qmpd", machine)
    assert qmpd == qemu
