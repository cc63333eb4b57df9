"""The JSON codec at the bottom, as QEMU's qobject/: bytes to values and values to bytes."""

from __future__ import annotations

import sys

# QMP messages nest up to 1024 levels (QEMU's limit) and are echoed back in
# replies; encoding them (json's C encoder recurses) needs more than Python's
# default of 1000 frames.
if sys.getrecursionlimit() < 5000:
    sys.setrecursionlimit(5000)
