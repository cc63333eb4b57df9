"""The path before the greeting stays light: start to greeting is a benchmark goal (≤ 2x QEMU).

qmpd.main parses the command line, opens the sockets and greets before the daemon is
imported.  Each module below costs milliseconds in a fresh interpreter (measured: dropping
hashlib, ipaddress and ctypes from this path saved 7 ms of about 60, annotations evaluated
at once on its NamedTuples another 6 ms), and none is needed to greet.

The modules that define those NamedTuples do without ``from __future__ import annotations``
(each says so in one line): typing.NamedTuple turns every postponed annotation into a
ForwardRef, compiling its text, at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import ForwardRef

from tests.helpers import REPO

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


def test_pre_greeting_named_tuples_hold_real_annotations() -> None:
    """typing.NamedTuple turns each postponed (string) annotation into a compiled ForwardRef."""
    from qmpd.cli import _Option
    from qmpd.config import Config, MachineConfig, MonitorConfig
    from qmpd.cpu.models import Feature
    from qmpd.machine.spec import MachineSpec
    from qmpd.vcpu.loader import Firmware

    for cls in (Config, MachineConfig, MonitorConfig, _Option, Feature, MachineSpec, Firmware):
        assert not any(isinstance(hint, str | ForwardRef) for hint in cls.__annotations__.values()), cls
