"""The fd store (qmpd.fdstore): QEMU's texts, the bounds, and that every descriptor is closed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from qmpd.errors import GenericError
from qmpd.fdstore import MAX_FDS_PER_MESSAGE, FdSets, SessionFds


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """Fresh descriptors (duplicates of /dev/null) the test hands to the store; all closed afterwards."""
    made: list[int] = []
    null = os.open(os.devnull, os.O_RDONLY)
    made.extend(os.dup(null) for _ in range(40))
    os.close(null)
    yield made
    for fd in made:
        with contextlib.suppress(OSError):
            os.close(fd)


def test_getfd_takes_the_first_of_the_last_message_and_closes_the_rest(fds: list[int]) -> None:
    table = SessionFds()
    with pytest.raises(GenericError, match="No file descriptor supplied via SCM_RIGHTS"):
        table.getfd("x")
    table.receive(fds[0:2])
    table.receive(fds[2:4])  # replaces the unclaimed first message
    assert not _is_open(fds[0]) and not _is_open(fds[1])
    table.getfd("x")
    assert _is_open(fds[2]) and not _is_open(fds[3])
    assert table.take("x") == fds[2]
    with pytest.raises(GenericError, match="File descriptor named 'x' has not been found"):
        table.take("x")


def test_names_starting_with_a_digit_are_refused_and_the_descriptor_closed(fds: list[int]) -> None:
    table = SessionFds()
    table.receive([fds[0]])
    with pytest.raises(GenericError, match="expects a name not starting with a digit"):
        table.getfd("9lives")
    assert not _is_open(fds[0])
    table.receive([fds[1]])
    table.getfd("")  # QEMU accepts an empty name
    table.closefd("")
    with pytest.raises(GenericError, match="File descriptor named '' not found"):
        table.closefd("")


def test_named_descriptors_are_bounded_and_closed_with_the_session(fds: list[int]) -> None:
    table = SessionFds(max_named=4)
    for index in range(4):
        table.receive([fds[index]])
        table.getfd(f"n{index}")
    table.receive([fds[4]])
    with pytest.raises(GenericError, match="at most 4 named file descriptors"):
        table.getfd("n4")
    assert not _is_open(fds[4])
    table.receive([fds[5]])
    table.getfd("n0")  # replacing needs no room
    assert not _is_open(fds[0])
    table.receive([fds[6]])
    assert table.held == 5
    table.close()
    assert not any(_is_open(fd) for fd in fds[:7])
    table.receive([fds[7]])  # late arrivals after the end are closed at once
    assert not _is_open(fds[7])


def test_one_message_holds_at_most_max_fds_per_message(fds: list[int]) -> None:
    table = SessionFds()
    table.receive(fds[: MAX_FDS_PER_MESSAGE + 3])
    assert table.held == MAX_FDS_PER_MESSAGE
    assert not any(_is_open(fd) for fd in fds[MAX_FDS_PER_MESSAGE : MAX_FDS_PER_MESSAGE + 3])


def test_fd_sets_order_ids_bounds_and_qemu_cleanup(fds: list[int]) -> None:
    running = False
    sets = FdSets(running=lambda: running, limit=5)
    session = SessionFds(sets)
    assert sets.add(fds[0], None, None) == {"fdset-id": 0, "fd": fds[0]}
    assert sets.add(fds[1], 3, "three")["fdset-id"] == 3
    assert sets.add(fds[2], None, None)["fdset-id"] == 1, "the lowest free id"
    assert sets.add(fds[3], 3, None)["fdset-id"] == 3
    with pytest.raises(GenericError, match="Parameter 'fdset-id' expects a non-negative value"):
        sets.add(fds[4], -1, None)
    assert not _is_open(fds[4])
    assert [entry["fdset-id"] for entry in sets.query()] == [3, 1, 0]
    assert sets.query()[0]["fds"] == [{"fd": fds[1], "opaque": "three"}, {"fd": fds[3]}]
    sets.add(fds[5], None, None)
    with pytest.raises(GenericError, match="at most 5 file descriptors in fd sets"):
        sets.add(fds[6], None, None)
    assert not _is_open(fds[6])
    with pytest.raises(GenericError, match="File descriptor named 'fdset-id:3, fd:999' not found"):
        sets.remove(3, 999)
    with pytest.raises(GenericError, match="File descriptor named 'fdset-id:8' not found"):
        sets.remove(8, None)
    sets.remove(3, None)
    assert len(sets) == 5 and _is_open(fds[1]), "not running: QEMU 7.2 keeps removed descriptors"
    running = True
    sets.remove(0, fds[0])
    assert not _is_open(fds[0]) and not _is_open(fds[1]) and not _is_open(fds[3])
    assert [entry["fdset-id"] for entry in sets.query()] == [2, 1]
    session.close()  # the last session ended while running: everything goes
    assert sets.query() == [] and not _is_open(fds[2]) and not _is_open(fds[5])
