"""``python -m qmpd.cpu.tables``: what a start needs of the CPU tables in ``data/``, derived once.

Reading ``data/`` and deriving the models, their properties and ``query-cpu-definitions``' answer
cost a start ~10 ms of JSON parsing and decoding (most of it the models' raw CPUID, which only a
running vCPU needs).  This file is a cache of that work, never a second description: written by
make's install and bench steps and the Dockerfile from ``data/`` and the code that derives from it,
not kept in git, and used only while each of those files has the size and mtime it was made from
(and by the interpreter version that wrote it); otherwise every table is derived from ``data/`` as
before.  It keeps ``query-cpu-definitions``' answer as the text QEMU writes, and the QDict bucket
of every CPU property name, the keys of an expansion's ``props``, so that encoding one does not hash
them.  tests/unit/test_cpu_tables.py checks that what it holds is what ``data/`` gives.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import marshal
import os
import sys
from functools import cache
from typing import Any

from qmpd.cache_file import interned, write_atomically

_HERE = os.path.dirname(os.path.realpath(__file__))
#: Where the derived tables live (git-ignored).
TABLES = os.path.join(_HERE, "cpu-tables.marshal")
#: The inputs a cache was derived from: the tables and the code that reads them (paths below qmpd/).
DERIVED_FROM = (
    "cpu/data/x86_cpu_properties.json",
    "cpu/data/x86_cpu_models.json",
    "cpu/models.py",
    "cpu/expansion.py",
    "cpu/tables.py",
    "qobject/writer.py",
)


def signature() -> list[Any]:
    """What a cache must have been made from: each input's path, size and mtime, and the interpreter
    (marshal's format is its own)."""
    package = os.path.dirname(_HERE)
    out: list[Any] = [sys.version, marshal.version]
    for relative in DERIVED_FROM:
        stat = os.stat(os.path.join(package, relative))
        out.append((relative, stat.st_size, stat.st_mtime_ns))
    return out


@cache
def cached() -> dict[str, Any] | None:
    """The derived tables if a cache was made from the inputs as they are now, else None."""
    try:
        expected = signature()
        with open(TABLES, "rb") as stream:
            made = marshal.loads(stream.read())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(made, dict) or made.get("signature") != expected:
        return None
    from qmpd.qobject.writer import seed_buckets

    seed_buckets(made["buckets"])
    return made


def build() -> dict[str, Any]:
    """The cache's contents for ``data/`` as it is now (derived, never read from a cache)."""
    from qmpd.cpu import expansion, models
    from qmpd.qobject.writer import encode_value, qdict_bucket

    properties = models.derive_properties()
    return {
        "signature": signature(),
        "properties": tuple(models.property_row(info) for info in properties),
        "feature_words": models.derive_feature_words(),
        "expansion_lists": models.derive_expansion_lists(),
        "models": tuple(models.model_row(model) for model in models.derive_models().values()),
        "definitions_text": encode_value(expansion.derive_definitions()),
        "buckets": {info.name: qdict_bucket(info.name) for info in properties},
    }


def write(path: str = TABLES) -> None:
    """Write the cache (atomically)."""
    write_atomically(path, marshal.dumps(interned(build())), ".cpu-tables.")


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else TABLES)
