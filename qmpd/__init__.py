"""qmpd: a QMP-compatible machine daemon with vCPUs that run on Unicorn."""

from __future__ import annotations

__version__ = "0.1.0"
