"""Every QMP command handler, registered: the QMP commands of qmpd.commands and the human monitor's
``human-monitor-command`` (qmpd.hmp.qmp).  Import REGISTRY from here to have them all (a start
loads them one by one instead: qmpd.handler_index)."""

from __future__ import annotations

from qmpd.handler_index import load_all

REGISTRY = load_all()

__all__ = ["REGISTRY"]
