"""Every differential test needs QEMU 7.2, the oracle: skipped without it, failed without it on CI."""

from __future__ import annotations

import pytest

from tests.conftest import REQUIRE_QEMU
from tests.helpers import QEMU_BINARY


@pytest.fixture(autouse=True)
def _need_qemu() -> None:
    if QEMU_BINARY is None:
        if REQUIRE_QEMU:
            pytest.fail("qemu-system-x86_64 is required (QMPD_REQUIRE_QEMU=1)")
        pytest.skip("qemu-system-x86_64 is not installed")
