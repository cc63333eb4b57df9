"""Machine queries: machine types, CPU slots, running CPUs, ACPI OSPM status."""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.machine.types import MACHINE_TYPES
from qmpd.qapi.host_tables import in_qemu_order


@qmp_command("query-machines")
def query_machines(ctx: CommandContext) -> list[dict[str, Any]]:
    out = []
    by_name = {machine_type.name: machine_type for machine_type in MACHINE_TYPES}
    for name in in_qemu_order(by_name, "machine_order"):  # QEMU's (hash table) order
        machine_type = by_name[name]
        entry: dict[str, Any] = {
            "name": machine_type.name,
            "cpu-max": machine_type.max_cpus,
            "hotpluggable-cpus": machine_type.hotpluggable_cpus,
            "numa-mem-supported": False,
            "deprecated": False,
            "default-ram-id": machine_type.default_ram_id,
        }
        if machine_type.alias:
            entry["alias"] = machine_type.alias
        if machine_type.is_default:
            entry["is-default"] = True
        if machine_type.default_cpu_type is not None:
            entry["default-cpu-type"] = machine_type.default_cpu_type
        out.append(entry)
    return out


@qmp_command("query-hotpluggable-cpus")
def query_hotpluggable_cpus(ctx: CommandContext) -> list[dict[str, Any]]:
    return ctx.machine.cpu_slots.hotpluggable_cpus()


@qmp_command("query-cpus-fast")
def query_cpus_fast(ctx: CommandContext) -> list[dict[str, Any]]:
    return ctx.machine.cpu_slots.cpus_fast()


@qmp_command("query-acpi-ospm-status")
def query_acpi_ospm_status(ctx: CommandContext) -> list[dict[str, Any]]:
    return ctx.machine.acpi_ospm_status()
