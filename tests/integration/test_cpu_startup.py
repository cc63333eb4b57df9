"""-cpu settings that keep a boot CPU from plugging end start-up with QEMU's text, not a traceback."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import qmpd_command

#: -cpu/-smp -> the line qemu-system-x86_64 7.2 prints before it exits 1 (measured, -accel tcg).
BOOT_CPU_ERRORS = (
    (
        ["-smp", "1", "-cpu", "Haswell,socket-id=7"],
        "property socket-id: 7 doesn't match set apic-id: 0x0 (socket-id: 0)",
    ),
    (["-smp", "1", "-cpu", "Haswell,phys-bits=999"], "phys-bits should be between 32 and 52  (but is 999)"),
    (
        ["-smp", "1", "-cpu", "Haswell,feature-words=1"],
        "can't apply global Haswell-x86_64-cpu.feature-words=1: "
        "Property 'Haswell-x86_64-cpu.feature-words' is not writable",
    ),
)


@pytest.mark.parametrize(("argv", "message"), BOOT_CPU_ERRORS)
def test_a_boot_cpu_that_cannot_plug_ends_start_up_cleanly(argv: list[str], message: str) -> None:
    command = [*qmpd_command(), "-machine", "pc", "-S", "-display", "none", "-nodefaults", "-qmp", "stdio", *argv]
    done = subprocess.run(command, input=b"", capture_output=True, timeout=30, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert f"qmpd: {message}\n" in stderr
    assert "Traceback" not in stderr


def test_kvm_hint_dedicated_starts_with_qemus_warning() -> None:
    command = [*qmpd_command(), "-machine", "pc", "-S", "-display", "none", "-nodefaults", "-qmp", "stdio"]
    request = b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    done = subprocess.run(
        [*command, "-cpu", "Haswell,kvm-hint-dedicated=on"], input=request, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"kvm-hint-dedicated" in done.stderr and b"Traceback" not in done.stderr
