"""Sweep: the command line's ``help`` answers have QEMU 7.2's format for everything qmpd supports.

``-machine help``, ``-cpu help``, ``-device help`` and ``-device X,help`` for every device qmpd's own
``-device help`` lists, ``-object help`` and ``-object X,help`` for every type it lists, ``-machine X,help``,
``-chardev help``, ``-display help``, ``-accel help``: exit status 0,
QEMU's headers, and every line qmpd prints is a line QEMU prints, in QEMU's order.  What QEMU lists and
qmpd lacks is its own business (more machines, devices, models), except a device's properties, which
the QOM property sweep compares; models qmpd lists that QEMU does not are README's deliberate
differences (``model:`` keys).
"""

from __future__ import annotations

import re
import subprocess
from functools import cache

import pytest

from qmpd.machine.help_text import device_options_help
from tests.differential.deliberate import deliberate
from tests.helpers import QEMU_BINARY, REPO, qmpd_command

pytestmark = pytest.mark.qemu


@cache
def run(program: str, *argv: str) -> tuple[int, str]:
    """Exit status and stdout (stderr after it) of one help request."""
    binary = [QEMU_BINARY or "qemu-system-x86_64"] if program == "qemu" else qmpd_command()
    done = subprocess.run([*binary, *argv], capture_output=True, text=True, timeout=60, cwd=REPO)
    return done.returncode, done.stdout + done.stderr


def both(*argv: str) -> tuple[list[str], list[str]]:
    """QEMU's and qmpd's output lines; both must exit 0."""
    (status_qemu, qemu), (status_qmpd, qmpd) = run("qemu", *argv), run("qmpd", *argv)
    assert (status_qmpd, status_qemu) == (0, 0), qmpd
    return qemu.splitlines(), qmpd.splitlines()


def in_qemu_order(qemu: list[str], qmpd: list[str], excused: set[str] = frozenset()) -> list[str]:
    """The problems with qmpd's lines: lines QEMU does not print, or printed in another order."""
    positions = {line: index for index, line in enumerate(qemu)}
    problems = [f"not in QEMU's output: {line!r}" for line in qmpd if line not in positions and line not in excused]
    order = [positions[line] for line in qmpd if line in positions]
    if order != sorted(order):
        problems.append("lines not in QEMU's order")
    return problems


def test_machine_help() -> None:
    qemu, qmpd = both("-machine", "help")
    assert qmpd[0] == qemu[0] == "Supported machines are:"
    assert not in_qemu_order(qemu, qmpd)
    print(f"\n-machine help: {len(qmpd) - 1} of QEMU's {len(qemu) - 1} lines")


def test_cpu_help() -> None:
    qemu, qmpd = both("-cpu", "help")
    split = qemu.index("Recognized CPUID flags:")
    assert qmpd[qmpd.index("Recognized CPUID flags:") - 1 :] == qemu[split - 1 :], "the flags block differs"
    models = [line for line in qmpd[: qmpd.index("Recognized CPUID flags:")] if line.startswith("x86 ")]
    excused = {line for line in models if deliberate("model", line.split()[1])}
    problems = in_qemu_order(qemu[:split], qmpd[: qmpd.index("Recognized CPUID flags:")], excused)
    assert qmpd[0] == "Available CPUs:" and not problems, problems
    flags = len(" ".join(qemu[split + 1 :]).split())
    print(f"\n-cpu help: {len(models)} model lines ({len(excused)} deliberate), {flags} flags")


def _devices() -> list[str]:
    return re.findall(r'^name "([^"]+)"', run("qmpd", "-device", "help")[1], re.M)


def test_device_help() -> None:
    qemu, qmpd = both("-device", "help")
    headers = [line for line in qmpd if line.endswith(":")]
    assert headers and all(header in qemu for header in headers)
    excused = {line for line in qmpd if deliberate("model", line.removeprefix('name "').removesuffix('-x86_64-cpu"'))}
    problems = in_qemu_order(qemu, [line for line in qmpd if line], excused)
    assert not problems, problems
    print(f"\n-device help: {len(_devices())} devices in {len(headers)} categories")


def test_device_options_help() -> None:
    devices = _devices()
    assert {"isa-debugcon", "isa-debug-exit", "pvpanic", "Haswell-x86_64-cpu"} <= set(devices)
    for device in ("isa-debugcon", "Haswell-x86_64-cpu"):  # the command line's path, once per kind
        assert run("qmpd", "-device", f"{device},help") == (0, device_options_help(device))
    problems: list[str] = []
    compared = 0
    lacking: dict[str, int] = {}
    for device in devices:
        if not run("qemu", "-device", "help")[1].count(f'name "{device}"'):
            assert deliberate("type", device) or deliberate("model", device.removesuffix("-x86_64-cpu")), device
            continue
        status, text = run("qemu", "-device", f"{device},help")
        assert status == 0, text
        qemu, qmpd = text.splitlines(), device_options_help(device).splitlines()
        assert qmpd[0] == qemu[0] == f"{device} options:"
        problems += [f"{device}: {problem}" for problem in in_qemu_order(qemu, qmpd)]
        compared += len(qmpd) - 1
        if len(qemu) > len(qmpd):
            lacking[device] = len(set(qemu) - set(qmpd))
    assert not problems, problems
    print(f"\n-device X,help: {len(devices)} devices, {compared} property lines, each one of QEMU's")
    print(f"  properties QEMU lists and qmpd lacks (the QOM property sweep's to judge): {lacking}")


def test_object_help() -> None:
    qemu, qmpd = both("-object", "help")
    assert qmpd[0] == qemu[0] == "List of user creatable objects:"
    assert len(qmpd) > 1 and not in_qemu_order(qemu, qmpd)
    for line in qmpd[1:]:
        assert run("qmpd", "-object", f"{line.strip()},help") == run("qemu", "-object", f"{line.strip()},help")
    print(f"\n-object help: {len(qmpd) - 1} of QEMU's {len(qemu) - 1} types, each with QEMU's property lines")


@pytest.mark.parametrize("machine", ["pc", "q35", "none", "nosuch"])
def test_machine_options_help(machine: str) -> None:
    qemu, qmpd = both("-machine", f"{machine},help")
    assert qmpd[0] == qemu[0]
    assert not in_qemu_order(qemu, qmpd)  # which options a machine has is the QOM property sweep's to compare


@pytest.mark.parametrize("option", ["-chardev", "-display", "-accel"])
def test_backend_lists(option: str) -> None:
    qemu, qmpd = both(option, "help")
    assert qmpd[0] == qemu[0] and len(qmpd) > 1
    assert not in_qemu_order(qemu, qmpd)


def test_help_errors() -> None:
    (status_qemu, qemu), (status_qmpd, qmpd) = (
        run("qemu", "-object", "nosuch,help"),
        run("qmpd", "-object", "nosuch,help"),
    )
    assert status_qmpd == status_qemu == 1
    assert qmpd.removeprefix("qmpd:") == qemu.removeprefix("qemu-system-x86_64:")
    for argv in (["-device", "nosuch,help"],):
        (status_qemu, qemu), (status_qmpd, qmpd) = run("qemu", *argv), run("qmpd", *argv)
        assert status_qmpd == status_qemu == 0  # QEMU exits 0 after a help request, even a failed one
        assert qmpd.removeprefix("qmpd:") == qemu.removeprefix(f"{QEMU_BINARY}:").removeprefix("qemu-system-x86_64:")
