"""QMP command handlers, grouped like the schema (``human-monitor-command`` is in qmpd.hmp.qmp); qmpd.handlers
loads them all."""

from __future__ import annotations

from qmpd.commands import (
    control,
    cpu_models,
    dump,
    fds,
    host,
    hotplug,
    input,
    jobs,
    machine,
    memory,
    migration,
    migration_parameters,
    misc,
    qom,
    runstate,
)
from qmpd.commands.base import REGISTRY

__all__ = [
    "REGISTRY",
    "control",
    "cpu_models",
    "dump",
    "fds",
    "host",
    "hotplug",
    "input",
    "jobs",
    "machine",
    "memory",
    "migration",
    "migration_parameters",
    "misc",
    "qom",
    "runstate",
]
