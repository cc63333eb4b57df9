"""The machine: its run state, the life-cycle operations, and the hot-plug handler of its CPUs.

The tree, the board and the boot CPUs are built from a validated MachineSpec
(boot CPUs at ``/machine/unattached/device[N]``, QEMU's counter rules); the
CPU set belongs to :class:`CPUSlots`, the hardware to the private Board.  ``stop``,
``cont``, ``system_reset``, ``system_powerdown`` and shutdown follow QEMU's
softmmu/cpus.c and runstate.c: which states they act in, which events they
raise, and where the machine ends up (a reset of a stopped machine leaves it
in ``prelaunch``, as QEMU's main loop does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from qmpd.config import MachineConfig, ObjectConfig
from qmpd.cpu.x86cpu import X86CPU
from qmpd.devices.acpi_cpuhp import CPUHotplugBlock, GPEBlock
from qmpd.devices.acpi_pm import PM1Block
from qmpd.devices.lapic import LocalAPIC
from qmpd.errors import GenericError
from qmpd.events import EventBus
from qmpd.log import get_logger
from qmpd.machine.actions import Actions
from qmpd.machine.board import Board
from qmpd.machine.chipset_qom import chipset_devices, command_line_devices
from qmpd.machine.cpu_slots import CPUSlots
from qmpd.machine.guest_memory import read_physical, read_physical_or_zeros, read_virtual
from qmpd.machine.guest_policy import GuestPolicy, effective_policies
from qmpd.machine.hotplug_handler import HotplugHandler
from qmpd.machine.keys import KeyInjector
from qmpd.machine.properties import defaults
from qmpd.machine.qom_tree import HostObject, QOMTree, type_registry
from qmpd.machine.runstate import TRANSITIONS, InvalidTransition, RunState, ShutdownCause
from qmpd.machine.spec import MachineSpec, build_spec
from qmpd.qom.device import Device
from qmpd.qom.object import Object
from qmpd.qom.properties import visit_value
from qmpd.vcpu.ram import GuestRAM
from qmpd.vmstate import StateOwner

if TYPE_CHECKING:
    from qmpd.machine.guest_dump import GuestDump
    from qmpd.vcpu.snapshot import CPUSnapshot

log = get_logger(__name__)


class Machine:
    """One emulated machine, as its monitors see it."""

    def __init__(self, config: MachineConfig, events: EventBus, spec: MachineSpec | None = None) -> None:
        self.config = config
        self.events = events
        self.spec = spec or build_spec(config)
        self.machine_type = self.spec.machine_type
        self.topology = self.spec.topology
        self._runstate = RunState.PRELAUNCH
        #: Set by ``cont`` during incoming migration: start when it completes.
        self.autostart = not config.start_paused
        self.registry = type_registry()
        self.qom = QOMTree(self.machine_type, self._machine_settings())
        if self.machine_type.hotpluggable_cpus:
            self.qom.build_topology(self.topology, self)
        self._board = Board(
            self.spec,
            config.ram_size,
            single_threaded=config.tcg_thread == "single",
            vcpu_nice=config.vcpu_nice,
            acpi=config.acpi,
        )
        self._board.bridge.bind()  # a machine lives on the loop that builds it: its vCPU threads post there
        #: The one owner of the CPU set.
        self.cpu_slots = CPUSlots(self.spec, self.qom, self._board, events)
        self._board.vcpus.on_crash = self._on_vcpu_crash
        self._board.vcpus.on_triple_fault = self._on_triple_fault
        self._board.vcpus.on_internal_error = self._on_internal_error
        self._board.on_panic = lambda: self._spawn(self.guest_panicked())
        self._board.on_crashloaded = self.guest_crashloaded
        self._board.on_guest_reset = lambda: self._spawn(self.guest_reset())
        self._board.on_guest_poweroff = lambda: self._spawn(self.guest_shutdown(ShutdownCause.GUEST_SHUTDOWN))
        self._board.on_guest_exit = lambda status: self.on_exit(status)
        self._board.on_ost = self._on_ost
        self._board.on_eject = self._on_eject
        #: migrate-set-capabilities' flags (``events`` turns MIGRATION events on).
        self.migration_capabilities: dict[str, bool] = {}
        if config.incoming is not None:
            self.begin_incoming()
        #: Serialises pause/resume/reset (commands and guest crashes may overlap).
        self._lifecycle = asyncio.Lock()
        self._tasks: set[asyncio.Future[None]] = set()
        #: -action / set-action.
        self.actions = Actions(config.actions)
        #: dump-guest-memory's state, made with the first dump command (see ``dump``).
        self._dump: GuestDump | None = None
        #: send-key's queue, into the i8042's keyboard (none on ``-machine none``: keys go nowhere).
        self.keys = KeyInjector(self._key_event, lambda: self.running)
        #: Called when the guest ends the process (a shutdown or panic that powers off, isa-debug-exit): the status.
        self.on_exit: Callable[[int], None] = lambda status: None
        self.cpu_slots.create_boot_cpus()
        if self.machine_type.is_pc:
            cpuhp = self._board.cpuhp
            devices = chipset_devices(
                self.registry,
                self.machine_type.name.startswith("pc-q35"),
                self.qom.machine.settings,
                cpu_hotplug_legacy=lambda: cpuhp is None or cpuhp.legacy,
                pm_io_base=lambda: self._board.pm_io_base,
            )
            self.qom.attach_chipset(devices)
        isa_bus = next((name for name, kind in self.machine_type.buses.items() if kind == "ISA"), None)
        if isa_bus is not None:
            self.qom.attach_peripherals(command_line_devices(self.registry, self.spec.port_devices, isa_bus))
        #: Creation counter of qmpd-guest-policy objects (the later of two equal policies wins).
        self._policy_sequence = 0
        for spec_object in config.objects:
            try:
                self._add_spec_object(spec_object)
            except GenericError as exc:
                raise GenericError(f"-object {spec_object.arg}: {exc}") from None
        if self.cpu_slots.cpus:
            self._board.start_boot_cpu(self.cpu_slots.boot_index)

    def _machine_settings(self) -> dict[str, Any]:
        smp = self.spec.smp
        return {
            "kernel": self.config.kernel or "",
            # Without -bios QEMU names its default ROM; qmpd runs its own firmware then, under QEMU's name.
            "firmware": self.config.bios or ("bios-256k.bin" if self.machine_type.is_pc else ""),
            # QEMU's none has no RAM unless -m asks for some; qmpd's vCPUs still get their default RAM.
            "memory": {"size": self.config.ram_size if self.machine_type.is_pc or self.config.ram_size_given else 0},
            "smp": {
                "cpus": smp.cpus,
                "maxcpus": smp.max_cpus,
                "threads": smp.threads,
                "cores": smp.cores,
                "dies": smp.dies,
                "sockets": smp.sockets,
                "clusters": smp.clusters,
            },
            **defaults(self.machine_type),
            "acpi": "auto" if self.config.acpi else "off",
            **dict(self.config.machine_settings),
        }

    # -- the hot-plug handler of the machine's CPUs (QEMU's pc_machine_device_*_cb) -----------

    def hotplug_handler(self, type_name: str) -> HotplugHandler | None:
        """The handler that plugs devices of ``type_name`` at run time, or None (QEMU's get_hotplug_handler)."""
        if self.machine_type.hotpluggable_cpus and self.registry.is_a(type_name, "x86_64-cpu"):
            return self
        return None

    def pre_plug(self, device: Device) -> None:
        """QEMU's pre-plug checks for a CPU: type, slot, ids."""
        assert isinstance(device, X86CPU)
        self.cpu_slots.pre_plug(device)

    def plug(self, device: Device) -> None:
        """Realize the CPU and fill its slot; the guest is told through the ACPI block."""
        assert isinstance(device, X86CPU)
        self.cpu_slots.hot_plug(device, running=self.running)

    def unplug_request(self, device: Device) -> None:
        """Ask the guest to eject a CPU (other devices cannot be hot-plugged)."""
        if not isinstance(device, X86CPU):
            raise GenericError(f"Device '{device.type_name}' does not support hotplugging")
        self.cpu_slots.unplug_request(device)

    def unplug(self, device: Device) -> None:
        """The guest ejected the CPU: it goes (DEVICE_DELETED)."""
        assert isinstance(device, X86CPU)
        self.cpu_slots.unplug(device)

    def _on_eject(self, index: int) -> None:
        cpu = self.cpu_slots.occupied.get(index)
        if cpu is not None:
            self.unplug(cpu)

    def qom_set(self, obj: Object, name: str, value: Any) -> None:
        """qom-set, with the machine's reactions: a CPU's ``realized`` goes through its slots, as QEMU's
        device_set_realized runs the hot-plug handler's pre-plug and plug (true) or unrealizes alone (false)."""
        if not isinstance(obj, X86CPU) or name != "realized" or obj.find_property(name) is None:
            obj.set_property(name, value)
            if isinstance(obj, GuestPolicy):  # a changed guest policy reaches the firmware's device at once
                self._refresh_guest_policy()
            return
        wanted = visit_value("bool", name, value)
        if wanted and not obj.realized:
            before = obj.settings()
            try:
                self.pre_plug(obj)
                self.plug(obj)
            except BaseException:  # refused: the CPU is exactly as it was
                obj.restore(before)
                raise
        elif not wanted and obj.realized:
            self.cpu_slots.unrealize(obj)
            obj.pending_deleted_event = True

    # -- /objects (-object, object-add, object-del) -------------------------------------------

    def object_add(
        self, qom_type: str, object_id: str, props: dict[str, Any], *, text: bool = False, command_line: bool = False
    ) -> Object:
        """Create an object under /objects (qmpd.machine.user_objects)."""
        from qmpd.machine.user_objects import create_object  # with the first object: a start never needs it

        obj = create_object(self, qom_type, object_id, props, text=text, command_line=command_line)
        if isinstance(obj, GuestPolicy):
            self._policy_sequence += 1
            obj.sequence = self._policy_sequence
            self._refresh_guest_policy()
        return obj

    def _add_spec_object(self, spec_object: ObjectConfig) -> None:
        """An -object; the one -machine memory-backend names becomes the machine's RAM backend (with the
        values QEMU shows for the ones it leaves unset)."""
        ram = self.qom.ram_backend
        if (
            ram is None
            or spec_object.id != ram.name_in_parent
            or not self.registry.is_a(spec_object.qom_type, "memory-backend")
        ):
            self.object_add(
                spec_object.qom_type, spec_object.id, dict(spec_object.props), text=spec_object.text, command_line=True
            )
            return
        self.qom.objects.remove_child(spec_object.id)
        try:
            backend = self.object_add(
                spec_object.qom_type, spec_object.id, dict(spec_object.props), text=spec_object.text, command_line=True
            )
        except BaseException:
            self.qom.objects.add_child(spec_object.id, ram)
            raise
        if isinstance(backend, HostObject):
            backend.values = {**ram.values, **backend.values}
            self.qom.ram_backend = backend

    def object_del(self, object_id: str) -> None:
        """Remove an object from /objects; a removed guest policy stops applying at once."""
        from qmpd.machine.user_objects import delete_object

        if isinstance(delete_object(self, object_id), GuestPolicy):
            self._refresh_guest_policy()

    def guest_policies(self) -> list[GuestPolicy]:
        """The qmpd-guest-policy objects, in creation order."""
        found = [obj for _, obj in self.qom.objects.children() if isinstance(obj, GuestPolicy)]
        return sorted(found, key=lambda policy: policy.sequence)

    def _refresh_guest_policy(self) -> None:
        port = self._board.guest_policy
        if port is not None:
            port.update(effective_policies(self.guest_policies(), len(self.topology.slots)))

    def acpi_ospm_status(self) -> list[dict[str, Any]]:
        """query-acpi-ospm-status: nothing while the CPU hot-plug block is in legacy mode."""
        if self._board.cpuhp is None:
            return []
        return self._board.cpuhp.ospm_status()

    def _on_ost(self, info: dict[str, object]) -> None:
        """The guest reported an _OST status through the hot-plug block."""
        self.events.emit("ACPI_DEVICE_OST", {"info": info})
        self.cpu_slots.latency.ost(info)

    def _on_triple_fault(self, index: int, reason: str) -> None:
        """A vCPU shut down on a triple fault: QEMU's guest reset request."""
        log.warning("machine.triple_fault", cpu=index, reason=reason)
        self._spawn(self.guest_reset())

    def _on_vcpu_crash(self, index: int, reason: str) -> None:
        """qmpd's emulator could not go on with a vCPU: reported as a guest panic."""
        log.warning("machine.guest_panicked", cpu=index, reason=reason)
        self._spawn(self.guest_panicked())

    def _on_internal_error(self, index: int, reason: str) -> None:
        """qmpd failed while emulating a vCPU (a device raised in its hook): the machine stops in
        ``internal-error`` (STOP), as QEMU does when its accelerator cannot go on; a reset recovers."""
        log.error("machine.internal_error", cpu=index, reason=reason)
        self._spawn(self._stop_on_internal_error())

    async def _stop_on_internal_error(self) -> None:
        async with self._lifecycle:
            await self._vm_stop(RunState.INTERNAL_ERROR)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def guest_reset(self) -> None:
        """The guest asked for a reset: reset (RESET guest-reset), or shut down with -action reboot=shutdown."""
        if self.actions.reset_shuts_down:
            await self.guest_shutdown(ShutdownCause.GUEST_RESET)
        else:
            await self.system_reset(ShutdownCause.GUEST_RESET)

    async def guest_shutdown(self, cause: ShutdownCause, exit_status: int = 0) -> None:
        """SHUTDOWN, then stop in run state ``shutdown`` (-action shutdown=pause) or end the process."""
        async with self._lifecycle:
            self.events.emit("SHUTDOWN", {"guest": cause.by_guest, "reason": cause.value})
            if self.actions.shutdown_pauses:
                await self._vm_stop(RunState.SHUTDOWN)
                return
            await self._board.vcpus.pause_all()
        self.on_exit(exit_status)

    async def guest_panicked(self) -> None:
        """GUEST_PANICKED, then what -action panic says (QEMU's qemu_system_guest_panicked)."""
        outcome = self.actions.panic_outcome()
        self.events.emit("GUEST_PANICKED", {"action": outcome})
        if outcome == "pause":
            async with self._lifecycle:
                await self._vm_stop(RunState.GUEST_PANICKED)
        elif outcome == "poweroff":
            await self.guest_shutdown(ShutdownCause.GUEST_PANIC, self.actions.panic_exit_status)

    def guest_crashloaded(self) -> None:
        """pvpanic: the guest loaded a crash kernel; QEMU only reports it."""
        self.events.emit("GUEST_CRASHLOADED", {"action": "run"})

    def state_owners(self) -> list[StateOwner[Any]]:
        """The devices that save their own section of a saved machine (qmpd.vmstate); each CPU's
        local APIC and runner save theirs with the CPU."""
        board = self._board
        owners = (board.cpuhp, board.pm, board.pci, board.fw_cfg, board.i8042, board.ioapic, board.guest_policy)
        return [owner for owner in owners if owner is not None]

    # -- guest memory (monitor reads) ------------------------------------------------------

    async def cpu_snapshot(self, index: int) -> CPUSnapshot:
        """Registers of CPU ``index`` (read between two of its blocks, so they are consistent)."""
        return await self._board.vcpus.snapshot(index)

    @property
    def ram(self) -> GuestRAM:
        """Guest RAM, for the monitor's memory commands, dumps and migration (read off the loop)."""
        return self._board.ram

    def read_physical(self, address: int, length: int) -> bytes | None:
        """Guest physical memory, or None if it is not all RAM."""
        return read_physical(self._board.ram, address, length)

    def read_physical_or_zeros(self, address: int, length: int) -> bytes:
        """Guest physical memory, with zeros where there is no RAM (QEMU's unassigned reads)."""
        return read_physical_or_zeros(self._board.ram, address, length)

    async def read_virtual(self, index: int, address: int, length: int) -> bytes | None:
        """Memory as CPU ``index`` sees it at a virtual address, or None if not all of it is mapped."""
        cpu = await self.cpu_snapshot(index)
        return read_virtual(self._board.ram, cpu, address, length)

    # -- device state, for migration ---------------------------------------------------------

    @property
    def acpi_cpu_hotplug(self) -> CPUHotplugBlock | None:
        """The ACPI CPU hot-plug block (None without ACPI)."""
        return self._board.cpuhp

    @property
    def acpi_gpe(self) -> GPEBlock | None:
        """The ACPI GPE0 block (None without ACPI)."""
        return self._board.gpe

    @property
    def acpi_pm(self) -> PM1Block | None:
        """The ACPI PM1 registers (None without ACPI)."""
        return self._board.pm

    @property
    def dump(self) -> GuestDump:
        """dump-guest-memory's state (query-dump); one dump at a time.  Made with its first use: a start
        never needs the dump's modules (~0.8 ms to import)."""
        if self._dump is None:
            from qmpd.machine.guest_dump import GuestDump

            self._dump = GuestDump(self)
        return self._dump

    @property
    def dumping(self) -> bool:
        """Whether a dump-guest-memory runs (without making the dump's state)."""
        return self._dump is not None and self._dump.active

    def close(self) -> None:
        """Stop every vCPU thread and release the board (the daemon is exiting)."""
        if self._dump is not None:
            self._dump.close()
        self.keys.close()
        self._board.close()

    @property
    def runstate(self) -> RunState:
        """The current QAPI run state."""
        return self._runstate

    @property
    def running(self) -> bool:
        """True when the guest is executing."""
        return self._runstate is RunState.RUNNING

    def set_runstate(self, new: RunState) -> None:
        """Change state; undeclared transitions are qmpd bugs."""
        old = self._runstate
        if old is new:
            return
        if (old, new) not in TRANSITIONS:
            raise InvalidTransition(f"{old.value} -> {new.value}")
        self._runstate = new
        log.info("machine.runstate", old=old.value, new=new.value)

    @property
    def needs_reset(self) -> bool:
        """QEMU's runstate_needs_reset: only a reset leaves these states."""
        return self._runstate in (RunState.INTERNAL_ERROR, RunState.SHUTDOWN)

    def power_on(self) -> None:
        """End of machine creation: start unless -S asked to wait (RESUME is sent then), or wait for
        an incoming migration (the daemon's migrator loads it)."""
        if self.config.incoming is not None:
            return
        if not self.config.start_paused:
            self.vm_start()

    def vm_start(self) -> None:
        """Start (or resume) the guest; RESUME is sent before the state changes."""
        if self.running:
            return
        self.events.emit("RESUME")
        self.set_runstate(RunState.RUNNING)
        self._board.vcpus.resume_all()
        self.keys.resumed()

    async def stop(self) -> None:
        """QMP ``stop``: pause a running guest (no-op otherwise)."""
        self._refuse_during_dump()
        if self._runstate is RunState.INMIGRATE:
            self.autostart = False
            return
        async with self._lifecycle:
            await self._vm_stop(RunState.PAUSED)

    async def stop_for_migration(self) -> None:
        """The vCPUs stop for the final pass of an outgoing migration (run state finish-migrate)."""
        async with self._lifecycle:
            if self.running:
                await self._vm_stop(RunState.FINISH_MIGRATE)
            else:
                await self._board.vcpus.pause_all()
                self.set_runstate(RunState.FINISH_MIGRATE)

    def begin_incoming(self) -> None:
        """-incoming: the machine waits for a migration stream instead of starting."""
        self.set_runstate(RunState.INMIGRATE)

    def finish_incoming(self, saved_runstate: str) -> None:
        """A stream was loaded: run if the source ran (and no -S or stop said otherwise), else pause."""
        if saved_runstate == RunState.RUNNING.value and self.autostart:
            self.vm_start()
        else:
            self.set_runstate(RunState.PAUSED)

    async def _vm_stop(self, state: RunState) -> None:
        """Stop the vCPUs and enter ``state``; STOP is sent once none of them runs any more."""
        if not self.running:
            return
        await self._board.vcpus.pause_all()
        self.set_runstate(state)
        self.events.emit("STOP")

    async def pause_for_dump(self) -> bool:
        """dump-guest-memory stops a running guest (STOP, run state save-vm); True if it was running."""
        async with self._lifecycle:
            if not self.running:
                return False
            await self._vm_stop(RunState.SAVE_VM)
            return True

    def resume_after_dump(self) -> None:
        """The dump that stopped the guest is over: it runs again (RESUME)."""
        self.vm_start()

    def _refuse_during_dump(self) -> None:
        if self.dumping:
            from qmpd.machine.guest_dump import IN_PROCESS

            raise GenericError(IN_PROCESS)

    def cont(self) -> None:
        """QMP ``cont``, with QEMU's refusals."""
        self._refuse_during_dump()
        if self.needs_reset:
            raise GenericError("Resetting the Virtual Machine is required")
        if self._runstate is RunState.SUSPENDED:
            return
        if self._runstate is RunState.FINISH_MIGRATE:
            raise GenericError("Migration is not finalized yet")
        if self._runstate is RunState.INMIGRATE:
            self.autostart = True
            return
        self.vm_start()

    async def system_reset(self, cause: ShutdownCause) -> None:
        """Reset the machine; a machine that was not running ends in ``prelaunch``.

        Every vCPU is paused first, then the firmware is restored, the boot CPU
        restarts at its entry and the others are powered off until the
        firmware starts them again; RAM is otherwise left as the guest had it.
        Refused during a dump (QEMU aborts on its save-vm -> prelaunch change).
        """
        self._refuse_during_dump()
        async with self._lifecycle:
            await self._board.vcpus.pause_all()
            self.reset_devices()
            self.events.emit("RESET", {"guest": cause.by_guest, "reason": cause.value})
            if self._runstate not in (RunState.RUNNING, RunState.INMIGRATE, RunState.FINISH_MIGRATE):
                self.set_runstate(RunState.PRELAUNCH)
            if self.running:
                self._board.vcpus.resume_all()

    def reset_devices(self) -> None:
        """Put every device and vCPU back into its power-on state (vCPUs are paused)."""
        self.cpu_slots.reset_lapics()
        self._board.reset(self.cpu_slots.boot_index if self.cpu_slots.cpus else None)

    def system_powerdown(self) -> None:
        """Press the ACPI power button: POWERDOWN, then it is up to the guest (which may enter S5)."""
        self.events.emit("POWERDOWN")
        if self._board.pm is not None:
            self._board.pm.press_power_button()

    def _key_event(self, qcode: str, down: bool) -> None:
        if self._board.i8042 is not None:
            self._board.i8042.key(qcode, down)

    def inject_nmi(self) -> None:
        """QMP ``inject-nmi``: an NMI to every CPU, through its local APIC's LINT1 (QEMU's x86_nmi).

        A CPU whose guest left LINT1 masked ignores it, as on QEMU; a stopped machine takes it when it
        runs again.  A machine without the NMI interface (``none``) refuses, with QEMU's text.
        """
        if not self.machine_type.is_pc:
            raise GenericError("this feature or command is not currently supported")
        for cpu in self.cpu_slots.cpus:
            lapic = cpu.child("lapic")
            if isinstance(lapic, LocalAPIC) and cpu.cpu_index is not None and lapic.takes_nmi():
                self._board.vcpus.nmi(cpu.cpu_index)

    def shutdown(self, cause: ShutdownCause) -> None:
        """The machine is going away (quit, a signal): SHUTDOWN to every monitor."""
        self.events.emit("SHUTDOWN", {"guest": cause.by_guest, "reason": cause.value})
