"""Start-up stays light: before the greeting, and up to ready (bench/startup_bench.py's three rows).

A real daemon that answered libvirt's probe, or reached prelaunch with a pc machine, must not have
loaded what only some configurations or commands need (NOT_AT_START); a third test shows that the
check can fail.  Before them, the path to the greeting:

qmpd.main parses the command line, opens the sockets and greets before the daemon is
imported.  Each module below costs milliseconds in a fresh interpreter (measured: dropping
hashlib, ipaddress and ctypes from this path saved 7 ms of about 60, annotations evaluated
at once on its NamedTuples another 6 ms), and none is needed to greet.

The modules that define those NamedTuples, and the records a start makes on its way to ready,
do without ``from __future__ import annotations`` (each says so in one line): typing.NamedTuple
turns every postponed annotation into a ForwardRef, compiling its text, at import.  Those records
are NamedTuples or plain classes with __slots__, never dataclasses (see _dataclasses_defined_in).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ForwardRef

import pytest

from tests.helpers import REPO, RawClient, wait_for_socket
from tests.libvirt_probe import PROBE

#: Modules the daemon needs later, not before its greeting.
HEAVY = (
    "asyncio",
    "uvloop",
    "structlog",
    "unicorn",
    "aiohttp",
    "dataclasses",
    "inspect",
    "hashlib",
    "ipaddress",
    "ctypes",
    "mmap",
    "qmpd.daemon",
    "qmpd.machine.machine",
    "qmpd.migration.stream",
    "qmpd.vcpu.ram",
)


def test_importing_the_entry_point_loads_nothing_heavy() -> None:
    code = "import json, sys; import qmpd.main; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert "qmpd.protocol.early" in loaded
    assert [name for name in HEAVY if name in loaded] == []


def _hints(cls: type) -> dict[str, object]:
    """A record's field annotations: a NamedTuple's own, a plain class's (with __slots__) on its __init__."""
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return dict(cls.__annotations__)
    assert cls.__slots__, cls
    hints = dict(vars(cls)["__init__"].__annotations__)
    assert set(hints) - {"return"} == set(cls.__slots__), cls
    return hints


def test_pre_greeting_records_hold_real_annotations() -> None:
    """typing.NamedTuple turns each postponed (string) annotation into a compiled ForwardRef."""
    from qmpd.cli import _Option
    from qmpd.config import Config, MachineConfig, MonitorConfig
    from qmpd.cpu.models import Feature
    from qmpd.cpu.topology import Slot
    from qmpd.machine.spec import MachineSpec, PortDeviceSpec
    from qmpd.machine.types import MachineType
    from qmpd.vcpu.loader import Firmware

    records = (Config, MachineConfig, MonitorConfig, _Option, Feature, MachineSpec, Firmware, MachineType, Slot)
    for cls in (*records, PortDeviceSpec):
        assert not any(isinstance(hint, str | ForwardRef) for hint in _hints(cls).values()), cls


def test_the_records_a_start_makes_hold_real_annotations() -> None:
    """The same for the records made on the way to ready (they were dataclasses: ~0.5-0.85 ms each)."""
    from qmpd.devices.ps2 import KeyTables
    from qmpd.devices.saved import APICRegisters, PM1Registers, SavedHotplugBlock, SavedI8042, SavedKeyboard, SavedSlot
    from qmpd.machine.qdev import DeviceOptions
    from qmpd.qapi.schema import CommandSpec, EventSpec
    from qmpd.qobject.parser import JSONParseError
    from qmpd.qom.properties import PropertyDef
    from qmpd.vcpu.runner import RunnerState
    from qmpd.vcpu.snapshot import CPUSnapshot

    records = (SavedHotplugBlock, SavedSlot, PM1Registers, SavedI8042, APICRegisters, KeyTables, SavedKeyboard)
    records += (DeviceOptions, CommandSpec, EventSpec, JSONParseError, PropertyDef, RunnerState, CPUSnapshot)
    for cls in records:
        assert not any(isinstance(hint, str | ForwardRef) for hint in _hints(cls).values()), cls


#: Modules a daemon loads only for what a configuration or a command needs: aiohttp and
#: prometheus-client with --http, Unicorn when a vCPU first runs, jsonschema and referencing for a
#: document the argument walker cannot check alone, hashlib and tempfile for a save or a restore,
#: rich and greenlet never (structlog would import them when installed), the human monitor with its first command
#: line, a machine's description and the devices' checked saved states with a migration, the dump's state and file
#: writer with the first dump command (query-dump too), the ELF layout with a dump, a vCPU's registers and run
#: results with its engine or the first register read, /objects' code with the first -object or object-add.
NOT_AT_START = (
    "aiohttp",
    "prometheus_client",
    "unicorn",
    "jsonschema",
    "referencing",
    "rich",
    "greenlet",
    "hashlib",
    "tempfile",
    "pathlib",
    "urllib",
    "ipaddress",
    "qmpd.http",
    "qmpd.vcpu.engine",
    "qmpd.vcpu.native",
    "qmpd.hmp.commands",
    "qmpd.migration.description",
    "qmpd.machine.elf_core",
    "qmpd.machine.guest_dump",
    "qmpd.machine.dump_file",
    "qmpd.vcpu.snapshot",
    "qmpd.machine.user_objects",
    "qmpd.devices.saved",
)

#: Runs qmpd's entry point and writes the names of the modules it loaded to $QMPD_MODULES at exit.
_RECORDING_ENTRY = (
    "import atexit, json, os, sys\n"
    "def _record():\n"
    "    with open(os.environ['QMPD_MODULES'], 'w') as out:\n"
    "        json.dump(sorted(name for name, module in sys.modules.items() if module is not None), out)\n"
    "atexit.register(_record)\n"
    "from qmpd.main import main\n"
    "sys.exit(main())\n"
)


def _modules_after(
    argv: list[str], commands: list[tuple[str, dict[str, object]]], tmp_path: Path, stderr: int | None = None
) -> set[str]:
    """The modules a real daemon started with ``argv`` has loaded once it answered ``commands`` and quit."""
    sock = str(tmp_path / "qmp.sock")
    record = tmp_path / "modules.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), QMPD_MODULES=str(record))
    full = [sys.executable, "-c", _RECORDING_ENTRY, *argv, "-qmp", f"unix:{sock},server=on,wait=off"]
    process = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    try:
        wait_for_socket(sock, process)
        with RawClient(sock) as client:
            client.negotiate()
            for name, arguments in commands:
                reply = client.execute(name, arguments)
                assert "return" in reply or "error" in reply, (name, reply)  # some are refused, as by QEMU
            assert client.execute("quit") == {"return": {}}
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return set(json.loads(record.read_text()))


#: Handler modules (and what only they use) that a start reaching prelaunch never needs: each
#: handler module loads with the first use of one of its commands (qmpd.handler_index); qdev's
#: option parsing with -object, object-add, device_add or the device queries (libvirt's probe).
NOT_BEFORE_THEIR_COMMANDS = (
    "qmpd.commands.cpu_models",
    "qmpd.commands.dump",
    "qmpd.commands.hotplug",
    "qmpd.commands.memory",
    "qmpd.commands.migration",
    "qmpd.commands.qom",
    "qmpd.hmp",
    "qmpd.cpu.expansion",
    "qmpd.machine.qdev",
)


def _heavy(loaded: set[str], heavy: tuple[str, ...] = NOT_AT_START) -> list[str]:
    return sorted(name for name in loaded if any(name == h or name.startswith(h + ".") for h in heavy))


@pytest.fixture(scope="module", autouse=True)
def _fresh_handler_index() -> None:
    """The daemons below load handler modules on first use only with a fresh index (make's install
    step writes it; a tree changed since gets it here, as `make` would)."""
    from qmpd import handler_index
    from qmpd.qapi.schema import Schema

    expected = handler_index.signature(Schema.load())
    if handler_index._read_index(expected) is None:  # type: ignore[arg-type]
        subprocess.run([sys.executable, "-m", "qmpd.handler_index"], cwd=REPO, check=True)


def test_a_probe_mode_start_answers_libvirt_without_the_heavy_modules(tmp_path: Path) -> None:
    argv = ["-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg"]
    loaded = _modules_after(argv, PROBE, tmp_path)
    assert "qmpd.daemon" in loaded and "qmpd.qapi.introspect" in loaded
    assert _heavy(loaded) == []
    # ctypes (~3 ms) comes with the first access to guest RAM (qmpd.vcpu.ram) or an engine; a probe's
    # -machine none touches neither, and its vCPU thread is named through /proc (qmpd.vcpu.threadname).
    assert "qmpd.vcpu.ram" in loaded and "ctypes" not in loaded


def test_a_probe_logging_into_dev_null_never_loads_structlog(tmp_path: Path) -> None:
    """libvirt's probe (-daemonize: stderr is /dev/null) at the default level: no line would be kept;
    without structlog, nothing the probe loads imports dataclasses (see _dataclasses_defined_in)."""
    argv = ["-S", "-nodefaults", "-machine", "none,accel=kvm:tcg"]
    loaded = _modules_after(argv, PROBE, tmp_path, stderr=subprocess.DEVNULL)
    assert "qmpd.log" in loaded and "structlog" not in loaded
    assert "dataclasses" not in loaded


def _dataclasses_defined_in(modules: list[str]) -> list[str]:
    """The dataclasses these modules define, imported in a fresh interpreter.

    Creating a dataclass costs ~0.5 ms (a frozen one ~0.85 ms: it exec()s generated source for its
    methods), a typing.NamedTuple ~0.15 ms, a plain class ~0.01 ms: the modules a start loads use
    the latter two (a mutable object that is hot: a plain class with __slots__).
    """
    code = (
        "import importlib, json, sys\n"
        "found = []\n"
        "for name in sys.argv[1:]:\n"
        "    for value in vars(importlib.import_module(name)).values():\n"
        "        if isinstance(value, type) and value.__module__ == name and '__dataclass_fields__' in vars(value):\n"
        "            found.append(f'{name}.{value.__qualname__}')\n"
        "print(json.dumps(found))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *modules], cwd=REPO, capture_output=True, text=True, check=True
    )
    return sorted(json.loads(result.stdout))


def test_the_modules_of_a_start_define_no_dataclass(tmp_path: Path) -> None:
    argv = ["-machine", "pc", "-cpu", "Haswell", "-smp", "2,maxcpus=8", "-S", "-nodefaults"]
    loaded = _modules_after(argv, [("query-status", {})], tmp_path)
    ours = sorted(name for name in loaded if name == "qmpd" or name.startswith("qmpd."))
    assert "qmpd.qapi.schema" in ours and "qmpd.devices.acpi_cpuhp" in ours
    assert _dataclasses_defined_in(ours) == []
    # The check can fail: a restore's journal is a dataclass, made with a migration only.
    assert _dataclasses_defined_in(["qmpd.migration.state"]) == ["qmpd.migration.state._Journal"]


def test_a_plain_start_reaches_prelaunch_without_the_heavy_modules(tmp_path: Path) -> None:
    argv = ["-machine", "pc", "-cpu", "Haswell", "-smp", "2,maxcpus=8", "-S", "-nodefaults"]
    loaded = _modules_after(argv, [("query-status", {}), ("query-cpus-fast", {})], tmp_path)
    assert "qmpd.machine.machine" in loaded and "qmpd.vcpu.runner" in loaded
    assert _heavy(loaded) == []
    assert {"qmpd.commands.runstate", "qmpd.commands.control"} <= loaded
    assert _heavy(loaded, NOT_BEFORE_THEIR_COMMANDS) == []


HASWELL = {"type": "static", "model": {"name": "Haswell"}}


def test_the_heavy_modules_still_come_when_needed(tmp_path: Path) -> None:
    """The check above can fail: a command that needs jsonschema, and a running vCPU, load them."""
    argv = ["-machine", "pc", "-smp", "1", "-nodefaults"]
    commands = [("migrate-set-parameters", {"downtime-limit": 100}), ("query-cpu-model-expansion", HASWELL)]
    loaded = _modules_after(argv, commands, tmp_path)
    assert {"jsonschema", "unicorn", "qmpd.vcpu.engine"} <= loaded
    assert {"qmpd.commands.migration_parameters", "qmpd.commands.cpu_models", "qmpd.cpu.expansion"} <= loaded
    assert "qmpd.commands.dump" not in loaded


def test_ordinary_input_never_builds_the_lexers_automaton() -> None:
    """The lexer's table and regular expressions (~2 ms) are built with the first input the streamer's
    fast path leaves to it (malformed JSON); libvirt's well-formed commands never need them."""
    code = (
        "from qmpd.qobject import lexer\n"
        "from qmpd.qobject.streamer import JSONMessageStreamer\n"
        "streamer = JSONMessageStreamer()\n"
        "assert list(streamer.feed(b'{\"execute\": \"stop\"}\\r\\n')) == [{'execute': 'stop'}]\n"
        "print(lexer._automaton.cache_info().currsize)\n"
        "print([item.desc for item in streamer.feed(b'{\"a\": tru}')])\n"
        "print(lexer._automaton.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    built_before, errors, built_after = out.splitlines()
    assert built_before == "0"
    assert errors == "[\"JSON parse error, invalid keyword 'tru'\"]"
    assert built_after == "1"


def test_the_schema_makes_each_spec_with_its_first_lookup() -> None:
    """Making the specs of all 79 commands and 12 events took ~1.3 ms of every start, which looks up a few."""
    from qmpd.qapi.schema import Schema

    schema = Schema.load()
    assert "query-status" in schema.commands and "no-such-command" not in schema.commands
    assert (
        len(schema.commands) == len(list(schema.commands)) > 70 and len(schema.events) == len(list(schema.events)) > 10
    )
    assert schema.commands._made == {} and schema.events._made == {}
    spec = schema.commands["query-status"]
    assert schema.commands.get("query-status") is spec and list(schema.commands._made) == ["query-status"]
    assert schema.commands.get("no-such-command") is None and list(schema.commands._made) == ["query-status"]
    assert [event.name for event in schema.events.values()] == list(schema.events)


def test_a_bundled_schema_loads_each_document_with_its_first_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading all 199 documents of the bundle took ~1.7 ms of every start, which reads a few."""
    from qmpd.qapi import bundle, schema

    path = tmp_path / "schema-bundle.marshal"
    monkeypatch.setattr(schema, "BUNDLE", str(path))
    bundle.write(str(path))
    loaded = schema.Schema.load()
    documents = loaded.documents
    assert isinstance(documents, schema.LazyValues) and documents._made == {}
    assert "query-status" in loaded.commands and "SHUTDOWN" in loaded.events and documents._made == {}
    spec = loaded.commands["query-status"]
    assert list(documents._made) == [spec.uri]
    assert dict(documents) == schema.Schema.load(bundle=False).documents
