"""File descriptors clients pass over Unix monitors (SCM_RIGHTS), as QEMU's monitor keeps them.

Three holders, each bounded (QEMU bounds none of them; a client is untrusted input here):

- **received**: the descriptors of the last message that carried any (QEMU's chardev
  ``read_msgfds``).  A new batch closes the unclaimed previous one; ``getfd`` and ``add-fd``
  take the first and close the rest.  At most MAX_FDS_PER_MESSAGE: the transport's ancillary
  buffer holds no more, and the kernel closes what does not fit.
- **named** (``getfd``/``closefd``): per session, as QEMU's are per monitor, at most
  MAX_NAMED_FDS.  ``take`` hands one to a command (``fd:NAME``), which then owns it.
- **fd sets** (``add-fd``/``remove-fd``/``query-fdsets``): one table for the process, as QEMU's,
  at most MAX_FDSET_FDS descriptors in all.

A session's received and named descriptors are closed when it ends; QEMU keeps a monitor's
names across client connections, qmpd closes them with the connection that passed them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any

from qmpd.errors import GenericError

#: Descriptors taken from one message (QEMU's TCP_MAX_FDS); the kernel closes any beyond.
MAX_FDS_PER_MESSAGE = 16
#: Named descriptors (getfd) one session may hold.
MAX_NAMED_FDS = 32
#: Descriptors in all fd sets together (add-fd).
MAX_FDSET_FDS = 256

NO_FD = "No file descriptor supplied via SCM_RIGHTS"


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class _FdSetEntry:
    """One descriptor of a set (plain classes here: a dataclass took ~0.5 ms to create at every start)."""

    __slots__ = ("fd", "opaque", "removed")

    def __init__(self, fd: int, opaque: str | None) -> None:
        self.fd = fd
        self.opaque = opaque
        #: Marked by remove-fd; closed at the next cleanup while the guest runs.
        self.removed = False


class _FdSet:
    __slots__ = ("fds", "id")

    def __init__(self, fdset_id: int) -> None:
        self.id = fdset_id
        #: Oldest first (query-fdsets lists them so).
        self.fds: list[_FdSetEntry] = []


class FdSets:
    """QEMU's fd sets (monitor/fds.c): numbered groups of descriptors, shared by every session.

    Cleanup follows QEMU 7.2's monitor_fdset_cleanup: a descriptor marked by ``remove-fd`` is
    closed only while the guest runs (under ``-S`` it stays, and is listed, until a later
    cleanup), and when the last monitor session ends every descriptor is closed if the guest runs.
    """

    def __init__(self, running: Callable[[], bool] = lambda: True, limit: int = MAX_FDSET_FDS) -> None:
        self._running = running
        #: Ascending by id.
        self._sets: list[_FdSet] = []
        self._limit = limit
        self._sessions = 0

    def __len__(self) -> int:
        """Descriptors held (removed ones not yet closed included)."""
        return sum(len(fdset.fds) for fdset in self._sets)

    def add(self, fd: int, fdset_id: int | None, opaque: str | None) -> dict[str, int]:
        """``add-fd``: ``fd`` joins the set (a new one when absent); the caller's fd is taken over."""
        if fdset_id is not None and fdset_id < 0:
            _close(fd)
            raise GenericError("Parameter 'fdset-id' expects a non-negative value")
        if len(self) >= self._limit:
            _close(fd)
            raise GenericError(
                f"qmpd holds at most {self._limit} file descriptors in fd sets (remove-fd frees them while running)"
            )
        ids = [fdset.id for fdset in self._sets]
        if fdset_id is None:
            fdset_id = next(n for n in range(len(ids) + 1) if n not in ids)
        fdset = next((fdset for fdset in self._sets if fdset.id == fdset_id), None)
        if fdset is None:
            fdset = _FdSet(fdset_id)
            self._sets.append(fdset)
            self._sets.sort(key=lambda entry: entry.id)
        fdset.fds.append(_FdSetEntry(fd, opaque))
        return {"fdset-id": fdset_id, "fd": fd}

    def remove(self, fdset_id: int, fd: int | None) -> None:
        """``remove-fd``: mark one descriptor (or the whole set) removed, then clean up."""
        fdset = next((entry for entry in self._sets if entry.id == fdset_id), None)
        found = fdset is not None and (fd is None or any(entry.fd == fd for entry in fdset.fds))
        if fdset is None or not found:
            name = f"fdset-id:{fdset_id}" if fd is None else f"fdset-id:{fdset_id}, fd:{fd}"
            raise GenericError(f"File descriptor named '{name}' not found")
        for entry in fdset.fds:
            if fd is None or entry.fd == fd:
                entry.removed = True
        self._cleanup()

    def query(self) -> list[dict[str, Any]]:
        """``query-fdsets``: sets by descending id (QEMU prepends as it walks), descriptors oldest first."""
        result: list[dict[str, Any]] = []
        for fdset in reversed(self._sets):
            fds = [{"fd": e.fd} if e.opaque is None else {"fd": e.fd, "opaque": e.opaque} for e in fdset.fds]
            result.append({"fdset-id": fdset.id, "fds": fds})
        return result

    def session_opened(self) -> None:
        self._sessions += 1

    def session_closed(self) -> None:
        self._sessions -= 1
        self._cleanup()

    def close(self) -> None:
        """Close everything (the daemon is exiting)."""
        for fdset in self._sets:
            for entry in fdset.fds:
                _close(entry.fd)
        self._sets.clear()

    def _cleanup(self) -> None:
        if not self._running():
            return
        everything = self._sessions <= 0
        for fdset in self._sets:
            for entry in [entry for entry in fdset.fds if entry.removed or everything]:
                _close(entry.fd)
                fdset.fds.remove(entry)
        self._sets = [fdset for fdset in self._sets if fdset.fds]


class SessionFds:
    """One session's received and named descriptors (and the process's fd sets)."""

    def __init__(self, fdsets: FdSets | None = None, *, max_named: int = MAX_NAMED_FDS) -> None:
        #: The process's fd sets.
        self.fdsets = fdsets if fdsets is not None else FdSets()
        self._received: list[int] = []
        self._named: dict[str, int] = {}
        self._max_named = max_named
        self._closed = False
        self.fdsets.session_opened()

    @property
    def held(self) -> int:
        """Descriptors this session holds now (received and named)."""
        return len(self._received) + len(self._named)

    def receive(self, fds: Iterable[int]) -> None:
        """A message brought ``fds``: they replace the unclaimed ones of an earlier message.

        They are made blocking (SCM_RIGHTS keeps the sender's O_NONBLOCK; QEMU clears it too).
        """
        fds = list(fds)
        if self._closed:
            for fd in fds:
                _close(fd)
            return
        for fd in self._received:
            _close(fd)
        self._received = fds[:MAX_FDS_PER_MESSAGE]
        for fd in fds[MAX_FDS_PER_MESSAGE:]:
            _close(fd)
        for fd in self._received:
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)

    def take_received(self) -> int:
        """The first descriptor of the last message (the rest are closed), or QEMU's error."""
        if not self._received:
            raise GenericError(NO_FD)
        first, *rest = self._received
        self._received = []
        for fd in rest:
            _close(fd)
        return first

    def getfd(self, name: str) -> None:
        """``getfd``: name the received descriptor (replacing, and closing, one of the same name)."""
        fd = self.take_received()
        if name and name[0] in "0123456789":  # qemu_isdigit: ASCII digits only
            _close(fd)
            raise GenericError("Parameter 'fdname' expects a name not starting with a digit")
        previous = self._named.get(name)
        if previous is None and len(self._named) >= self._max_named:
            _close(fd)
            raise GenericError(
                f"qmpd holds at most {self._max_named} named file descriptors per monitor session (closefd frees one)"
            )
        self._named[name] = fd
        if previous is not None:
            _close(previous)

    def closefd(self, name: str) -> None:
        """``closefd``."""
        fd = self._named.pop(name, None)
        if fd is None:
            raise GenericError(f"File descriptor named '{name}' not found")
        _close(fd)

    def take(self, name: str) -> int:
        """``fd:NAME`` (QEMU's monitor_get_fd): the named descriptor leaves the table; the caller owns it."""
        fd = self._named.pop(name, None)
        if fd is None:
            raise GenericError(f"File descriptor named '{name}' has not been found")
        return fd

    def close(self) -> None:
        """The session ended: close what it holds."""
        if self._closed:
            return
        self._closed = True
        for fd in [*self._received, *self._named.values()]:
            _close(fd)
        self._received = []
        self._named.clear()
        self.fdsets.session_closed()
