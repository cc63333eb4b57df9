"""Guest resets and panics under every -action, in QEMU 7.2 and in qmpd: the same events, state and exit.

QEMU's guests are 64 KiB BIOS images run from the reset vector: one loads an
empty IDT and runs INT3 (real mode: past the limit -> #GP -> #DF -> triple
fault, at every boot), others write 1 (a panic) or 2 (a crash kernel loaded)
to pvpanic's port, or reset the machine through port 0xCF9 or the keyboard
controller.  qmpd's are tests/guests/fault.S (long mode, no IDT: INT3; or the
same port writes).
The first events after ``cont``, then the run state (or the exit status when
the process ends) must be the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, build_guest, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu

#: Real-mode code at F000:FFF0.  lidt cs:[0xff00] (six zero bytes); int3.
TRIPLE_FAULT = bytes.fromhex("2e0f011e00ff") + b"\xcc"
#: mov al, 1 (2: crash kernel loaded); mov dx, 0x505; out dx, al; 1: hlt; jmp 1b.
PANIC = bytes.fromhex("b001ba0505eef4ebfd")
CRASHLOADED = bytes.fromhex("b002ba0505eef4ebfd")
#: mov al, 6; mov dx, 0xcf9; out dx, al (reset control) | mov al, 0xfe; out 0x64, al (i8042 pulse); then hlt.
RESET_CF9 = bytes.fromhex("b006baf90ceef4ebfd")
RESET_I8042 = bytes.fromhex("b0fee664f4ebfd")
#: Each guest: QEMU's BIOS code, qmpd's fault.S KIND and extra -device arguments.
GUESTS = {
    "triple-fault": (TRIPLE_FAULT, 2, []),
    "panic": (PANIC, 5, ["-device", "pvpanic"]),
    "crashloaded": (CRASHLOADED, 6, ["-device", "pvpanic"]),
    "reset-0xcf9": (RESET_CF9, 7, []),
    "reset-i8042": (RESET_I8042, 8, []),
}
COMMON = ["-accel", "tcg", "-nodefaults", "-nographic", "-S"]
Outcome = tuple[list[tuple[str, Any]], str | None, int | None]


def bios(path: Path, code: bytes) -> Path:
    image = bytearray(64 << 10)
    image[0xFFF0 : 0xFFF0 + len(code)] = code
    path.write_bytes(bytes(image))
    return path


def outcome(server: Server, before: list[tuple[str, dict[str, Any]]]) -> Outcome:
    """Events after ``cont`` (until 1 s of quiet or the end), then query-status or the exit status."""
    with RawClient(server.socket_path, timeout=15) as client:
        client.negotiate()
        for name, arguments in before:
            assert client.execute(name, arguments) == {"return": {}}
        assert client.execute("cont") == {"return": {}}
        messages = list(client.events)
        client.events.clear()
        try:
            while len(messages) < 8:
                messages.append(client.message(timeout=1.0))
        except (TimeoutError, EOFError, ConnectionError):
            pass
        events = [(m["event"], m.get("data")) for m in messages if "event" in m]
        try:
            status: str | None = client.execute("query-status")["return"]["status"]
        except (EOFError, ConnectionError):
            status = None
    exit_status = server.process.wait(timeout=10) if status is None else None
    return events, status, exit_status


def both(
    tmp_path: Path, guest: str, argv: list[str], before: list[tuple[str, dict[str, Any]]]
) -> tuple[Outcome, Outcome]:
    code, kind, devices = GUESTS[guest]
    if "-machine" not in argv:
        argv = ["-machine", "pc", *argv]
    qemu_argv = ["-bios", str(bios(tmp_path / "bios.bin", code)), *devices]
    qmpd_argv = ["-bios", str(build_guest("fault", tmp_path, defsym={"KIND": kind})), *devices]
    qemu = start_qemu([*COMMON, *argv, *qemu_argv], tmp_path, "qemu")
    qmpd = start_qmpd([*COMMON, *argv, *qmpd_argv], tmp_path, "qmpd")
    try:
        return outcome(qemu, before), outcome(qmpd, before)
    finally:
        qemu.stop()
        qmpd.stop()


RESUME = ("RESUME", None)
RESET = ("RESET", {"guest": True, "reason": "guest-reset"})
SHUTDOWN_RESET = ("SHUTDOWN", {"guest": True, "reason": "guest-reset"})
SHUTDOWN_PANIC = ("SHUTDOWN", {"guest": True, "reason": "guest-panic"})
STOP = ("STOP", None)
PANIC_PAUSE = ("GUEST_PANICKED", {"action": "pause"})
PANIC_POWEROFF = ("GUEST_PANICKED", {"action": "poweroff"})
PAUSE_TO_SHUTDOWN = [("set-action", {"reboot": "shutdown", "shutdown": "pause"})]

CASES = [
    ("triple-fault", [], [], [RESUME, RESET], "running", None),
    ("triple-fault", ["-no-reboot"], [], [RESUME, SHUTDOWN_RESET], None, 0),
    ("triple-fault", ["-no-reboot", "-no-shutdown"], [], [RESUME, SHUTDOWN_RESET, STOP], "shutdown", None),
    ("triple-fault", ["-action", "reboot=shutdown,shutdown=pause"], [], [RESUME, SHUTDOWN_RESET, STOP], "shutdown",
     None),
    ("triple-fault", [], PAUSE_TO_SHUTDOWN, [RESUME, SHUTDOWN_RESET, STOP], "shutdown", None),
    ("reset-0xcf9", [], [], [RESUME, RESET], "running", None),
    ("reset-0xcf9", ["-no-reboot"], [], [RESUME, SHUTDOWN_RESET], None, 0),
    ("reset-i8042", ["-machine", "q35"], [], [RESUME, RESET], "running", None),
    ("reset-i8042", ["-no-reboot", "-no-shutdown"], [], [RESUME, SHUTDOWN_RESET, STOP], "shutdown", None),
    ("panic", [], [], [RESUME, PANIC_POWEROFF, SHUTDOWN_PANIC], None, 0),
    ("panic", ["-no-shutdown"], [], [RESUME, PANIC_PAUSE, STOP], "guest-panicked", None),
    ("panic", ["-action", "panic=pause"], [], [RESUME, PANIC_PAUSE, STOP], "guest-panicked", None),
    ("panic", ["-action", "panic=none"], [], [RESUME, ("GUEST_PANICKED", {"action": "run"})], "running", None),
    ("crashloaded", [], [], [RESUME, ("GUEST_CRASHLOADED", {"action": "run"})], "running", None),
    ("panic", ["-action", "panic=exit-failure"], [], [RESUME, PANIC_POWEROFF, SHUTDOWN_PANIC], None, 1),
]  # fmt: skip


@pytest.mark.parametrize(("guest", "argv", "before", "events", "status", "exit_status"), CASES)
def test_guest_reset_and_panic_actions_match_qemu(
    tmp_path: Path,
    guest: str,
    argv: list[str],
    before: list[tuple[str, dict[str, Any]]],
    events: list[tuple[str, Any]],
    status: str | None,
    exit_status: int | None,
) -> None:
    (qemu_events, qemu_status, qemu_exit), (qmpd_events, qmpd_status, qmpd_exit) = both(tmp_path, guest, argv, before)
    # QEMU's triple-faulting BIOS faults again at every boot: compare its first events.
    assert qemu_events[: len(events)] == events and (qemu_status, qemu_exit) == (status, exit_status)
    assert qmpd_events == events and (qmpd_status, qmpd_exit) == (status, exit_status)
