"""Which module registers each command's handler, so that a start imports a handler module with the
first use of one of its commands instead of all of them before it is ready.

``python -m qmpd.handler_index`` (make's install and bench steps, after the schema bundle) imports
every handler module, checks them against schema/ (the parity check a start then skips) and writes
command -> module to ``handler-index.json``, with the size and mtime of each handler module and the
schema's own signature (qmpd.qapi.schema.signature).  Like the bundle it is a cache, not kept in git:
a start uses it only while all of those are unchanged, and otherwise imports every handler module and
checks parity itself.  ``query-commands`` never depends on it: it lists schema/'s commands.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

from qmpd.cache_file import write_atomically
from qmpd.commands.base import REGISTRY, CommandRegistry
from qmpd.qapi.schema import Schema

#: Every module that registers handlers.
MODULES = (
    "qmpd.commands.control",
    "qmpd.commands.cpu_models",
    "qmpd.commands.dump",
    "qmpd.commands.fds",
    "qmpd.commands.host",
    "qmpd.commands.hotplug",
    "qmpd.commands.input",
    "qmpd.commands.jobs",
    "qmpd.commands.machine",
    "qmpd.commands.memory",
    "qmpd.commands.migration",
    "qmpd.commands.migration_parameters",
    "qmpd.commands.misc",
    "qmpd.commands.qom",
    "qmpd.commands.runstate",
    "qmpd.hmp.qmp",
)
_HERE = os.path.dirname(os.path.realpath(__file__))
#: Written by ``python -m qmpd.handler_index``; not in git.
INDEX = os.path.join(_HERE, "handler-index.json")


def load_all() -> CommandRegistry:
    """REGISTRY with every handler imported."""
    for module in MODULES:
        importlib.import_module(module)
    return REGISTRY


def signature(schema: Schema) -> list[Any] | None:
    """What an index must have been made from: each handler module's path, size and mtime (and this
    module's), then the schema's signature; None when the schema is not the packaged one."""
    if schema.source_signature is None:
        return None
    paths = [os.path.join(_HERE, *module.split(".")[1:]) + ".py" for module in MODULES]
    code = []
    for path in [os.path.realpath(__file__), *paths]:
        stat = os.stat(path)
        code.append([os.path.relpath(path, _HERE), stat.st_size, stat.st_mtime_ns])
    return [code, schema.source_signature]


def _read_index(expected: list[Any]) -> dict[str, str] | None:
    """command -> module from the index if it was made from exactly these files, else None."""
    try:
        with open(INDEX, encoding="utf-8") as stream:
            index = json.load(stream)
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("signature") != expected:
        return None
    commands = index.get("commands")
    return commands if isinstance(commands, dict) else None


def registry_for(schema: Schema) -> tuple[CommandRegistry, bool]:
    """REGISTRY ready to dispatch ``schema``'s commands, and whether its parity with ``schema`` is
    already checked (a fresh index: handler modules load on first use) or not (every module loaded)."""
    expected = signature(schema)
    commands = None if expected is None else _read_index(expected)
    if commands is None or set(commands) != set(schema.commands):
        return load_all(), False
    REGISTRY.modules.update(commands)
    return REGISTRY, True


def build() -> dict[str, Any]:
    """The index for the handler modules and the packaged schema as they are now."""
    registry = load_all()
    commands = {name: handler.__module__ for name, handler in sorted(registry.handlers.items())}
    elsewhere = sorted(name for name, module in commands.items() if module not in MODULES)
    if elsewhere:  # importing the module must be what registers the handler
        raise SystemExit(f"handlers defined outside qmpd.handler_index.MODULES: {elsewhere}")
    schema = Schema.load(bundle=False)
    problems = registry.parity_problems(schema)
    if problems:
        raise SystemExit("schema and handlers disagree:\n  " + "\n  ".join(problems))
    return {"signature": signature(schema), "commands": commands}


def write(path: str = INDEX) -> None:
    """Write the index (atomically: a start reading it meanwhile sees the old one or the new one)."""
    write_atomically(path, json.dumps(build(), separators=(",", ":")).encode("utf-8"), ".handler-index.")


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else INDEX)
