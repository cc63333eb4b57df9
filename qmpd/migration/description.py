"""The machine description of a state, parsed and checked against the target before any of it is used.

``parse_description`` is the one gate between a state's JSON and the machine: the machine's own
fields (run state, QOM counters, every CPU's slot, QOM path, id, type and features, uniqueness, the
boot CPU, consistency with the target's machine type, -smp, -cpu, RAM and ACPI), and every owner's
section, checked by its owner (qmpd.vmstate): each CPU's local APIC, runner and registers, and the
machine's devices.  It reads the machine and changes nothing; it raises one StateError naming the
first field that is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from qmpd.cpu.cpu_option import CPUOptionError, parse_cpu_option, property_types
from qmpd.cpu.x86cpu import X86CPU
from qmpd.devices.lapic import LocalAPIC
from qmpd.devices.saved import APICRegisters, SavedHotplugBlock
from qmpd.errors import QMPError
from qmpd.machine.cpu_slots import apply_cpu_option, guest_view
from qmpd.machine.qom_tree import new_object
from qmpd.machine.runstate import RunState
from qmpd.qom.object import resolve_path
from qmpd.vcpu.runner import RunnerState, VCPURunner
from qmpd.vcpu.snapshot import REGISTERS_STATE_NAME, REGISTERS_STATE_VERSION, CPUSnapshot
from qmpd.vmstate import StateError, boolean, check_version, fields, integer, invalid, items, string

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

#: QEMU's anon_count and unattached_count are ints.
_COUNTER = (1 << 31) - 1
#: Device sections a state may lack: qmpd saved them only later (the target keeps its power-on values).
SECTIONS_ADDED_LATER = frozenset({"pm", "pci", "fw_cfg", "i8042", "ioapic", "guest-policy"})
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")
_ANON = re.compile(r"/machine/peripheral-anon/device\[(0|[1-9][0-9]{0,9})\]\Z")
_UNATTACHED = re.compile(r"/machine/unattached/device\[(0|[1-9][0-9]{0,9})\]\Z")
_PERIPHERAL = re.compile(r"/machine/peripheral/([^/]+)\Z")
_OBJECT = re.compile(r"/objects/([^/]+)\Z")


@dataclass(frozen=True)
class SavedCPU:
    """One present CPU of the saved machine, checked."""

    index: int
    type_name: str
    qom_path: str
    qdev_id: str | None
    hotplugged: bool
    switched: dict[str, bool]
    runner: RunnerState
    registers: CPUSnapshot
    lapic: APICRegisters


@dataclass(frozen=True)
class SavedMachine:
    """The whole description, checked against the target machine."""

    runstate: str
    anon_count: int
    unattached_count: int
    cpus: tuple[SavedCPU, ...]
    capabilities: dict[str, bool]
    #: The machine's devices' sections, checked by their owners (Machine.state_owners), by name; a
    #: device whose section a state may lack (SECTIONS_ADDED_LATER) is absent then.
    devices: dict[str, Any]


def describe(machine: Machine) -> dict[str, Any]:
    """What must be equal on both sides: machine type, topology, CPU model, RAM size, ACPI."""
    smp = machine.spec.smp
    return {
        "type": machine.machine_type.name,
        "smp": [smp.cpus, smp.sockets, smp.dies, smp.cores, smp.threads, smp.max_cpus],
        "cpu": machine.config.cpu,
        "ram_size": machine.ram.size,
        "acpi": machine.acpi_cpu_hotplug is not None,
    }


def anon_number(path: str) -> int | None:
    """N of /machine/peripheral-anon/device[N], else None."""
    match = _ANON.match(path)
    return int(match.group(1)) if match else None


def unattached_number(path: str) -> int | None:
    """N of /machine/unattached/device[N], else None."""
    match = _UNATTACHED.match(path)
    return int(match.group(1)) if match else None


def _renumbered(machine: Machine, anon_count: int, cpus: tuple[SavedCPU, ...]) -> tuple[int, tuple[SavedCPU, ...]]:
    """A state of a qmpd whose command-line ISA devices were not in QOM: its anonymous CPUs numbered from 0.

    Today the machine's K anonymous -device objects take device[0..K-1] first (as in QEMU), so a CPU below K
    marks such a state: its anonymous CPUs and counter move up by K, where this qmpd would have put them.
    """
    taken = (
        sum(1 for spec in machine.spec.port_devices if spec.id is None) if "isa.0" in machine.machine_type.buses else 0
    )
    numbers = [n for n in (anon_number(cpu.qom_path) for cpu in cpus) if n is not None]
    if taken == 0 or not numbers or min(numbers) >= taken:
        return anon_count, cpus
    moved = []
    for cpu in cpus:
        number = anon_number(cpu.qom_path)
        if number is not None:
            cpu = replace(cpu, qom_path=f"/machine/peripheral-anon/device[{number + taken}]")
        moved.append(cpu)
    return anon_count + taken, tuple(moved)


def parse_description(machine: Machine, meta: Any) -> SavedMachine:
    """Check a whole description against ``machine`` (changing nothing); raise StateError."""
    top = fields(meta, "description")
    _check_machine(machine, top)
    versions = _versions(top)
    anon_count = integer(top, "anon_count", _COUNTER)
    entries = items(top, "cpus", machine.spec.smp.max_cpus)
    cpus = tuple(_cpu(machine, entry, f"cpus[{n}]", versions) for n, entry in enumerate(entries))
    anon_count, cpus = _renumbered(machine, anon_count, cpus)
    if "unattached_count" in top:
        unattached_count = integer(top, "unattached_count", _COUNTER)
    else:  # a state of a qmpd that did not record it: past every unattached CPU of the state
        numbers = (unattached_number(cpu.qom_path) for cpu in cpus)
        unattached_count = max((n + 1 for n in numbers if n is not None), default=0)
    _check_cpu_set(machine, cpus, anon_count, unattached_count)
    runstate = string(top, "runstate")
    if runstate not in {state.value for state in RunState}:
        raise invalid("runstate", f"unknown run state {runstate!r}")
    capabilities = top.get("migration_capabilities", {})
    if not isinstance(capabilities, dict) or not all(
        isinstance(k, str) and isinstance(v, bool) for k, v in capabilities.items()
    ):
        raise invalid("migration_capabilities", "expected names and booleans")
    return SavedMachine(
        runstate=runstate,
        anon_count=anon_count,
        unattached_count=unattached_count,
        cpus=cpus,
        capabilities=dict(capabilities),
        devices=_devices(machine, top, versions, {cpu.index for cpu in cpus}),
    )


def _check_machine(machine: Machine, top: dict[str, Any]) -> None:
    saved, here = top.get("machine"), describe(machine)
    if not isinstance(saved, dict):
        raise invalid("machine", "expected an object")
    for key, value in here.items():
        if key == "cpu" and _same_cpu_option(saved.get(key), value):
            continue
        if saved.get(key) != value or type(saved.get(key)) is not type(value):
            raise StateError(
                f"the saved machine differs from this one in '{key}': saved {saved.get(key)!r}, here {value!r}"
            )


def _same_cpu_option(saved: Any, here: str | None) -> bool:
    """Whether two -cpu texts give the guest the same CPU (libvirt restores a domain with its CPU's
    features spelled out, ``Haswell,fma=off,...``, where the source had ``Haswell``)."""
    if not isinstance(saved, str) or here is None:
        return False
    types = property_types()
    views: list[tuple[Any, ...]] = []
    try:
        for option in (parse_cpu_option(text) for text in (saved, here)):
            cpu = new_object(option.model.typename)
            assert isinstance(cpu, X86CPU)
            apply_cpu_option(cpu, option)
            others = sorted((name, value) for name, value in option.globals if types.get(name) != "bool")
            views.append((guest_view(cpu), others))
    except (CPUOptionError, QMPError):  # a saved text this qmpd cannot take: not the same CPU
        return False
    return views[0] == views[1]


def _versions(top: dict[str, Any]) -> dict[str, Any]:
    """Each section's version; a state saved before qmpd versioned them has version 1 of every one."""
    return fields(top.get("state_versions", {}), "state_versions")


def _version(versions: dict[str, Any], name: str, newest: int) -> int:
    return check_version(name, versions.get(name, 1), newest)


def _cpu(machine: Machine, entry: Any, where: str, versions: dict[str, Any]) -> SavedCPU:
    cpu = fields(entry, where)
    index = integer(cpu, "index", machine.spec.smp.max_cpus - 1, where)
    type_name = string(cpu, "type", where)
    if type_name not in machine.registry or not machine.registry.is_a(type_name, machine.spec.cpu_type or ""):
        raise invalid(f"{where}.type", "not this machine's CPU type")
    qdev_id = cpu.get("id")
    if qdev_id is not None and (not isinstance(qdev_id, str) or not _IDENTIFIER.match(qdev_id)):
        raise invalid(f"{where}.id", "expected an identifier or null")
    qom_path = string(cpu, "qom_path", where)
    hotplugged = boolean(cpu, "hotplugged", where)
    switched = _switched(cpu, where)
    runner = VCPURunner.check_state(
        cpu.get(VCPURunner.state_name),
        _version(versions, VCPURunner.state_name, VCPURunner.state_version),
        f"{where}.{VCPURunner.state_name}",
    )
    registers = CPUSnapshot.check_state(
        cpu.get(REGISTERS_STATE_NAME),
        _version(versions, REGISTERS_STATE_NAME, REGISTERS_STATE_VERSION),
        f"{where}.{REGISTERS_STATE_NAME}",
    )
    lapic = LocalAPIC.check_state(
        cpu.get(LocalAPIC.state_name),
        _version(versions, LocalAPIC.state_name, LocalAPIC.state_version),
        f"{where}.{LocalAPIC.state_name}",
    )
    return SavedCPU(index, type_name, qom_path, qdev_id, hotplugged, switched, runner, registers, lapic)


def _switched(cpu: dict[str, Any], where: str) -> dict[str, bool]:
    switched = fields(cpu.get("switched"), f"{where}.switched")
    types = property_types()
    for name, on in switched.items():
        if types.get(name) != "bool" or not isinstance(on, bool):
            raise invalid(f"{where}.switched", f"{name!r} is not a CPU feature")
    return dict(switched)


def _devices(machine: Machine, top: dict[str, Any], versions: dict[str, Any], present: set[int]) -> dict[str, Any]:
    """Every device's section, checked by its owner, and the hot-plug block's slots against the CPUs."""
    checked: dict[str, Any] = {}
    for owner in machine.state_owners():
        name = owner.state_name
        if name not in top and name in SECTIONS_ADDED_LATER:
            continue
        checked[name] = owner.check_state(top.get(name), _version(versions, name, owner.state_version))
    for block in checked.values():
        if isinstance(block, SavedHotplugBlock):
            for index, slot in enumerate(block.slots):
                if slot.present != (index in present):
                    raise StateError(
                        f"invalid machine description: 'cpuhp.slots[{index}].present' disagrees with 'cpus'"
                    )
    return checked


def _check_cpu_set(machine: Machine, cpus: tuple[SavedCPU, ...], anon_count: int, unattached_count: int) -> None:
    """Slots unique, the boot CPU kept, every other CPU at a path it can take in this machine."""
    indexes = [cpu.index for cpu in cpus]
    if len(set(indexes)) != len(indexes):
        raise invalid("cpus", "a slot is listed twice")
    paths = [cpu.qom_path for cpu in cpus]
    if len(set(paths)) != len(paths):
        raise invalid("cpus", "a QOM path is listed twice")
    current = {cpu.cpu_index: cpu for cpu in machine.cpu_slots.cpus}
    if machine.cpu_slots.cpus:
        boot = machine.cpu_slots.cpus[0]
        if not any(cpu.index == boot.cpu_index and cpu.qom_path == boot.canonical_path() for cpu in cpus):
            raise invalid("cpus", f"the boot CPU {boot.cpu_index} is missing")
    kept = {cpu.index for cpu in cpus if cpu.index in current and current[cpu.index].canonical_path() == cpu.qom_path}
    leaving = {current[index].canonical_path() for index in current if index not in kept}
    ids = [cpu.qdev_id for cpu in cpus if cpu.qdev_id is not None]
    if len(set(ids)) != len(ids):
        raise invalid("cpus", "a device id is listed twice")
    _check_plugged_while_waiting(machine, cpus)
    for cpu in cpus:
        if cpu.index not in kept:
            _check_plug(machine, cpu, anon_count, unattached_count, leaving)


#: QEMU's advice when a stream and the target's devices disagree (savevm.c).
SAME_SETUP = "Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices"


def _check_plugged_while_waiting(machine: Machine, cpus: tuple[SavedCPU, ...]) -> None:
    """CPUs plugged into the target while it waited for the stream are the saved CPUs, not extra ones.

    libvirt restores a domain as QEMU requires: it ``device_add``s the saved domain's hot-plugged
    vCPUs on the ``inmigrate`` target, then starts the stream, which loads into them.  Each such CPU
    must be the saved CPU of its slot (path, id, type, features); and once the target holds any,
    every saved CPU must be here already, as QEMU refuses a CPU section it has no device for (without
    any, qmpd re-creates the saved hot-plugged CPUs itself: the target then has its command line only).
    """
    waiting = [cpu for cpu in machine.cpu_slots.cpus if cpu.hotplugged]
    if not waiting:
        return
    saved = {cpu.index: cpu for cpu in cpus}
    for cpu in waiting:
        assert cpu.cpu_index is not None
        entry, path = saved.get(cpu.cpu_index), cpu.canonical_path()
        if entry is None:
            problem = "is not in the saved machine"
        elif entry.qom_path != path:
            problem = f"is '{entry.qom_path}' in the saved machine"
        elif guest_view(cpu) != guest_view(_saved_cpu(machine, entry)):
            problem = "differs in its type or features from the saved CPU of its slot"
        else:
            continue
        raise StateError(f"CPU {cpu.cpu_index} plugged here as '{path}' {problem}. {SAME_SETUP}")
    for entry in cpus:
        if entry.index not in machine.cpu_slots.occupied:
            raise StateError(f"Unknown savevm section or instance 'cpu_common' {entry.index}. {SAME_SETUP}")


def _saved_cpu(machine: Machine, entry: SavedCPU) -> X86CPU:
    """An unrealized CPU as the restore would make it for ``entry`` (this machine's -cpu, the saved switches)."""
    cpu = machine.cpu_slots.new_cpu(entry.type_name)
    cpu.switched.update(entry.switched)
    return cpu


def _check_plug(machine: Machine, cpu: SavedCPU, anon_count: int, unattached_count: int, leaving: set[str]) -> None:
    where = f"CPU {cpu.index} at {cpu.qom_path!r}"
    if not machine.machine_type.hotpluggable_cpus:
        raise StateError(f"invalid machine description: {where}: this machine cannot hot-plug CPUs")
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
        raise StateError(f"invalid machine description: {where}: not a path a plugged CPU can have")
    found, _ = resolve_path(machine.qom.root, cpu.qom_path)
    if found is not None and cpu.qom_path not in leaving:
        raise StateError(f"invalid machine description: {where}: that path is taken in this machine")
