"""qmpd: a QMP-compatible machine daemon with vCPUs that run on Unicorn."""

from __future__ import annotations

from qmpd.code_bundle import install

__version__ = "0.1.0"

install()  # qmpd's modules from code-bundle.marshal while it matches their sources (qmpd/code_bundle.py)
