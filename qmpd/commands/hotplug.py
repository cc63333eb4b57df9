"""CPU hot-plug commands: device_add/device_del, the legacy cpu-add and cpu_set, object-add/object-del.

device_add/device_del go through qdev (qmpd.machine.qdev), cpu-add/cpu_set through
qmpd.machine.legacy_cpu; both reach the machine's hot-plug handler.
"""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError
from qmpd.machine.legacy_cpu import cpu_add, cpu_set
from qmpd.machine.qdev import check_id, options_from_arguments, qdev_device_add, qdev_device_del
from qmpd.qom.object import Object

#: qmpd's bound on /objects (QEMU has none): an unrealized CPU costs ~2 KiB, and no machine
#: has more slots than this to plug them into.
MAX_OBJECTS = 1024


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
    machine = ctx.machine
    info = machine.registry.get(qom_type)
    if info is None or info.abstract or not machine.registry.is_a(qom_type, "x86_64-cpu"):
        # The schema took one of QEMU's object types (memory backends, secrets, iothreads, ...): qmpd has none.
        raise GenericError(f"qmpd cannot create objects of type '{qom_type}': object-add makes unrealized CPUs only")
    check_id(id)
    objects = machine.qom.objects
    if objects.child(id) is not None:
        raise GenericError(f"attempt to add duplicate property '{id}' to object (type 'container')")
    if objects.child_count() - (machine.qom.ram_backend is not None) >= MAX_OBJECTS:
        raise GenericError(f"Too many objects: at most {MAX_OBJECTS} can exist at once (object-del frees one)")
    cpu = machine.cpu_slots.new_cpu(qom_type)
    for name, value in props.items():
        if name in ("realized", "hotplugged"):
            raise GenericError(f"Property '{qom_type}.{name}' is not writable")
        cpu.set_property(name, value)
    cpu.qdev_id = id
    objects.add_child(id, cpu)


@qmp_command("object-del")
def object_del(ctx: CommandContext, id: str) -> None:
    objects: Object = ctx.machine.qom.objects
    obj = objects.child(id)
    if obj is None:
        raise GenericError(f"object '{id}' not found")
    if getattr(obj, "realized", False) or obj is ctx.machine.qom.ram_backend:
        raise GenericError(f"object '{id}' is in use, can not be deleted")
    objects.remove_child(id)
