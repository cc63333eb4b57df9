"""Every QMP command handler, registered: the QMP commands of qmpd.commands and the human monitor's
``human-monitor-command`` (qmpd.hmp.qmp).  Import REGISTRY from here to have them all."""

from __future__ import annotations

from qmpd.commands import REGISTRY
from qmpd.hmp import qmp as _human_monitor_command  # noqa: F401  (registers human-monitor-command)

__all__ = ["REGISTRY"]
