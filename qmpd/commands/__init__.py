"""QMP command handlers, grouped like the schema (``human-monitor-command`` is in qmpd.hmp.qmp).

Importing this package loads none of them: qmpd.handlers loads them all, a start loads each with its
command's first use (qmpd.handler_index)."""

from __future__ import annotations

from qmpd.commands.base import REGISTRY

__all__ = ["REGISTRY"]
