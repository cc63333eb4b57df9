"""CPU model queries: the models qmpd offers and their expansions."""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.cpu.expansion import cpu_definitions, expand_model
from qmpd.qobject.writer import Encoded


@qmp_command("query-cpu-definitions")
def query_cpu_definitions(ctx: CommandContext) -> Encoded:
    return cpu_definitions()


@qmp_command("query-cpu-model-expansion")
def query_cpu_model_expansion(ctx: CommandContext, type: str, model: dict[str, Any]) -> dict[str, Any]:
    return expand_model(ctx.machine.registry, type, model["name"], model.get("props"))
