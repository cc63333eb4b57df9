"""``python -m qmpd.qapi.bundle``: schema/ in one file, with query-qmp-schema's answer derived from it.

A start reads this one file instead of every document (163 opens and reads) and answers the first
``query-qmp-schema`` without building or encoding it (the answer is kept as QEMU writes it).  The
bundle is a cache, never a second description: generated from schema/ by the install step (``make``)
and the benchmark step, not kept in git, and used only while every file of schema/, and the loader,
introspection and encoding code, have the size and mtime it was made from; otherwise qmpd reads
schema/ itself.  tests/unit/test_schema.py checks that what it holds is what schema/ gives.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from qmpd.qapi.introspect import introspection_reply
from qmpd.qapi.schema import BUNDLE, Schema, _json_files, _schema_root, signature


def build() -> dict[str, object]:
    """The bundle's contents for schema/ as it is now."""
    files = _json_files(_schema_root())
    schema = Schema.load(bundle=False)
    return {
        "signature": signature(files),
        "documents": schema.documents,
        "introspection_text": introspection_reply(schema).text,
    }


def write_json_atomically(path: str, value: object, prefix: str) -> None:
    """Write ``value`` as JSON to ``path`` atomically and world-readable: a start reading it meanwhile sees the
    old file or the new one, and every user of an installed qmpd can read it (mkstemp makes files 0600)."""
    descriptor, temporary = tempfile.mkstemp(prefix=prefix, dir=os.path.dirname(path))
    try:
        os.fchmod(descriptor, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(value, stream, separators=(",", ":"))
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write(path: str = BUNDLE) -> None:
    """Write the bundle (atomically)."""
    write_json_atomically(path, build(), ".schema-bundle.")


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else BUNDLE)
