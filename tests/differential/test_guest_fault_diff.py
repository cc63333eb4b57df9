"""A guest that triple-faults, in QEMU 7.2 and in qmpd: the same events and run state.

QEMU's guest is a 64 KiB BIOS whose reset vector loads an empty IDT and runs
INT3 (real mode: the vector is past the limit -> #GP -> #DF -> triple fault);
it does that at every boot, so QEMU resets again and again.  qmpd's is
tests/guests/fault.S (long mode, no IDT, INT3 once; a flag in RAM makes the
second boot halt).  What a client sees of the first reset must be the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.differential.test_machine_diff import _need_qemu
from tests.helpers import RawClient, Server, build_guest, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
__all__ = ["_need_qemu"]  # the autouse fixture, shared with test_machine_diff

#: At F000:FFF0: lidt cs:[0xff00] (six zero bytes); int3.
RESET_VECTOR_CODE = bytes.fromhex("2e0f011e00ff") + b"\xcc"


def triple_faulting_bios(path: Path) -> Path:
    image = bytearray(64 << 10)
    image[0xFFF0 : 0xFFF0 + len(RESET_VECTOR_CODE)] = RESET_VECTOR_CODE
    path.write_bytes(bytes(image))
    return path


def first_reset(server: Server) -> list[Any]:
    """cont, then everything up to the first RESET, and the run state after it."""
    with RawClient(server.socket_path, timeout=15) as client:
        client.negotiate()
        seen: list[Any] = [client.execute("cont")]
        while seen[-1].get("event") != "RESET":
            seen.append(client.message())
        events = [{k: v for k, v in m.items() if k != "timestamp"} for m in [*client.events, *seen]]
        events.append(client.execute("query-status"))
        return events


def test_a_triple_fault_is_a_guest_reset_in_both(tmp_path: Path) -> None:
    common = ["-machine", "pc", "-accel", "tcg", "-nodefaults", "-nographic", "-S"]
    qemu = start_qemu([*common, "-bios", str(triple_faulting_bios(tmp_path / "bios.bin"))], tmp_path, "qemu")
    image = build_guest("fault", tmp_path, defsym={"KIND": 2})
    qmpd = start_qmpd([*common, "-bios", str(image)], tmp_path, "qmpd")
    try:
        seen_qemu, seen_qmpd = first_reset(qemu), first_reset(qmpd)
    finally:
        qemu.stop()
        qmpd.stop()
    expected = [
        {"event": "RESUME"},
        {"return": {}},
        {"event": "RESET", "data": {"guest": True, "reason": "guest-reset"}},
        {"return": {"status": "running", "singlestep": False, "running": True}},
    ]
    assert seen_qemu == expected
    assert seen_qmpd == expected
