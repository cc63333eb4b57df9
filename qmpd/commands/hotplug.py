"""CPU hot-plug commands: device_add/device_del, the legacy cpu-add and cpu_set, object-add/object-del.

device_add/device_del go through qdev (qmpd.machine.qdev), cpu-add/cpu_set through
qmpd.machine.legacy_cpu; both reach the machine's hot-plug handler.
"""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.machine.legacy_cpu import cpu_add, cpu_set
from qmpd.machine.qdev import options_from_arguments, qdev_device_add, qdev_device_del


@qmp_command("device_add")
def qmp_device_add(ctx: CommandContext, **arguments: Any) -> None:
    qdev_device_add(ctx.machine, options_from_arguments(arguments))


@qmp_command("device_del")
def qmp_device_del(ctx: CommandContext, id: str) -> None:
    qdev_device_del(ctx.machine, id)


@qmp_command("cpu-add")
def qmp_cpu_add(ctx: CommandContext, id: int) -> None:
    cpu_add(ctx.machine, id)


@qmp_command("cpu_set")
def qmp_cpu_set(ctx: CommandContext, cpu: int, state: str) -> None:
    cpu_set(ctx.machine, cpu, state)


@qmp_command("object-add")
def object_add(ctx: CommandContext, qom_type: str, id: str, **props: Any) -> None:
    ctx.machine.object_add(qom_type, id, props)


@qmp_command("object-del")
def object_del(ctx: CommandContext, id: str) -> None:
    ctx.machine.object_del(id)
