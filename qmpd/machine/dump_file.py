"""Memory dump files (``memsave``/``pmemsave``): where they may go, and how they are opened and written.

QEMU opens the target with ``fopen(name, "wb")`` and writes it 1 KiB at a
time under its big lock, so a FIFO with no reader blocks the whole monitor in
``open``.  qmpd calls these functions from a worker thread and never blocks
on the file's kind:

* the name is QEMU's C string (modified UTF-8: NUL is ``C0 80``), so a NUL
  in a JSON name makes the same file as in QEMU instead of a Python error;
* the file must lie inside the dump directory (symbolic links resolved);
* it is opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO without a reader
  fails at once, a FIFO with one does not wait) and anything that is not a
  regular file is refused before it is truncated or written;
* it is written in place, as QEMU does: the file keeps its inode, owner,
  mode and hard links, and nothing else is ever created or renamed in the
  directory.  A reader may see a partial dump until the command replies.

Data comes as an iterable of chunks, so peak memory is one chunk, whatever
the dump size.  Dumps are written one at a time (``_ONE_DUMP``): two dumps
to the same name cannot interleave, and disk bandwidth is not split.

``dump-guest-memory`` opens its file first and writes it later (maybe after
its reply): it uses ``open_dump`` and ``stream_to``, which leave the error
texts to it, and creates its file as QEMU does, readable by its owner only.
A descriptor given to ``stream_to`` may be a pipe or socket in non-blocking
mode (a passed fd): a full one is waited on instead of failing with EAGAIN.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
from collections.abc import Iterable

from qmpd.errors import GenericError

#: Bytes read from guest RAM and written per step: bounds a dump's memory, whatever its size.
DUMP_CHUNK = 1 << 20
#: QEMU's QERR_IO_ERROR, its answer when fwrite fails.
IO_ERROR = "An IO error has occurred"
#: Mode of a new file from memsave/pmemsave (fopen's), less the umask.
MEMSAVE_MODE = 0o666
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_ONE_DUMP = threading.Lock()


def c_name(filename: str) -> bytes:
    """The bytes QEMU would pass to fopen for a QMP string (NUL travels as ``C0 80``)."""
    return filename.encode("utf-8", "surrogatepass").replace(b"\0", b"\xc0\x80")


def dump_path(dump_dir: str, filename: str) -> bytes:
    """Where ``filename`` goes: inside ``dump_dir`` only, links resolved."""
    root = os.path.realpath(os.fsencode(dump_dir))
    path = os.path.realpath(os.path.join(root, c_name(filename)))
    if os.path.commonpath([root, path]) != root:
        shown = os.fsdecode(root)
        raise GenericError(f"Could not open '{filename}': qmpd writes memory dumps only inside {shown}")
    return path


def write_dump(dump_dir: str, filename: str, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``filename`` in the dump directory; blocking, so call it from a worker thread.

    ``chunks`` is consumed only once the file is open: an error it raises
    (a virtual page that became unmapped) leaves the partial file, as QEMU does.
    """
    path = dump_path(dump_dir, filename)
    with _ONE_DUMP:
        fd = _open_regular(path, filename, MEMSAVE_MODE)
        try:
            _write_chunks(fd, chunks)
        except OSError:
            raise GenericError(IO_ERROR) from None
        finally:
            os.close(fd)


def open_dump(dump_dir: str, filename: str, mode: int) -> int:
    """Open (create, truncate) ``filename`` in the dump directory under the same rules; blocking."""
    return _open_regular(dump_path(dump_dir, filename), filename, mode)


def stream_to(fd: int, chunks: Iterable[bytes]) -> None:
    """Write every chunk to ``fd``, one dump at a time; OSError tells the caller what failed."""
    with _ONE_DUMP:
        _write_chunks(fd, chunks)


def _write_chunks(fd: int, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        _write_all(fd, chunk)


def _open_regular(path: bytes, filename: str, mode: int) -> int:
    """Open for writing without following a link or waiting on a FIFO; truncate only a regular file."""
    try:
        fd = os.open(path, _OPEN_FLAGS, mode)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ELOOP):  # FIFO or socket without a reader; a link swapped in
            raise GenericError(_not_regular(filename)) from None
        raise GenericError(f"Could not open '{filename}': {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise GenericError(_not_regular(filename))
        os.ftruncate(fd, 0)
    except OSError:
        os.close(fd)
        raise GenericError(IO_ERROR) from None
    except GenericError:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # a non-blocking pipe or socket is full: wait until it drains
            select.select([], [fd], [])


def _not_regular(filename: str) -> str:
    return f"Could not open '{filename}': qmpd writes memory dumps only to regular files"
