"""The bundled default firmware is exactly what its sources in examples/firmware/ build to."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import REPO, firmware_variant

SHIPPED = REPO / "qmpd" / "firmware" / "qmpd-firmware.bin"


def test_shipped_firmware_matches_a_rebuild(tmp_path: Path) -> None:
    rebuilt = firmware_variant(tmp_path)
    assert rebuilt.read_bytes() == SHIPPED.read_bytes(), "run `make firmware` and commit the image"
