"""Monitor listening sockets: a Unix socket file never exists with wider permissions than asked."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from qmpd.config import MonitorConfig, MonitorKind
from qmpd.protocol.listeners import open_listener


class _ModeAtBind(socket.socket):
    """A socket that records the mode of the file bind() created, before anything else can change it."""

    modes: list[int] = []

    def bind(self, address: object) -> None:
        super().bind(address)  # type: ignore[arg-type]
        if isinstance(address, str):
            self.modes.append(stat.S_IMODE(os.stat(address).st_mode))


@pytest.mark.parametrize("mode", [0o600, 0o660])
def test_the_socket_file_has_its_mode_from_creation_even_under_umask_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    assert threading.active_count() == 1, "the umask is per process: this test needs a single thread"
    _ModeAtBind.modes = []
    monkeypatch.setattr(socket, "socket", _ModeAtBind)  # listeners.py calls socket.socket(...)
    path = str(tmp_path / "qmp.sock")
    previous = os.umask(0)
    try:
        listener = open_listener(MonitorConfig(MonitorKind.UNIX, "mon0", path=path), mode)
        umask_after = os.umask(0)
    finally:
        os.umask(previous)
    try:
        assert _ModeAtBind.modes == [mode]
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        assert umask_after == 0  # the caller's umask is back
    finally:
        listener.close()
