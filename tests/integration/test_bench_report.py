"""The benchmark report (`make bench`): bench/report.py --smoke produces latest.md and latest.png.

Only that the report is produced and well formed is checked, never a timing: the smoke sizes are too
small for the numbers to mean anything, and CI machines are noisy.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import QEMU_BINARY, REPO

REQUIRE_QEMU = os.environ.get("QMPD_REQUIRE_QEMU") == "1"
BENCHMARKS = ("qmp", "guest", "hotplug", "probe", "migration", "startup")
NUMBER = re.compile(r"^-?[0-9][0-9,]*(\.[0-9]+)?(e[-+]?[0-9]+)?$")

pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.timeout(400)]


def run_report(out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "report.py"), "--smoke", "--out", str(out)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"bench/report.py --smoke exited {proc.returncode}\n{proc.stderr[-4000:]}"


def table(markdown: str) -> list[dict[str, str]]:
    """The report's table as one dict per row, keyed by the header cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(lines) > 2, markdown
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert re.fullmatch(r"\|(-+:?\|)+", lines[1].replace("---:", "---")), lines[1]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def is_number(cell: str) -> bool:
    return bool(NUMBER.match(cell))


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 10_000, f"{path}: {len(data)} bytes"
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    length, kind, width, height = struct.unpack(">I4sII", data[8:24])
    assert (length, kind) == (13, b"IHDR")
    assert width >= 800 and height >= 600, (width, height)
    assert data[-8:-4] == b"IEND"


def test_smoke_report_twice(tmp_path: Path) -> None:
    if QEMU_BINARY is None:
        if REQUIRE_QEMU:
            pytest.fail("qemu-system-x86_64 is required (QMPD_REQUIRE_QEMU=1)")
        pytest.skip("qemu-system-x86_64 is not installed")
    out = tmp_path / "results"
    run_report(out)
    latest = out / "latest.md"
    assert latest.exists() and (out / "latest.json").exists()
    assert not (out / "previous.md").exists()
    rows = table(latest.read_text())
    for column in ("benchmark", "metric", "qmpd", "QEMU", "qmpd/QEMU", "previous qmpd", "previous qmpd/QEMU"):
        assert column in rows[0], rows[0]
    for bench in BENCHMARKS:
        compared = [
            row
            for row in rows
            if row["benchmark"] == bench and all(is_number(row[c]) for c in ("qmpd", "QEMU", "qmpd/QEMU"))
        ]
        assert compared, f"no row of {bench} with qmpd, QEMU and their ratio:\n{latest.read_text()}"
    assert "](latest.png)" in latest.read_text()
    check_png(out / "latest.png")
    assert all(row["previous qmpd"] == "-" for row in rows)
    first = latest.read_text()

    run_report(out)
    assert (out / "previous.md").read_text() == first.replace("](latest.png)", "](previous.png)")
    check_png(out / "previous.png")
    check_png(out / "latest.png")
    again = table(latest.read_text())
    assert [row["metric"] for row in again] == [row["metric"] for row in rows]
    assert "previous run: none" not in latest.read_text()
    # The second run shows the first one's numbers beside its own.
    assert [row["previous qmpd"] for row in again] == [row["qmpd"] for row in rows]
    assert any(is_number(row["previous qmpd/QEMU"]) for row in again)
