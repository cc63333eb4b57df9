"""isa-debugcon: bytes written to one I/O port go to a character device (a file, stdio, nothing).

As QEMU's, it reads back 0xe9 (so a guest can probe for it) and writes one
byte per OUT.
"""

from __future__ import annotations

import os
import threading
from typing import BinaryIO

#: Default port and QEMU's read-back value.
DEBUGCON_PORT = 0xE9
READBACK = 0xE9


class CharSink:
    """Where debugcon bytes go: a file (truncated at start as QEMU's, or appended to), stdout, or nowhere."""

    def __init__(self, kind: str, path: str | None = None, append: bool = False) -> None:
        self.kind = kind
        self.path = path
        self._stream: BinaryIO | None = None
        self._fd: int | None = None
        if kind == "file":
            assert path is not None
            # Open for the daemon's life; QEMU truncates a file chardev unless append=on.
            self._stream = open(path, "ab", buffering=0) if append else open(path, "wb", buffering=0)  # noqa: SIM115
        elif kind == "stdio":
            self._fd = os.dup(1)

    def write(self, data: bytes) -> None:
        """Write bytes now (unbuffered, so tests and tail -f see them at once)."""
        if self._stream is not None:
            self._stream.write(data)
        elif self._fd is not None:
            os.write(self._fd, data)

    def close(self) -> None:
        """Release the file."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class DebugCon:
    """The device."""

    def __init__(self, sink: CharSink) -> None:
        self.sink = sink
        self._lock = threading.Lock()

    def io_read(self, offset: int, size: int) -> int:
        return READBACK

    def io_write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            self.sink.write(bytes([value & 0xFF]))
