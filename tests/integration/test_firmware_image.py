"""The bundled default firmware is exactly what its sources in examples/firmware/ build to."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import REPO, copy_firmware_sources

SHIPPED = REPO / "qmpd" / "firmware" / "qmpd-firmware.bin"


def test_shipped_firmware_matches_a_rebuild(tmp_path: Path) -> None:
    rebuilt = tmp_path / "qmpd-firmware.bin"
    build = tmp_path / "build"
    build.mkdir()
    copy_firmware_sources(build)
    subprocess.run(["make", "-s", "-C", str(build), f"OUT={rebuilt}"], check=True, capture_output=True, timeout=60)
    assert rebuilt.read_bytes() == SHIPPED.read_bytes(), "run `make firmware` and commit the image"
