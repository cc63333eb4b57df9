"""QEMU facts libvirt's probe reads that are not about qmpd's machine (tools/gen_qemu_tables.py).

The memory-backend and accelerator QOM types with their properties, the
parameters of each command-line option, and QEMU's migration capabilities.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from functools import cache
from typing import Any

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "qemu_host.json")


@cache
def host_tables() -> dict[str, Any]:
    """The recorded tables."""
    with open(_PATH, encoding="utf-8") as stream:
        tables: dict[str, Any] = json.load(stream)
    return tables


#: -opt name -> the QemuOpts group query-command-line-options reports it under.
OPTION_GROUPS = {"smp": "smp-opts", "m": "memory", "boot": "boot-opts"}


def in_qemu_order(names: Iterable[str], table: str) -> list[str]:
    """``names`` in the order QEMU lists them (``command_order``, ``machine_order``); names QEMU lacks last."""
    order = {name: index for index, name in enumerate(host_tables()[table])}
    return sorted(names, key=lambda name: order.get(name, len(order)))
