"""``python -m qmpd.qapi.bundle``: schema/ in one file, with query-qmp-schema's answer derived from it.

A start reads this one file instead of every document (163 opens and reads) and answers the first
``query-qmp-schema`` without building or encoding it (the answer is kept as QEMU writes it).  The
bundle is a cache, never a second description: generated from schema/ by the install step (``make``)
and the benchmark step, not kept in git, and used only while every file of schema/, and the loader,
introspection and encoding code, have the size and mtime it was made from, by the interpreter that
wrote it; otherwise qmpd reads schema/ itself.  tests/unit/test_schema.py checks that what it holds
is what schema/ gives.
"""

from __future__ import annotations

import marshal
import sys

from qmpd.cache_file import interned, write_atomically
from qmpd.qapi.introspect import introspection_reply
from qmpd.qapi.schema import BUNDLE, Schema, _json_files, _schema_root, signature


def build() -> dict[str, object]:
    """The bundle's contents for schema/ as it is now."""
    files = _json_files(_schema_root())
    schema = Schema.load(bundle=False)
    return {
        "signature": signature(files),
        # Each document marshalled on its own, loaded with its first lookup (qmpd.qapi.schema.LazyValues).
        "documents": {uri: marshal.dumps(interned(document)) for uri, document in schema.documents.items()},
        "titles": {uri: document["title"] for uri, document in schema.documents.items() if "title" in document},
        "introspection_text": introspection_reply(schema).text,
    }


def write(path: str = BUNDLE) -> None:
    """Write the bundle (atomically), in marshal's format: a start reads it in half the time JSON takes."""
    write_atomically(path, marshal.dumps(interned({**build(), "python": sys.version})), ".schema-bundle.")


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else BUNDLE)
