"""The guest's input devices: send-key (QEMU's qapi/ui.json)."""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.devices.ps2 import key_tables


def key_names(keys: list[dict[str, Any]]) -> list[str]:
    """KeyValues as QKeyCodes: a number is QEMU's key number (an unknown one is ``unmapped``)."""
    tables = key_tables()
    return [key["data"] if key["type"] == "qcode" else tables.qcode_of_number(key["data"]) for key in keys]


@qmp_command("send-key")
def send_key(ctx: CommandContext, keys: list[dict[str, Any]], hold_time: int | None = None) -> None:
    ctx.machine.keys.send_keys(key_names(keys), hold_time)
