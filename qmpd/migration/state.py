"""What a saved machine holds, taken from a paused machine and put back into a freshly built one.

The target is built from the same command line as the source (as QEMU's -incoming requires), so the
state carries what changed since start-up: which CPUs are present (and where in QOM: their ids,
anonymous numbers, /machine/unattached numbers of cpu-add/cpu_set, or /objects names), each CPU's
switched features, migration capabilities, guest RAM, and the sections of the state's owners
(qmpd.vmstate), each saved and loaded by its owner: every CPU's runner, registers and local APIC,
and the machine's devices (Machine.state_owners: the ACPI CPU hot-plug block with its GPE
registers, the PM1 registers).  ``state_versions`` records each section's layout version.

A restore is all-or-nothing: ``parse_description`` (qmpd.migration.description) checks the whole
description against the target machine, every section by its owner, and touches nothing; only then
does ``restore`` apply it, and should applying still fail, ``restore`` takes back what it had
applied before re-raising.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qmpd.cpu.x86cpu import X86CPU
from qmpd.devices.lapic import LocalAPIC
from qmpd.errors import GenericError
from qmpd.machine.cpus import instance_props
from qmpd.machine.qdev import DeviceOptions, qdev_device_add
from qmpd.migration.description import SavedCPU, SavedMachine, anon_number, describe, unattached_number
from qmpd.migration.stream import RAMImage
from qmpd.vcpu.runner import VCPURunner
from qmpd.vcpu.snapshot import REGISTERS_STATE_NAME, REGISTERS_STATE_VERSION

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

__all__ = ["capture", "check_ram", "describe", "load_ram", "restore"]


async def capture(machine: Machine) -> dict[str, Any]:
    """The state of a machine whose vCPUs are all stopped (RAM is written separately)."""
    cpus = []
    for cpu in machine.cpu_slots.cpus:  # creation order: query-cpus-fast lists them so, and the restore plugs them so
        assert cpu.cpu_index is not None
        runner = machine.cpu_slots.runner(cpu.cpu_index)
        registers = await machine.cpu_snapshot(cpu.cpu_index)
        cpus.append(
            {
                "index": cpu.cpu_index,
                "type": cpu.type_name,
                "qom_path": cpu.canonical_path(),
                "id": cpu.qdev_id,
                "hotplugged": cpu.hotplugged,
                "switched": dict(cpu.switched),
                runner.state_name: runner.save_state(),
                REGISTERS_STATE_NAME: registers.save_state(),
                LocalAPIC.state_name: _lapic(cpu).save_state(),
            }
        )
    meta: dict[str, Any] = {
        "machine": describe(machine),
        "runstate": machine.runstate.value,
        "anon_count": machine.qom.anon_count,
        "unattached_count": machine.qom.unattached_count,
        "cpus": cpus,
        "migration_capabilities": dict(machine.migration_capabilities),
    }
    versions = {
        VCPURunner.state_name: VCPURunner.state_version,
        REGISTERS_STATE_NAME: REGISTERS_STATE_VERSION,
        LocalAPIC.state_name: LocalAPIC.state_version,
    }
    for owner in machine.state_owners():
        meta[owner.state_name] = owner.save_state()
        versions[owner.state_name] = owner.state_version
    meta["state_versions"] = versions
    return meta


def _lapic(cpu: X86CPU) -> LocalAPIC:
    lapic = cpu.child("lapic")
    assert isinstance(lapic, LocalAPIC)
    return lapic


def check_ram(machine: Machine, ram: RAMImage) -> None:
    """Refuse an image of another RAM size (before anything is applied)."""
    if ram.size != machine.ram.size:
        raise GenericError(f"the saved RAM is {ram.size} bytes, this machine's {machine.ram.size}")


def load_ram(machine: Machine, ram: RAMImage) -> None:
    """Guest RAM from the image (any thread: the machine's vCPUs are stopped, waiting in inmigrate)."""
    check_ram(machine, ram)
    ram.load_into(machine.ram.view(), machine.ram.touched_chunks(ram.chunk))


@dataclass
class _Journal:
    """What restore changed so far, so that a failure can take it back."""

    #: Boot CPUs taken out (the source had unplugged them): the CPU, its parent and its name there.
    removed: list[tuple[X86CPU, Any, str]] = field(default_factory=list)
    #: CPUs plugged from the description.
    plugged: list[X86CPU] = field(default_factory=list)
    counters: tuple[int, int] = (0, 0)
    capabilities: dict[str, bool] = field(default_factory=dict)
    #: Every device's section as it was, by name (loaded back through its owner).
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)


def restore(machine: Machine, saved: SavedMachine) -> None:
    """Make a just-built, paused machine with the saved RAM loaded the saved one.

    ``saved`` comes from parse_description, so nothing here is expected to fail; if something
    still does, what was applied is taken back and the error re-raised.
    """
    journal = _Journal(
        counters=(machine.qom.anon_count, machine.qom.unattached_count),
        capabilities=dict(machine.migration_capabilities),
        devices={owner.state_name: owner.save_state() for owner in machine.state_owners()},
    )
    try:
        _apply(machine, saved, journal)
    except BaseException:
        _roll_back(machine, journal)
        raise


def _apply(machine: Machine, saved: SavedMachine, journal: _Journal) -> None:
    wanted = {cpu.index: cpu for cpu in saved.cpus}
    for cpu in list(machine.cpu_slots.cpus):
        entry = wanted.get(cpu.cpu_index if cpu.cpu_index is not None else -1)
        if entry is None or entry.qom_path != cpu.canonical_path():
            parent, name = cpu.parent, cpu.name_in_parent
            assert parent is not None and name is not None
            machine.cpu_slots.remove(cpu)
            journal.removed.append((cpu, parent, name))
    for entry in saved.cpus:
        if entry.index not in machine.cpu_slots.occupied:
            journal.plugged.append(_plug(machine, entry))
    machine.qom.anon_count = saved.anon_count
    machine.qom.unattached_count = max(machine.qom.unattached_count, saved.unattached_count)
    for owner in machine.state_owners():
        if owner.state_name in saved.devices:
            owner.load_state(saved.devices[owner.state_name])
    machine.migration_capabilities.update(saved.capabilities)
    for entry in saved.cpus:
        _apply_cpu_state(machine, entry)


def _apply_cpu_state(machine: Machine, entry: SavedCPU) -> None:
    _lapic(machine.cpu_slots.occupied[entry.index]).load_state(entry.lapic)
    runner = machine.cpu_slots.runner(entry.index)
    runner.load_state(entry.runner)
    if entry.runner.engine:
        runner.load_registers(entry.registers)


def _plug(machine: Machine, entry: SavedCPU) -> X86CPU:
    """Re-create a hot-plugged CPU where the source had it: /machine/peripheral/ID,
    /machine/peripheral-anon/device[N], /machine/unattached/device[N] (cpu-add, cpu_set) or
    /objects/ID linked into its topology slot."""
    path = entry.qom_path
    if path.startswith("/objects/"):
        cpu = _new_cpu(machine, entry)
        cpu.qdev_id = entry.qdev_id
        machine.qom.objects.add_child(path.rsplit("/", 1)[1], cpu)
        with _removed_on_error(cpu):
            machine.qom.thread_nodes[entry.index].set_property("cpu", path)
    elif (number := unattached_number(path)) is not None:
        cpu = _new_cpu(machine, entry)
        cpu.values["apic-id"] = machine.topology.slots[entry.index].apic_id
        machine.plug(cpu)
        machine.qom.unattached.add_child(f"device[{number}]", cpu)
    else:
        number = anon_number(path)
        if number is not None:
            machine.qom.anon_count = number
        qdev_device_add(machine, DeviceOptions(entry.qdev_id, _device_options(machine, entry)))
    cpu = machine.cpu_slots.occupied[entry.index]
    if cpu.canonical_path() != path:
        raise RuntimeError(f"CPU {entry.index} was restored at {cpu.canonical_path()}, not at {path}")
    return cpu


def _new_cpu(machine: Machine, entry: SavedCPU) -> X86CPU:
    cpu = machine.cpu_slots.new_cpu(entry.type_name)
    for name, on in entry.switched.items():
        cpu.switched[name] = on
    return cpu


@contextlib.contextmanager
def _removed_on_error(cpu: X86CPU) -> Iterator[None]:
    """An unrealized CPU placed for a plug leaves its parent again if the plug fails."""
    try:
        yield
    except BaseException:
        if not cpu.realized and cpu.parent is not None and cpu.name_in_parent is not None:
            cpu.parent.remove_child(cpu.name_in_parent)
        raise


def _device_options(machine: Machine, entry: SavedCPU) -> tuple[tuple[str, str], ...]:
    props = instance_props(machine.topology.slots[entry.index], machine.spec.smp.dies)
    switched = tuple((name, "on" if on else "off") for name, on in entry.switched.items())
    return (("driver", entry.type_name), *((k, str(v)) for k, v in props.items()), *switched)


def _roll_back(machine: Machine, journal: _Journal) -> None:
    """Take back what _apply did: plugged CPUs go, removed boot CPUs return, counters, capabilities
    and devices are as before (the caller reports the failure)."""
    for cpu in reversed(journal.plugged):
        if cpu.realized:
            machine.cpu_slots.remove(cpu)
    for cpu, parent, name in reversed(journal.removed):
        parent.add_child(name, cpu)
        machine.cpu_slots.plug(cpu, hotplugged=False, running=machine.running)
    machine.cpu_slots.cpus.sort(key=lambda cpu: cpu.cpu_index if cpu.cpu_index is not None else -1)
    machine.qom.anon_count, machine.qom.unattached_count = journal.counters
    machine.migration_capabilities.clear()
    machine.migration_capabilities.update(journal.capabilities)
    for owner in machine.state_owners():
        owner.load_state(owner.check_state(journal.devices[owner.state_name], owner.state_version))
