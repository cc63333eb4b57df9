"""CPU slots and the checks a CPU passes before it is plugged (x86_cpu_pre_plug).

Every CPU, boot or hot-plugged, goes through the same pre-plug checks in
QEMU's order and with QEMU's texts: the type must be the machine's CPU type;
a CPU without ``apic-id`` must name a slot by socket/die/core/thread ids (die
defaults to 0 with one die per socket), each in range; the APIC ID must be a
slot's and the slot free; ids given together with ``apic-id`` must agree
with it; ``node-id`` must be the slot's node.  On success the CPU gets its
APIC ID, topology ids and cpu index; nothing else changes, so a failed check
leaves the machine untouched.
"""

from __future__ import annotations

from qmpd.cpu.topology import Slot, Topology
from qmpd.cpu.x86cpu import UNASSIGNED, X86CPU
from qmpd.errors import GenericError
from qmpd.qom.types import TypeRegistry


def _id(cpu: X86CPU, name: str) -> int:
    value = cpu.values.get(name, -1)
    return -1 if value is None else int(value)


def pre_plug(
    cpu: X86CPU, cpu_type: str, topology: Topology, occupied: dict[int, X86CPU], registry: TypeRegistry
) -> Slot:
    """Check ``cpu`` against the machine and choose its slot; raise GenericError with QEMU's text."""
    if not registry.is_a(cpu.type_name, cpu_type):
        raise GenericError(f"Invalid CPU type, expected cpu type: '{cpu_type}'")
    smp = topology.smp
    apic_id = cpu.values.get("apic-id", UNASSIGNED)
    socket_id, die_id, core_id, thread_id = (_id(cpu, n) for n in ("socket-id", "die-id", "core-id", "thread-id"))
    if apic_id == UNASSIGNED:
        max_socket = (smp.max_cpus - 1) // smp.threads // smp.cores // smp.dies
        if die_id < 0 and smp.dies == 1:
            die_id = 0
        for name, value, high in (
            ("socket-id", socket_id, max_socket),
            ("die-id", die_id, smp.dies - 1),
            ("core-id", core_id, smp.cores - 1),
            ("thread-id", thread_id, smp.threads - 1),
        ):
            if value < 0:
                raise GenericError(f"CPU {name} is not set")
            if value > high:
                raise GenericError(f"Invalid CPU {name}: {value} must be in range 0:{high}")
        apic_id = topology.apic_id(socket_id, die_id, core_id, thread_id)
    slot = topology.slot_by_apic_id(apic_id)
    if slot is None:
        ids = topology.ids_from_apic_id(apic_id)
        raise GenericError(
            f"Invalid CPU [socket: {ids[0]}, die: {ids[1]}, core: {ids[2]}, thread: {ids[3]}] "
            f"with APIC ID {apic_id}, valid index range 0:{smp.max_cpus - 1}"
        )
    if slot.cpu_index in occupied:
        raise GenericError(f"CPU[{slot.cpu_index}] with APIC ID {apic_id} exists")
    for name, given, actual in (
        ("socket-id", socket_id, slot.socket_id),
        ("die-id", die_id, slot.die_id),
        ("core-id", core_id, slot.core_id),
        ("thread-id", thread_id, slot.thread_id),
    ):
        if given != -1 and given != actual:
            raise GenericError(f"property {name}: {given} doesn't match set apic-id: {apic_id:#x} ({name}: {actual})")
    node_id = _id(cpu, "node-id")
    if node_id not in (-1, 0):
        raise GenericError("invalid node-id, must be 0")
    return slot


def assign_slot(cpu: X86CPU, slot: Slot) -> None:
    """Give the CPU its slot's APIC ID, ids and index (after pre_plug succeeded)."""
    cpu.values["apic-id"] = slot.apic_id
    cpu.values["socket-id"] = slot.socket_id
    cpu.values["die-id"] = slot.die_id
    cpu.values["core-id"] = slot.core_id
    cpu.values["thread-id"] = slot.thread_id
    cpu.cpu_index = slot.cpu_index


def instance_props(slot: Slot, dies: int) -> dict[str, int]:
    """CpuInstanceProperties of a slot (die-id only with several dies per socket)."""
    props = {"socket-id": slot.socket_id}
    if dies > 1:
        props["die-id"] = slot.die_id
    props["core-id"] = slot.core_id
    props["thread-id"] = slot.thread_id
    return props
