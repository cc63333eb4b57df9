"""qmpd.handler_index: a start imports each handler module with its command's first use, by an index
made (and parity-checked) at install time, and falls back to importing and checking them all when the
index is missing or stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qmpd import handler_index
from qmpd.commands.base import REGISTRY, CommandRegistry
from qmpd.dispatch import Dispatcher
from qmpd.handlers import REGISTRY as EVERY_HANDLER
from qmpd.qapi.schema import Schema
from tests.helpers import REPO

SCHEMA = Schema.load()


def test_the_index_names_the_module_that_registers_each_command() -> None:
    made = handler_index.build()
    assert set(made["commands"]) == set(SCHEMA.commands) == set(EVERY_HANDLER.handlers)
    for name, module in made["commands"].items():
        assert module in handler_index.MODULES
        assert EVERY_HANDLER.handlers[name].__module__ == module
    assert made["signature"] == handler_index.signature(SCHEMA)
    assert json.loads(json.dumps(made)) == made


def test_a_fresh_index_is_used_and_a_stale_or_broken_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "handler-index.json"
    monkeypatch.setattr(handler_index, "INDEX", str(path))
    monkeypatch.setattr(REGISTRY, "modules", {})
    assert handler_index.registry_for(SCHEMA) == (REGISTRY, False)  # no index: every module, checked by dispatch
    handler_index.write(str(path))
    assert handler_index.registry_for(SCHEMA) == (REGISTRY, True)
    assert REGISTRY.modules["query-status"] == "qmpd.commands.runstate"
    made = json.loads(path.read_text())
    for edit in ("module", "schema"):  # a handler module, a schema file: each edited since
        stale = json.loads(json.dumps(made))
        if edit == "module":
            stale["signature"][0][1][2] += 1
        else:
            stale["signature"][1][-1][2] += 1
        path.write_text(json.dumps(stale))
        monkeypatch.setattr(REGISTRY, "modules", {})
        assert handler_index.registry_for(SCHEMA) == (REGISTRY, False) and REGISTRY.modules == {}
    missing = json.loads(json.dumps(made))
    del missing["commands"]["query-status"]  # an index that lacks a command of the schema
    path.write_text(json.dumps(missing))
    assert handler_index.registry_for(SCHEMA)[1] is False
    path.write_text("{")
    assert handler_index.registry_for(SCHEMA)[1] is False
    other = Schema.load(REPO / "schema")  # not the packaged schema's loader: no signature, no index
    assert handler_index.signature(other) is None and handler_index.registry_for(other)[1] is False


def test_the_registry_imports_a_handler_module_on_first_use() -> None:
    code = (
        "import sys\n"
        "from qmpd.commands.base import REGISTRY\n"
        "REGISTRY.modules['query-status'] = 'qmpd.commands.runstate'\n"
        "assert 'qmpd.commands.runstate' not in sys.modules and not REGISTRY.handlers\n"
        "handler = REGISTRY.handler('query-status')\n"
        "assert 'qmpd.commands.runstate' in sys.modules and handler.__name__ == 'query_status'\n"
        "assert 'qmpd.commands.dump' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_dispatch_still_checks_parity_when_the_index_did_not() -> None:
    broken = CommandRegistry()
    with pytest.raises(ValueError, match="has no handler"):
        Dispatcher(SCHEMA, broken, lambda session, worker: None)
    Dispatcher(SCHEMA, broken, lambda session, worker: None, checked=True)  # the index's word is taken
