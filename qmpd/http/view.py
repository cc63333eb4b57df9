"""The machine as the service front reports it: a summary, every CPU slot, and live vCPU counters.

Read on the event loop thread.  Per-vCPU state and instruction counts come from the vCPU runners
(single words their threads write), so a reading never waits for a vCPU.
"""

from __future__ import annotations

from typing import Any

from qmpd.machine.guest_policy import POLICY_DEFAULTS, governing_policy
from qmpd.machine.machine import Machine
from qmpd.vcpu.runner import VCPUState


def machine_summary(machine: Machine) -> dict[str, Any]:
    """Type, run state, CPU model, RAM and topology."""
    smp = machine.spec.smp
    cpu_type = machine.spec.cpu_type
    return {
        "type": machine.machine_type.name,
        "runstate": machine.runstate.value,
        "name": machine.config.name,
        "model": machine.spec.cpu.model.name if machine.spec.cpu is not None else None,
        "cpu_type": cpu_type,
        "ram_bytes": machine.config.ram_size,
        "topology": {
            "sockets": smp.sockets,
            "dies": smp.dies,
            "cores": smp.cores,
            "threads": smp.threads,
            "max_cpus": smp.max_cpus,
            "boot_cpus": smp.cpus,
        },
    }


def _online(machine: Machine, index: int, state: VCPUState | None) -> bool:
    """Started by the guest (INIT/SIPI or boot) and not parked for an unplug it was asked for."""
    if state not in (VCPUState.RUNNING, VCPUState.HALTED):
        return False
    return not machine.cpu_slots.unplug_pending(index)


def cpu_slots(machine: Machine) -> list[dict[str, Any]]:
    """Every possible CPU, by cpu index: where it sits, whether present and online, its thread and counters."""
    out = []
    cpu_slots = machine.cpu_slots
    for slot in machine.topology.slots:
        cpu = cpu_slots.occupied.get(slot.cpu_index)
        runner = cpu_slots.runner(slot.cpu_index) if cpu is not None else None
        state = runner.state if runner is not None else None
        out.append(
            {
                "slot": slot.cpu_index,
                "props": cpu_slots.instance_props(slot.cpu_index),
                "socket_id": slot.socket_id,
                "die_id": slot.die_id,
                "core_id": slot.core_id,
                "thread_id": slot.thread_id,
                "apic_id": slot.apic_id,
                "type": cpu.type_name if cpu is not None else machine.spec.cpu_type,
                "present": cpu is not None,
                "online": _online(machine, slot.cpu_index, state),
                "state": state.value if state is not None else "absent",
                "qom_path": cpu.canonical_path() if cpu is not None else None,
                "id": cpu.qdev_id if cpu is not None else None,
                # What device_del accepts: any CPU but the boot CPU, with the ACPI hot-plug block.
                "hotpluggable": cpu is not None and slot.cpu_index != 0 and cpu_slots.acpi_hotplug,
                "host_thread_id": runner.native_id if runner is not None else None,
                "instructions": runner.instructions_executed if runner is not None else None,
            }
        )
    return out


def live_sample(machine: Machine, now: float) -> dict[str, Any]:
    """What the dashboard's live feed pushes: run state and each slot's counters."""
    cpus = []
    for slot in machine.topology.slots:
        present = slot.cpu_index in machine.cpu_slots.occupied
        runner = machine.cpu_slots.runner(slot.cpu_index) if present else None
        state = runner.state if runner is not None else None
        cpus.append(
            {
                "slot": slot.cpu_index,
                "present": present,
                "online": _online(machine, slot.cpu_index, state),
                "state": state.value if state is not None else "absent",
                "instructions": runner.instructions_executed if runner is not None else None,
            }
        )
    return {"time": now, "runstate": machine.runstate.value, "cpus": cpus}


def guest_policy_view(machine: Machine) -> dict[str, Any]:
    """The qmpd-guest-policy objects, and the policy each CPU slot gets (``policy``: the object's id,
    null for the default), by the most-specific rule."""
    policies = machine.guest_policies()
    slots = []
    for slot in machine.topology.slots:
        governing = governing_policy(policies, slot.cpu_index)
        values = governing.values() if governing is not None else dict(POLICY_DEFAULTS)
        values.pop("slots")
        policy_id = governing.name_in_parent if governing is not None else None
        slots.append({"slot": slot.cpu_index, "policy": policy_id, **values})
    return {
        "policies": [{"id": policy.name_in_parent, **policy.values()} for policy in policies],
        "slots": slots,
    }
