"""The one way qmpd writes its start-up caches (the schema bundle, the handler index, the CPU tables).

Each cache is derived at install time from files shipped with qmpd and keyed by their sizes and
mtimes; writing it atomically means a start reading it meanwhile sees the old file or the new one.
"""

from __future__ import annotations

import os


def write_atomically(path: str, data: bytes, prefix: str) -> None:
    """Write ``data`` to ``path`` atomically and world-readable (every user of an installed qmpd reads
    it; mkstemp makes files 0600)."""
    import tempfile  # not on a start's path (tests/unit/test_startup_imports.py)

    descriptor, temporary = tempfile.mkstemp(prefix=prefix, dir=os.path.dirname(path))
    try:
        os.fchmod(descriptor, 0o644)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
