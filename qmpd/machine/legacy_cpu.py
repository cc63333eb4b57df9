"""The seed's legacy CPU hot-plug commands: ``cpu-add N`` (QEMU 1.5-5.1) and qemu-kvm's ``cpu_set N online|offline``.

N is a CPU index (a slot).  Both make the same requests as device_add and
device_del, through the machine's hot-plug handler (QEMU's pc_hot_add_cpu).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmpd.errors import GenericError
from qmpd.machine.hotplug_handler import request_unplug

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

#: QEMU's ACPI_CPU_HOTPLUG_ID_LIMIT, raised to qmpd's slot limit (cpu-add refuses APIC IDs beyond it).
APIC_ID_LIMIT = 1024


def cpu_add(machine: Machine, index: int) -> None:
    """QMP cpu-add: a CPU of the -cpu model in slot ``index``, at /machine/unattached."""
    cpu_type = machine.spec.cpu_type
    if not machine.machine_type.hotpluggable_cpus or cpu_type is None:
        raise GenericError("Not supported")
    if index < 0:
        raise GenericError(f"Invalid CPU id: {index}")
    apic_id = machine.topology.slot(index).apic_id
    if apic_id >= max(APIC_ID_LIMIT, machine.topology.apic_id_limit):
        raise GenericError(f"Unable to add CPU: {index}, resulting APIC ID ({apic_id}) is too large")
    cpu = machine.cpu_slots.new_cpu(cpu_type)
    cpu.values["apic-id"] = apic_id
    machine.pre_plug(cpu)
    machine.plug(cpu)
    machine.qom.attach_unattached(cpu)


def cpu_set(machine: Machine, index: int, state: str) -> None:
    """qemu-kvm's cpu_set: ``online`` plugs slot ``index`` (if empty), ``offline`` asks for its unplug."""
    if state not in ("online", "offline"):
        raise GenericError(f"invalid status: {state}")
    max_cpus = machine.spec.smp.max_cpus
    if not 0 <= index < max_cpus:
        raise GenericError(f"Parameter 'cpu' expects a CPU index in range 0:{max_cpus - 1}")
    cpu = machine.cpu_slots.occupied.get(index)
    if state == "online":
        if cpu is None:
            cpu_add(machine, index)
    elif cpu is not None:
        request_unplug(machine, cpu, cpu.canonical_path())
