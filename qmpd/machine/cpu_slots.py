"""CPUSlots: the one owner of the machine's CPU set.

It holds the realized CPUs in creation order (query-cpus-fast's order) and the
occupied slots, makes CPUs of the machine's type with the ``-cpu`` settings,
and plugs and unplugs them: QEMU's pre-plug checks (qmpd.machine.cpus),
realize with a local APIC and a vCPU thread (through the board), the ACPI
hot-plug block that tells the guest, the topology link that shows the slot.
The machine, as hot-plug handler, is its only caller for hot-plug; every
interface reaches it through the machine.
"""

from __future__ import annotations

from typing import Any

from qmpd.cpu.cpu_option import CPUOption, parse_value, property_types
from qmpd.cpu.models import engine_capability
from qmpd.cpu.topology import Slot
from qmpd.cpu.x86cpu import X86CPU
from qmpd.devices.lapic import LocalAPIC
from qmpd.errors import GenericError
from qmpd.events import EventBus
from qmpd.log import get_logger
from qmpd.machine.board import Board
from qmpd.machine.cpus import assign_slot, instance_props, pre_plug
from qmpd.machine.hotplug_latency import HotplugLatency
from qmpd.machine.qom_tree import QOMTree, new_object, type_registry
from qmpd.machine.spec import MachineSpec
from qmpd.qom.device import Device
from qmpd.vcpu.runner import VCPURunner

log = get_logger(__name__)


class CPUSlots:
    """The CPUs of one machine, and every change to them."""

    def __init__(self, spec: MachineSpec, qom: QOMTree, board: Board, events: EventBus) -> None:
        self._spec = spec
        self._topology = spec.topology
        self._registry = type_registry()
        self._qom = qom
        self._board = board
        self._events = events
        #: Realized CPUs in creation order (query-cpus-fast order).
        self.cpus: list[X86CPU] = []
        #: Occupied slots: cpu index -> CPU.
        self.occupied: dict[int, X86CPU] = {}
        #: Slots still held by a CPU set unrealized with qom-set: QEMU's slot keeps it (nothing unplugged it),
        #: so query-hotpluggable-cpus shows it and a plug there is refused, but it runs no more.
        self.held: dict[int, X86CPU] = {}
        #: The local APIC QEMU's kvmvapic was made with (the first on a PC): it is never finalized on QEMU,
        #: so its unrealize sends no DEVICE_DELETED.
        self._vapic_lapic: LocalAPIC | None = None
        #: How long the guest takes to complete plugs and unplugs (metrics observe it).
        self.latency = HotplugLatency()
        #: Warnings of the last hot-plug (HMP device_add prints them, as QEMU's monitor does).
        self.warnings: list[str] = []

    # -- making and plugging ----------------------------------------------------------------

    def new_cpu(self, type_name: str) -> X86CPU:
        """An unrealized CPU with the -cpu settings applied (QEMU's global properties)."""
        cpu = new_object(type_name)
        assert isinstance(cpu, X86CPU)
        option = self._spec.cpu
        if option is not None and self._registry.is_a(type_name, option.model.typename):
            apply_cpu_option(cpu, option)
        return cpu

    def create_boot_cpus(self) -> None:
        """The -smp boot CPUs at /machine/unattached (one on machine none), powered off."""
        cpu_type = self._spec.cpu_type
        if cpu_type is None:
            return
        machine_type = self._spec.machine_type
        count = self._spec.smp.cpus if machine_type.is_pc else 1
        for index in range(count):
            cpu = self.new_cpu(cpu_type)
            cpu.values["apic-id"] = self._topology.slots[index].apic_id
            self._qom.attach_unattached(cpu)
            self.plug(cpu, hotplugged=False, running=False)
            missing = cpu.unavailable_features()
            if missing:  # QEMU warns at every CPU's realize ("TCG doesn't support requested feature")
                log.warning("cpu.unavailable_features", cpu=cpu.canonical_path(), features=missing)
            if index == 0 and machine_type.is_pc:
                vapic = new_object("kvmvapic")
                self._qom.attach_unattached(vapic)
                assert isinstance(vapic, Device)
                vapic.realize()

    def pre_plug(self, cpu: X86CPU) -> Slot:
        """QEMU's pre-plug checks: the slot ``cpu`` would take; raises GenericError, changes nothing."""
        assert self._spec.cpu_type is not None
        taken = {**self.held, **self.occupied}
        return pre_plug(cpu, self._spec.cpu_type, self._topology, taken, self._registry)

    def plug(self, cpu: X86CPU, *, hotplugged: bool, running: bool) -> None:
        """pre-plug checks, realize (with its lapic and thread, paused unless ``running``), fill the slot.

        The checks run here too: boot CPUs and restored CPUs come without a separate pre_plug.
        """
        slot = self.pre_plug(cpu)
        before = cpu.settings()
        try:  # every refusal comes before the lapic, the thread and the slot exist
            assign_slot(cpu, slot)
            cpu.realize()
        except BaseException:
            cpu.restore(before)
            cpu.realized = False
            raise
        cpu.hotplugged = hotplugged
        lapic = new_object("apic")
        assert isinstance(lapic, LocalAPIC)
        lapic.apic_id = slot.apic_id
        lapic.hotplugged = hotplugged
        cpu.add_child("lapic", lapic)
        lapic.realize()
        if self._vapic_lapic is None and self._spec.machine_type.is_pc:
            self._vapic_lapic = lapic
        try:
            self._board.attach_cpu(cpu, lapic, running=running)
        except BaseException:
            cpu.remove_child("lapic")
            cpu.restore(before)
            cpu.realized = False
            raise
        if self._board.cpuhp is not None:
            self._board.cpuhp.plug(slot.cpu_index, cpu.qdev_id, hotplugged=hotplugged)
        self.cpus.append(cpu)
        self.occupied[slot.cpu_index] = cpu
        node = self._qom.thread_nodes.get(slot.cpu_index)
        if node is not None:
            node.set_link_target("cpu", cpu)

    def hot_plug(self, cpu: X86CPU, *, running: bool) -> None:
        """Plug a CPU at run time; the guest is told through the ACPI block."""
        self.plug(cpu, hotplugged=True, running=running)
        if cpu.cpu_index is not None and self._board.cpuhp is not None:
            self.latency.requested(cpu.cpu_index, "plug")
        self.warnings = cpu.filter_warnings()
        if self.warnings:
            log.warning("cpu.unavailable_features", cpu=cpu.canonical_path(), features=cpu.unavailable_features())

    # -- unplugging -----------------------------------------------------------------------

    def unplug_request(self, cpu: X86CPU) -> None:
        """pc's checks in QEMU's order, then the eject request to the guest through the ACPI block."""
        assert cpu.cpu_index is not None
        cpuhp = self._board.cpuhp
        if cpuhp is None:
            raise GenericError("CPU hot unplug not supported without ACPI")
        if cpu.cpu_index == 0:
            raise GenericError("Boot CPU is unpluggable")
        if cpuhp.legacy:
            raise GenericError(f"acpi: device unplug request for not supported device type: {cpu.type_name}")
        cpuhp.request_unplug(cpu.cpu_index)
        self.latency.requested(cpu.cpu_index, "unplug")

    def unrealize(self, cpu: X86CPU) -> None:
        """qom-set realized false, which unplugs nothing (QEMU's device_set_realized alone): the vCPU thread
        ends, query-cpus-fast drops the CPU and its lapic goes, but the slot stays held by it and the ACPI
        block still shows it present."""
        assert cpu.cpu_index is not None
        self._stop(cpu)
        self.occupied.pop(cpu.cpu_index, None)
        self.held[cpu.cpu_index] = cpu
        cpu.realized = False

    def _stop(self, cpu: X86CPU) -> None:
        """The CPU's thread ends, query-cpus-fast drops it, its lapic goes (DEVICE_DELETED, as on QEMU)."""
        assert cpu.cpu_index is not None
        if cpu.cpu_index in self._board.vcpus.runners:
            self._board.vcpus.remove(cpu.cpu_index)
        if cpu in self.cpus:
            self.cpus.remove(cpu)
        lapic = cpu.child("lapic")
        if lapic is not None:
            path = lapic.canonical_path()
            cpu.remove_child("lapic")
            if lapic is not self._vapic_lapic:
                self._events.emit("DEVICE_DELETED", {"path": path})

    def remove(self, cpu: X86CPU) -> None:
        """Take a CPU out of service and out of its slot and the tree, telling nobody but its lapic's
        DEVICE_DELETED."""
        assert cpu.cpu_index is not None
        index = cpu.cpu_index
        self._stop(cpu)
        if self._board.cpuhp is not None:
            self._board.cpuhp.unplug(index)
        self.occupied.pop(index, None)
        if self.held.get(index) is cpu:
            del self.held[index]
        node = self._qom.thread_nodes.get(index)
        if node is not None and node.link_target("cpu") is cpu:
            node.set_link_target("cpu", None)
        cpu.realized = False
        parent, name = cpu.parent, cpu.name_in_parent
        if parent is not None and name is not None:
            parent.remove_child(name)

    def unplug(self, cpu: X86CPU) -> None:
        """The guest ejected the CPU: it goes, its slot frees, DEVICE_DELETED is sent with its id."""
        assert cpu.cpu_index is not None
        index = cpu.cpu_index
        path = cpu.canonical_path()
        self.remove(cpu)
        data: dict[str, object] = {"path": path}
        if cpu.qdev_id is not None:
            data = {"device": cpu.qdev_id, "path": path}
        self._events.emit("DEVICE_DELETED", data)
        log.info("cpu.unplugged", cpu_index=index, path=path)
        self.latency.completed(index, "unplug")

    def reset_lapics(self) -> None:
        """Every CPU's local APIC back to its power-on registers (the vCPUs are paused)."""
        for cpu in self.cpus:
            lapic = cpu.child("lapic")
            if isinstance(lapic, LocalAPIC):
                lapic.reset_registers()

    # -- views ------------------------------------------------------------------------------

    @property
    def boot_index(self) -> int:
        """cpu-index of the boot CPU (the first realized one)."""
        assert self.cpus and self.cpus[0].cpu_index is not None
        return self.cpus[0].cpu_index

    def cpu_indexes(self) -> tuple[int, ...]:
        """cpu-index of every realized CPU."""
        return tuple(cpu.cpu_index for cpu in self.cpus if cpu.cpu_index is not None)

    def instance_props(self, index: int) -> dict[str, int]:
        """CpuInstanceProperties of slot ``index``."""
        return instance_props(self._topology.slots[index], self._spec.smp.dies)

    def hotpluggable_cpus(self) -> list[dict[str, Any]]:
        """query-hotpluggable-cpus: every slot, last first; qom-path only for occupied ones."""
        if not self._spec.machine_type.hotpluggable_cpus:
            raise GenericError("The feature 'query-hotpluggable-cpus' is not enabled")
        entries = []
        for slot in reversed(self._topology.slots):
            entry: dict[str, Any] = {
                "type": self._spec.cpu_type,
                "vcpus-count": 1,
                "props": self.instance_props(slot.cpu_index),
            }
            cpu = self.occupied.get(slot.cpu_index) or self.held.get(slot.cpu_index)
            if cpu is not None:
                entry["qom-path"] = cpu.canonical_path()
            entries.append(entry)
        return entries

    def cpus_fast(self) -> list[dict[str, Any]]:
        """query-cpus-fast: realized CPUs in creation order."""
        out = []
        for cpu in self.cpus:
            assert cpu.cpu_index is not None
            out.append(
                {
                    "cpu-index": cpu.cpu_index,
                    "qom-path": cpu.canonical_path(),
                    "thread-id": self._board.vcpus.runners[cpu.cpu_index].native_id,
                    "props": self.instance_props(cpu.cpu_index),
                    "target": "x86_64",
                }
            )
        return out

    def runner(self, index: int) -> VCPURunner:
        """The vCPU thread of the CPU in slot ``index`` (state, host thread id, instruction count)."""
        return self._board.vcpus.runners[index]

    def live_vcpu_threads(self) -> int:
        """How many vCPU threads are alive."""
        return sum(runner.alive for runner in self._board.vcpus.runners.values())

    def dead_vcpu_threads(self) -> list[int]:
        """cpu-index of every vCPU whose thread ended unexpectedly."""
        return [index for index, runner in self._board.vcpus.runners.items() if not runner.alive]

    @property
    def acpi_hotplug(self) -> bool:
        """The machine has the ACPI CPU hot-plug block (device_del needs it)."""
        return self._board.cpuhp is not None

    @property
    def acpi_legacy_mode(self) -> bool:
        """The guest has not switched the ACPI CPU hot-plug block to its modern interface."""
        return self._board.cpuhp is not None and self._board.cpuhp.legacy

    def unplug_pending(self, index: int) -> bool:
        """The guest was asked to release CPU ``index`` and has not yet."""
        cpuhp = self._board.cpuhp
        return cpuhp is not None and cpuhp.slots[index].is_removing


def apply_cpu_option(cpu: X86CPU, option: CPUOption) -> None:
    """The -cpu settings on a new CPU of the option's model (QEMU's global properties)."""
    types = property_types()
    for name, text in option.globals:
        cpu.set_property(name, parse_value(types[name], name, text))
    cpu.plus = set(option.plus)
    cpu.minus = set(option.minus)


def guest_view(cpu: X86CPU) -> tuple[Any, ...]:
    """What the guest of ``cpu`` sees of its model: its type, the features the engine runs, its identity
    (realized or not).  -cpu texts that differ only in features the engine cannot run agree."""
    return (
        cpu.type_name,
        sorted(cpu.requested_features() & engine_capability()),
        sorted((name, repr(value)) for name, value in cpu.identity.items()),
    )
