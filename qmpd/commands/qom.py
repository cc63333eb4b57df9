"""QOM commands: list, get and set properties; list types and their properties."""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import DeviceNotFound, GenericError
from qmpd.machine.qdev import device_properties
from qmpd.machine.qom_tree import new_object
from qmpd.qom.object import lookup


@qmp_command("qom-list")
def qom_list(ctx: CommandContext, path: str) -> list[dict[str, Any]]:
    obj = lookup(ctx.machine.qom.root, path, report_ambiguity=True)
    return [prop.info() for prop in obj.properties()]


@qmp_command("qom-get")
def qom_get(ctx: CommandContext, path: str, property: str) -> Any:
    return lookup(ctx.machine.qom.root, path).get_property(property)


@qmp_command("qom-set")
def qom_set(ctx: CommandContext, path: str, property: str, value: Any) -> None:
    ctx.machine.qom_set(lookup(ctx.machine.qom.root, path), property, value)


@qmp_command("qom-list-types")
def qom_list_types(ctx: CommandContext, implements: str | None = None, abstract: bool = False) -> list[dict[str, Any]]:
    out = []
    for info in ctx.machine.registry.list_types(implements, abstract):
        entry: dict[str, Any] = {"name": info.name}
        if info.abstract:
            entry["abstract"] = True
        if info.parent is not None:
            entry["parent"] = info.parent
        out.append(entry)
    return out


@qmp_command("qom-list-properties")
def qom_list_properties(ctx: CommandContext, typename: str) -> list[dict[str, Any]]:
    registry = ctx.machine.registry
    info = registry.get(typename)
    if info is None:
        raise DeviceNotFound(f"Class '{typename}' not found")
    if any(ancestor.name == "interface" for ancestor in registry.ancestry(typename)):
        raise GenericError("Parameter 'typename' expects a QOM type")
    if info.abstract or info.factory is None:
        return [prop.info(description=True) for prop in registry.class_properties(typename) if not prop.instance]
    return [prop.info(description=True) for prop in new_object(typename).properties()]


@qmp_command("device-list-properties")
def qmp_device_list_properties(ctx: CommandContext, typename: str) -> list[dict[str, Any]]:
    return device_properties(typename)
