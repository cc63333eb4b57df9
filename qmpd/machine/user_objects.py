"""Objects under ``/objects``: ``-object`` and ``object-add`` create them by one path, ``object-del`` removes them.

The types are QEMU's user-creatable ones that qmpd has (the memory backends and ``secret``
libvirt passes, inert here; ``qmpd-guest-policy``) and, as a qmpd extension, every concrete
CPU type (an unrealized CPU, plugged by setting a topology thread's ``cpu`` link).  The object
is built and every property set before it is placed, so an error leaves nothing behind.
Property values are JSON from QMP and from ``-object '{...}'``, and text from ``-object
TYPE,k=v`` (parsed by the property's type, as QEMU's keyval visitor does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qmpd.cpu.x86cpu import X86CPU
from qmpd.errors import GenericError
from qmpd.machine.guest_policy import MAX_POLICIES, TYPE_NAME, GuestPolicy
from qmpd.machine.qdev import check_id, parse_text
from qmpd.machine.qom_tree import HostObject, new_object
from qmpd.qemuopts import OptionError, parse_size
from qmpd.qom.object import Object

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

#: qmpd's bound on /objects (QEMU has none): an unrealized CPU costs ~2 KiB, and no machine
#: has more slots than this to plug them into.
MAX_OBJECTS = 1024


#: Memory-backend properties QOM types "int" that QEMU's QAPI reads as sizes (``size=128M``).
_SIZES = {"size", "align"}


def _text_value(kind: str, name: str, text: str) -> Any:
    if kind == "size" or name in _SIZES:
        try:
            return parse_size(text)
        except OptionError:
            raise GenericError(f"Parameter '{name}' expects a size value") from None
    return parse_text(kind, name, text)


def create_object(
    machine: Machine,
    qom_type: str,
    object_id: str,
    props: Mapping[str, Any],
    *,
    text: bool = False,
    command_line: bool = False,
) -> Object:
    """Build, configure and place one object; QEMU's errors, and nothing changed on any of them.

    A type qmpd cannot make is refused with QEMU's text on the command line; over QMP the schema
    has already refused what QEMU would, so a type that got this far is one of QEMU's that qmpd lacks."""
    registry = machine.registry
    info = registry.get(qom_type)
    is_cpu = info is not None and registry.is_a(qom_type, "x86_64-cpu")
    if (
        info is None
        or info.abstract
        or info.factory is None
        or not (is_cpu or registry.is_a(qom_type, "user-creatable"))
    ):
        if command_line:
            raise GenericError(f"Parameter 'qom-type' does not accept value '{qom_type}'")
        raise GenericError(
            f"qmpd cannot create objects of type '{qom_type}': object-add makes unrealized CPUs, "
            f"{TYPE_NAME}, secret and memory-backend objects only"
        )
    check_id(object_id)
    objects = machine.qom.objects
    if objects.child(object_id) is not None:
        raise GenericError(f"attempt to add duplicate property '{object_id}' to object (type 'container')")
    if objects.child_count() - (machine.qom.ram_backend is not None) >= MAX_OBJECTS:
        raise GenericError(f"Too many objects: at most {MAX_OBJECTS} can exist at once (object-del frees one)")
    if qom_type == TYPE_NAME and sum(isinstance(o, GuestPolicy) for _, o in objects.children()) >= MAX_POLICIES:
        raise GenericError(f"Too many {TYPE_NAME} objects: at most {MAX_POLICIES} can exist at once")
    obj: Object = machine.cpu_slots.new_cpu(qom_type) if is_cpu else new_object(qom_type)
    for name, value in props.items():
        prop = obj.find_property(name)
        if is_cpu:
            if name in ("realized", "hotplugged"):
                raise GenericError(f"Property '{qom_type}.{name}' is not writable")
            if prop is None:
                raise GenericError(f"Property '{qom_type}.{name}' not found")
        elif prop is None or prop.setter is None or name == "type":
            raise GenericError(f"Invalid parameter '{name}'" if text else f"Parameter '{name}' is unexpected")
        obj.set_property(name, _text_value(prop.type, name, value) if text else value)
    if isinstance(obj, HostObject):
        obj.complete = True
        if qom_type == "secret" and not {"data", "file"} & set(props):
            raise GenericError("Either 'file' or 'data' must be provided")
        if registry.is_a(qom_type, "memory-backend") and "size" not in props:
            raise GenericError("Parameter 'size' is missing")
    if isinstance(obj, X86CPU):
        obj.qdev_id = object_id
    objects.add_child(object_id, obj)
    return obj


def delete_object(machine: Machine, object_id: str) -> Object:
    """object-del: refused for a plugged CPU and for the machine's RAM backend, as QEMU's."""
    objects = machine.qom.objects
    obj = objects.child(object_id)
    if obj is None:
        raise GenericError(f"object '{object_id}' not found")
    if getattr(obj, "realized", False) or obj is machine.qom.ram_backend:
        raise GenericError(f"object '{object_id}' is in use, can not be deleted")
    objects.remove_child(object_id)
    return obj
