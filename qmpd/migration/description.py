"""The machine description of a state, parsed and checked against the target before any of it is used.

``parse_description`` is the one gate between a state's JSON and the machine: every field's type and
range, every CPU's slot, QOM path, id and type, uniqueness, the boot CPU, the hot-plug block, and
consistency with the target's machine type, -smp, -cpu, RAM and ACPI.  It reads the machine and
changes nothing; it raises one DescriptionError naming the first field that is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qmpd.cpu.cpu_option import property_types
from qmpd.errors import GenericError
from qmpd.machine.runstate import RunState
from qmpd.qom.object import resolve_path
from qmpd.vcpu.engine import CPUSnapshot
from qmpd.vcpu.runner import VCPUState

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

LAPIC_FIELDS = ("tpr", "svr", "ldr", "dfr", "icr_low", "icr_high")
SLOT_FIELDS = ("present", "is_inserting", "is_removing", "fw_remove", "ost_event", "ost_status", "device_id")

_U8, _U16, _U32, _U64, _U128 = (1 << 8) - 1, (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1, (1 << 128) - 1
#: QEMU's anon_count and unattached_count are ints.
_COUNTER = (1 << 31) - 1
#: Each register field of CPUSnapshot: None for one integer, else the tuple's length (pairs for fpr).
_REGISTER_SHAPES: dict[str, int | None] = {
    "gpr": 16, "rip": None, "rflags": None, "selectors": 6, "fs_base": None, "gs_base": None, "ldtr": 4,
    "tr": 4, "gdtr": 2, "idtr": 2, "cr": 4, "dr": 6, "efer": None, "fpcw": None, "fpsw": None,
    "fptag": None, "mxcsr": None, "fpr": 8, "xmm": 16,
}  # fmt: skip
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")
_ANON = re.compile(r"/machine/peripheral-anon/device\[(0|[1-9][0-9]{0,9})\]\Z")
_UNATTACHED = re.compile(r"/machine/unattached/device\[(0|[1-9][0-9]{0,9})\]\Z")
_PERIPHERAL = re.compile(r"/machine/peripheral/([^/]+)\Z")
_OBJECT = re.compile(r"/objects/([^/]+)\Z")


class DescriptionError(GenericError):
    """The machine description of a state does not fit this machine (the text names the field)."""


@dataclass(frozen=True)
class SavedCPU:
    """One present CPU of the saved machine, checked."""

    index: int
    type_name: str
    qom_path: str
    qdev_id: str | None
    hotplugged: bool
    switched: dict[str, bool]
    runner: dict[str, Any]
    registers: CPUSnapshot
    lapic: dict[str, int]


@dataclass(frozen=True)
class SavedMachine:
    """The whole description, checked against the target machine."""

    runstate: str
    anon_count: int
    unattached_count: int
    cpus: tuple[SavedCPU, ...]
    capabilities: dict[str, bool]
    #: The ACPI CPU hot-plug block and GPE registers as in capture, or None without ACPI.
    hotplug_block: dict[str, Any] | None
    #: The PM1 registers (status, enable, control), or None without ACPI or in a state saved before
    #: qmpd had them (the target's power-on values stay).
    pm: dict[str, int] | None = None
    #: The PM base and enable registers of the chipset's PCI config space, or None (an older state:
    #: the target keeps what it started with).
    pci: tuple[int, int] | None = None


def describe(machine: Machine) -> dict[str, Any]:
    """What must be equal on both sides: machine type, topology, CPU model, RAM size, ACPI."""
    smp = machine.spec.smp
    return {
        "type": machine.machine_type.name,
        "smp": [smp.cpus, smp.sockets, smp.dies, smp.cores, smp.threads, smp.max_cpus],
        "cpu": machine.config.cpu,
        "ram_size": machine.board.ram.size,
        "acpi": machine.board.cpuhp is not None,
    }


def anon_number(path: str) -> int | None:
    """N of /machine/peripheral-anon/device[N], else None."""
    match = _ANON.match(path)
    return int(match.group(1)) if match else None


def unattached_number(path: str) -> int | None:
    """N of /machine/unattached/device[N], else None."""
    match = _UNATTACHED.match(path)
    return int(match.group(1)) if match else None


def parse_description(machine: Machine, meta: Any) -> SavedMachine:
    """Check a whole description against ``machine`` (changing nothing); raise DescriptionError."""
    top = _object(meta, "description")
    _check_machine(machine, top)
    anon_count = _integer(top, "anon_count", _COUNTER)
    entries = _list(top, "cpus", machine.spec.smp.max_cpus)
    cpus = tuple(_cpu(machine, entry, f"cpus[{n}]") for n, entry in enumerate(entries))
    if "unattached_count" in top:
        unattached_count = _integer(top, "unattached_count", _COUNTER)
    else:  # a state of a qmpd that did not record it: past every unattached CPU of the state
        numbers = (unattached_number(cpu.qom_path) for cpu in cpus)
        unattached_count = max((n + 1 for n in numbers if n is not None), default=0)
    _check_cpu_set(machine, cpus, anon_count, unattached_count)
    runstate = _string(top, "runstate")
    if runstate not in {state.value for state in RunState}:
        raise DescriptionError(f"invalid machine description: 'runstate': unknown run state {runstate!r}")
    capabilities = top.get("migration_capabilities", {})
    if not isinstance(capabilities, dict) or not all(
        isinstance(k, str) and isinstance(v, bool) for k, v in capabilities.items()
    ):
        raise DescriptionError("invalid machine description: 'migration_capabilities': expected names and booleans")
    return SavedMachine(
        runstate=runstate,
        anon_count=anon_count,
        unattached_count=unattached_count,
        cpus=cpus,
        capabilities=dict(capabilities),
        hotplug_block=_hotplug_block(machine, top, {cpu.index for cpu in cpus}),
        pm=_pm(machine, top),
        pci=_pci(machine, top),
    )


def _check_machine(machine: Machine, top: dict[str, Any]) -> None:
    saved, here = top.get("machine"), describe(machine)
    if not isinstance(saved, dict):
        raise DescriptionError("invalid machine description: 'machine': expected an object")
    for key, value in here.items():
        if saved.get(key) != value or type(saved.get(key)) is not type(value):
            raise DescriptionError(
                f"the saved machine differs from this one in '{key}': saved {saved.get(key)!r}, here {value!r}"
            )


def _cpu(machine: Machine, entry: Any, where: str) -> SavedCPU:
    fields = _object(entry, where)
    index = _integer(fields, "index", machine.spec.smp.max_cpus - 1, where)
    type_name = _string(fields, "type", where)
    if type_name not in machine.registry or not machine.registry.is_a(type_name, machine.spec.cpu_type or ""):
        raise DescriptionError(f"invalid machine description: '{where}.type': not this machine's CPU type")
    qdev_id = fields.get("id")
    if qdev_id is not None and (not isinstance(qdev_id, str) or not _IDENTIFIER.match(qdev_id)):
        raise DescriptionError(f"invalid machine description: '{where}.id': expected an identifier or null")
    return SavedCPU(
        index=index,
        type_name=type_name,
        qom_path=_string(fields, "qom_path", where),
        qdev_id=qdev_id,
        hotplugged=_boolean(fields, "hotplugged", where),
        switched=_switched(fields, where),
        runner=_runner(_object(fields.get("runner"), f"{where}.runner"), f"{where}.runner"),
        registers=_registers(_object(fields.get("registers"), f"{where}.registers"), f"{where}.registers"),
        lapic={name: _integer(_object(fields.get("lapic"), f"{where}.lapic"), name, _U32, f"{where}.lapic")
               for name in LAPIC_FIELDS},
    )  # fmt: skip


def _switched(fields: dict[str, Any], where: str) -> dict[str, bool]:
    switched = _object(fields.get("switched"), f"{where}.switched")
    types = property_types()
    for name, on in switched.items():
        if types.get(name) != "bool" or not isinstance(on, bool):
            raise DescriptionError(f"invalid machine description: '{where}.switched': {name!r} is not a CPU feature")
    return dict(switched)


def _runner(fields: dict[str, Any], where: str) -> dict[str, Any]:
    state = _string(fields, "state", where)
    if state not in {s.value for s in VCPUState if s is not VCPUState.EXITED}:
        raise DescriptionError(f"invalid machine description: '{where}.state': unknown vCPU state {state!r}")
    fault = fields.get("fault")
    if fault is not None and not isinstance(fault, str):
        raise DescriptionError(f"invalid machine description: '{where}.fault': expected a string or null")
    return {
        "state": state,
        "wait_sipi": _boolean(fields, "wait_sipi", where),
        "rip": _integer(fields, "rip", _U64, where),
        "kicked": _boolean(fields, "kicked", where),
        "fault": fault,
        "engine": _boolean(fields, "engine", where),
    }


def _registers(fields: dict[str, Any], where: str) -> CPUSnapshot:
    values: dict[str, Any] = {}
    for name, length in _REGISTER_SHAPES.items():
        if length is None:
            values[name] = _integer(fields, name, _U64, where)
            continue
        items = _list(fields, name, length, where)
        if len(items) != length:
            raise DescriptionError(f"invalid machine description: '{where}.{name}': expected {length} values")
        if name == "fpr":
            values[name] = tuple(_integers(item, 2, _U64, f"{where}.fpr") for item in items)
        else:
            values[name] = _integers(items, length, _U128 if name == "xmm" else _U64, f"{where}.{name}")
    values["halted"] = _boolean(fields, "halted", where)
    return CPUSnapshot(**values)


def _check_cpu_set(machine: Machine, cpus: tuple[SavedCPU, ...], anon_count: int, unattached_count: int) -> None:
    """Slots unique, the boot CPU kept, every other CPU at a path it can take in this machine."""
    indexes = [cpu.index for cpu in cpus]
    if len(set(indexes)) != len(indexes):
        raise DescriptionError("invalid machine description: 'cpus': a slot is listed twice")
    paths = [cpu.qom_path for cpu in cpus]
    if len(set(paths)) != len(paths):
        raise DescriptionError("invalid machine description: 'cpus': a QOM path is listed twice")
    current = {cpu.cpu_index: cpu for cpu in machine.cpus}
    if machine.cpus:
        boot = machine.cpus[0]
        if not any(cpu.index == boot.cpu_index and cpu.qom_path == boot.canonical_path() for cpu in cpus):
            raise DescriptionError(f"invalid machine description: 'cpus': the boot CPU {boot.cpu_index} is missing")
    kept = {cpu.index for cpu in cpus if cpu.index in current and current[cpu.index].canonical_path() == cpu.qom_path}
    leaving = {current[index].canonical_path() for index in current if index not in kept}
    ids = [cpu.qdev_id for cpu in cpus if cpu.qdev_id is not None]
    if len(set(ids)) != len(ids):
        raise DescriptionError("invalid machine description: 'cpus': a device id is listed twice")
    for cpu in cpus:
        if cpu.index not in kept:
            _check_plug(machine, cpu, anon_count, unattached_count, leaving)


def _check_plug(machine: Machine, cpu: SavedCPU, anon_count: int, unattached_count: int, leaving: set[str]) -> None:
    where = f"CPU {cpu.index} at {cpu.qom_path!r}"
    if not machine.machine_type.hotpluggable_cpus:
        raise DescriptionError(f"invalid machine description: {where}: this machine cannot hot-plug CPUs")
    peripheral, objects = _PERIPHERAL.match(cpu.qom_path), _OBJECT.match(cpu.qom_path)
    anon, unattached = anon_number(cpu.qom_path), unattached_number(cpu.qom_path)
    if peripheral is not None:
        fits = cpu.qdev_id == peripheral.group(1)
    elif objects is not None:
        fits = _IDENTIFIER.match(objects.group(1)) is not None
    elif anon is not None:
        fits = cpu.qdev_id is None and anon < anon_count
    elif unattached is not None:
        fits = cpu.qdev_id is None and unattached < max(unattached_count, machine.qom.unattached_count)
    else:
        fits = False
    if not fits:
        raise DescriptionError(f"invalid machine description: {where}: not a path a plugged CPU can have")
    found, _ = resolve_path(machine.qom.root, cpu.qom_path)
    if found is not None and cpu.qom_path not in leaving:
        raise DescriptionError(f"invalid machine description: {where}: that path is taken in this machine")


def _hotplug_block(machine: Machine, top: dict[str, Any], present: set[int]) -> dict[str, Any] | None:
    cpuhp, gpe = machine.board.cpuhp, machine.board.gpe
    if cpuhp is None or gpe is None:
        return None
    block = _object(top.get("cpuhp"), "cpuhp")
    entries = _list(block, "slots", len(cpuhp.slots), "cpuhp")
    if len(entries) != len(cpuhp.slots):
        raise DescriptionError(f"invalid machine description: 'cpuhp.slots': expected {len(cpuhp.slots)} slots")
    slots = [_slot(_object(entry, f"cpuhp.slots[{n}]"), f"cpuhp.slots[{n}]") for n, entry in enumerate(entries)]
    for index, slot in enumerate(slots):
        if slot["present"] != (index in present):
            raise DescriptionError(f"invalid machine description: 'cpuhp.slots[{index}].present' disagrees with 'cpus'")
    registers = _object(block.get("gpe"), "cpuhp.gpe")
    width = (1 << (8 * gpe.half)) - 1
    return {
        "legacy": _boolean(block, "legacy", "cpuhp"),
        "selector": _integer(block, "selector", _U32, "cpuhp"),
        "command": _integer(block, "command", _U8, "cpuhp"),
        "slots": slots,
        "gpe": {name: _integer(registers, name, width, "cpuhp.gpe") for name in ("status", "enable")},
    }


def _pm(machine: Machine, top: dict[str, Any]) -> dict[str, int] | None:
    if machine.board.pm is None or "pm" not in top:
        return None
    registers = _object(top["pm"], "pm")
    return {name: _integer(registers, name, _U16, "pm") for name in ("status", "enable", "control")}


def _pci(machine: Machine, top: dict[str, Any]) -> tuple[int, int] | None:
    if machine.board.pci is None or "pci" not in top:
        return None
    registers = _object(top["pci"], "pci")
    return _integer(registers, "pm_base", _U32, "pci"), _integer(registers, "pm_enable", _U32, "pci")


def _slot(fields: dict[str, Any], where: str) -> dict[str, Any]:
    device_id = fields.get("device_id")
    if device_id is not None and not isinstance(device_id, str):
        raise DescriptionError(f"invalid machine description: '{where}.device_id': expected a string or null")
    slot: dict[str, Any] = {name: _boolean(fields, name, where) for name in SLOT_FIELDS[:4]}
    slot.update({name: _integer(fields, name, _U32, where) for name in ("ost_event", "ost_status")})
    slot["device_id"] = device_id
    return slot


# -- typed field readers ------------------------------------------------------------------------


def _name(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DescriptionError(f"invalid machine description: '{where}': expected an object")
    return value


def _list(fields: dict[str, Any], key: str, most: int, where: str = "") -> list[Any]:
    value = fields.get(key)
    if not isinstance(value, list) or len(value) > most:
        raise DescriptionError(f"invalid machine description: '{_name(where, key)}': expected a list of at most {most}")
    return value


def _string(fields: dict[str, Any], key: str, where: str = "") -> str:
    value = fields.get(key)
    if not isinstance(value, str):
        raise DescriptionError(f"invalid machine description: '{_name(where, key)}': expected a string")
    return value


def _boolean(fields: dict[str, Any], key: str, where: str = "") -> bool:
    value = fields.get(key)
    if not isinstance(value, bool):
        raise DescriptionError(f"invalid machine description: '{_name(where, key)}': expected a boolean")
    return value


def _integer(fields: dict[str, Any], key: str, most: int, where: str = "") -> int:
    return _checked_integer(fields.get(key), most, _name(where, key))


def _checked_integer(value: Any, most: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise DescriptionError(f"invalid machine description: '{name}': expected an integer in 0..{most}")
    return value


def _integers(value: Any, length: int, most: int, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != length:
        raise DescriptionError(f"invalid machine description: '{name}': expected {length} integers")
    return tuple(_checked_integer(item, most, name) for item in value)
