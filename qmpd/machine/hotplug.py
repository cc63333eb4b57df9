"""The machine's one CPU hot-plug path, and the three user interfaces that lead to it.

Every way of adding a CPU ends in :meth:`CPUHotplug.plug` (QEMU's pre-plug
checks, realize, plug into the ACPI block, which tells the guest), and every
way of removing one in :meth:`CPUHotplug.request_unplug` (QEMU's checks, then
an eject request the guest must honour).  The guest's eject arrives through
the ACPI block; :meth:`CPUHotplug.ejected` then unrealizes the CPU, frees its
slot and sends DEVICE_DELETED, first for its ``lapic`` child (as QEMU 7.2 does)
and then for the CPU itself with its id (as QAPI documents and libvirt waits
for).

The interfaces:

1. ``device_add``/``device_del`` (qmpd.machine.qdev), QMP and HMP;
2. the seed's legacy commands: ``cpu-add N`` (QEMU 1.5-5.1) and qemu-kvm's
   ``cpu_set N online|offline``, where N is a CPU index (slot);
3. the seed's QOM topology: ``object-add`` creates an unrealized CPU under
   ``/objects``, and setting ``/machine/topology/.../thread[T].cpu`` to it
   plugs it into that slot; setting the link to ``""`` asks for its unplug.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from qmpd.cpu.x86cpu import X86CPU
from qmpd.errors import DeviceNotFound, GenericError
from qmpd.machine.qdev import DeviceHost, DeviceOptions, device_add
from qmpd.machine.qom_tree import TopologyNode, new_object
from qmpd.qom.device import Device
from qmpd.qom.object import Object, resolve_at, resolve_path

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

log = structlog.get_logger(__name__)

#: QEMU's ACPI_CPU_HOTPLUG_ID_LIMIT, raised to qmpd's slot limit (cpu-add refuses APIC IDs beyond it).
APIC_ID_LIMIT = 1024


class CPUHotplug:
    """pc/q35 CPU hot-plug: the machine's HotplugHandler for CPUs."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        #: Warnings of the last plug (HMP device_add prints them, as QEMU's monitor does).
        self.warnings: list[str] = []
        #: Called with "plug" or "unplug" when one is asked of the guest (metrics).
        self.on_requested: list[Callable[[str], None]] = []
        #: Called with the operation and the seconds the guest took to complete it (online / ejected).
        self.on_completed: list[Callable[[str, float], None]] = []
        self._pending: dict[int, tuple[str, float]] = {}

    def _requested(self, index: int, operation: str) -> None:
        self._pending[index] = (operation, time.perf_counter())
        for observer in self.on_requested:
            observer(operation)

    def _completed(self, index: int, operation: str) -> None:
        pending = self._pending.get(index)
        if pending is None or pending[0] != operation:
            return
        del self._pending[index]
        for observer in self.on_completed:
            observer(operation, time.perf_counter() - pending[1])

    def ost(self, info: dict[str, object]) -> None:
        """The guest's _OST: source 1 (insert) with status 0 means it put the plugged CPU online."""
        if info.get("source") == 1 and info.get("status") == 0:
            self._completed(int(str(info.get("slot"))), "plug")

    # -- the one path -------------------------------------------------------------------

    def handler_for(self, type_name: str) -> Callable[[Device], None] | None:
        """The plug function for a device type, or None when this machine cannot hot-plug it."""
        machine = self.machine
        if machine.machine_type.hotpluggable_cpus and machine.registry.is_a(type_name, "x86_64-cpu"):
            return self.plug
        return None

    def plug(self, device: Device) -> None:
        """Pre-plug checks, realize and plug; the guest is told through the ACPI block."""
        assert isinstance(device, X86CPU)
        self.machine.plug_cpu(device, hotplugged=True)
        if device.cpu_index is not None and self.machine.board.cpuhp is not None:
            self._requested(device.cpu_index, "plug")
        self.warnings = device.filter_warnings()
        if self.warnings:
            log.warning("cpu.unavailable_features", cpu=device.canonical_path(), features=device.unavailable_features())

    def request_unplug(self, device: Object, name: str) -> None:
        """device_del's checks in QEMU's order, then the eject request to the guest."""
        machine = self.machine
        if not isinstance(device, Device):
            raise GenericError(f"{name} is not a hotpluggable device")
        if not isinstance(device, X86CPU) or not device.hotpluggable:
            raise GenericError(f"Device '{device.type_name}' does not support hotplugging")
        if not device.realized or device.cpu_index is None:
            raise GenericError(f"{name} is not a hotpluggable device")
        cpuhp = machine.board.cpuhp
        if cpuhp is None:
            raise GenericError("CPU hot unplug not supported without ACPI")
        if device.cpu_index == 0:
            raise GenericError("Boot CPU is unpluggable")
        if cpuhp.legacy:
            raise GenericError(f"acpi: device unplug request for not supported device type: {device.type_name}")
        cpuhp.request_unplug(device.cpu_index)
        self._requested(device.cpu_index, "unplug")

    def ejected(self, index: int) -> None:
        """The guest ejected slot ``index``: the CPU goes, its slot frees, DEVICE_DELETED is sent."""
        cpu = self.machine.slots.get(index)
        if cpu is None:
            return
        path = cpu.canonical_path()
        self.machine.unrealize_cpu(cpu)
        parent, name = cpu.parent, cpu.name_in_parent
        if parent is not None and name is not None:
            parent.remove_child(name)
        data: dict[str, object] = {"path": path}
        if cpu.qdev_id is not None:
            data = {"device": cpu.qdev_id, "path": path}
        self.machine.events.emit("DEVICE_DELETED", data)
        log.info("cpu.unplugged", cpu_index=index, path=path)
        self._completed(index, "unplug")

    def ejected_silently(self, cpu: X86CPU) -> None:
        """Remove a CPU without telling anyone (restoring a state in which it had been unplugged)."""
        self.machine.unrealize_cpu(cpu)
        parent, name = cpu.parent, cpu.name_in_parent
        if parent is not None and name is not None:
            parent.remove_child(name)

    # -- interface 1: device_add / device_del ------------------------------------------------

    def device_add(self, opts: DeviceOptions) -> list[str]:
        """device_add; returns the realize warnings (HMP prints them)."""
        machine = self.machine
        self.warnings = []
        host = DeviceHost(
            registry=machine.registry,
            machine_type=machine.machine_type,
            peripheral=machine.qom.peripheral,
            peripheral_anon=machine.qom.peripheral_anon,
            next_anon=machine.qom.next_anon,
            hotplug_handler=self.handler_for,
            new_object=self._new_device,
        )
        device_add(host, opts)
        return self.warnings

    def _new_device(self, type_name: str) -> Object:
        if self.machine.registry.is_a(type_name, "x86_64-cpu"):
            return self.machine.new_cpu(type_name)
        return new_object(type_name)

    def device_del(self, device_id: str) -> None:
        """device_del: an id under /machine/peripheral, or any QOM path."""
        machine = self.machine
        if device_id.startswith("/"):
            found, _ = resolve_path(machine.qom.root, device_id)
        else:
            found = resolve_at(machine.qom.peripheral, device_id)
        if found is None:
            raise DeviceNotFound(f"Device '{device_id}' not found")
        self.request_unplug(found, device_id)

    # -- interface 2: cpu-add, cpu_set -------------------------------------------------------

    def cpu_add(self, index: int) -> None:
        """QMP cpu-add (QEMU 1.5-5.1): a CPU of the -cpu model in slot ``index``, at /machine/unattached."""
        machine = self.machine
        if not machine.machine_type.hotpluggable_cpus or machine.spec.cpu_type is None:
            raise GenericError("Not supported")
        if index < 0:
            raise GenericError(f"Invalid CPU id: {index}")
        apic_id = machine.topology.slot(index).apic_id
        if apic_id >= max(APIC_ID_LIMIT, machine.topology.apic_id_limit):
            raise GenericError(f"Unable to add CPU: {index}, resulting APIC ID ({apic_id}) is too large")
        cpu = machine.new_cpu(machine.spec.cpu_type)
        cpu.values["apic-id"] = apic_id
        self.plug(cpu)
        machine.qom.attach_unattached(cpu)

    def cpu_set(self, index: int, state: str) -> None:
        """qemu-kvm's cpu_set: ``online`` plugs slot ``index`` (if empty), ``offline`` asks for its unplug."""
        machine = self.machine
        if state not in ("online", "offline"):
            raise GenericError(f"invalid status: {state}")
        if not 0 <= index < machine.spec.smp.max_cpus:
            raise GenericError(f"Parameter 'cpu' expects a CPU index in range 0:{machine.spec.smp.max_cpus - 1}")
        cpu = machine.slots.get(index)
        if state == "online":
            if cpu is None:
                self.cpu_add(index)
        elif cpu is not None:
            self.request_unplug(cpu, cpu.canonical_path())

    # -- interface 3: the QOM topology ----------------------------------------------------

    def set_thread_link(self, node: TopologyNode, value: object) -> None:
        """qom-set .../thread[T] cpu <path>: plug that unrealized CPU here; ``""`` asks for an unplug."""
        machine = self.machine
        if not isinstance(value, str):
            raise GenericError("Invalid parameter type for 'cpu', expected: string")
        current = node.link_target("cpu")
        if value == "":
            if isinstance(current, X86CPU):
                self.request_unplug(current, current.canonical_path())
            return
        target, ambiguous = resolve_path(machine.qom.root, value)
        if target is None:
            if ambiguous:
                raise GenericError(f"Path '{value}' is ambiguous")
            raise DeviceNotFound(f"Device '{value}' not found")
        if not isinstance(target, X86CPU):
            raise GenericError("Invalid parameter type for 'cpu', expected: x86_64-cpu")
        if target is current:
            return
        if target.realized:
            raise GenericError(f"CPU '{value}' is already plugged")
        before = target.settings()
        target.values["apic-id"] = node.ids["apic-id"]
        try:
            self.plug(target)
        except BaseException:  # the CPU stays in /objects exactly as it was, free to be fixed and plugged
            target.restore(before)
            raise
