"""What a saved machine holds, taken from a paused machine and put back into a freshly built one.

The target is built from the same command line as the source (as QEMU's -incoming requires), so the
state carries what changed since start-up: which CPUs are present (and where in QOM: their ids,
anonymous numbers, or /objects names), each CPU's switched features, run state, registers and local
APIC, the ACPI CPU hot-plug block and GPE registers, migration capabilities, and guest RAM.
``describe`` and ``check_compatible`` refuse a state taken from a different machine before anything
of it is applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmpd.cpu.x86cpu import X86CPU
from qmpd.devices.lapic import LocalAPIC
from qmpd.errors import GenericError
from qmpd.machine.qdev import DeviceOptions
from qmpd.migration.stream import RAMImage
from qmpd.vcpu.engine import CPUSnapshot

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

LAPIC_FIELDS = ("tpr", "svr", "ldr", "dfr", "icr_low", "icr_high")
SLOT_FIELDS = ("present", "is_inserting", "is_removing", "fw_remove", "ost_event", "ost_status", "device_id")


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


def check_compatible(machine: Machine, meta: dict[str, Any]) -> None:
    """Refuse a state of another machine (QEMU's target must be started with the source's options)."""
    saved, here = meta.get("machine", {}), describe(machine)
    for key, value in here.items():
        if saved.get(key) != value:
            raise GenericError(
                f"the saved machine differs from this one in '{key}': saved {saved.get(key)!r}, here {value!r}"
            )


async def capture(machine: Machine) -> dict[str, Any]:
    """The state of a machine whose vCPUs are all stopped (RAM is written separately)."""
    cpus = []
    for cpu in sorted(machine.cpus, key=lambda c: c.cpu_index or 0):
        assert cpu.cpu_index is not None
        runner = machine.board.vcpus.runners[cpu.cpu_index]
        snapshot = await machine.cpu_snapshot(cpu.cpu_index)
        lapic = cpu.child("lapic")
        assert isinstance(lapic, LocalAPIC)
        cpus.append(
            {
                "index": cpu.cpu_index,
                "type": cpu.type_name,
                "qom_path": cpu.canonical_path(),
                "id": cpu.qdev_id,
                "hotplugged": cpu.hotplugged,
                "switched": dict(cpu.switched),
                "runner": runner.saved_state(),
                "registers": snapshot._asdict(),
                "lapic": {name: getattr(lapic, name) for name in LAPIC_FIELDS},
            }
        )
    board = machine.board
    meta: dict[str, Any] = {
        "machine": describe(machine),
        "runstate": machine.runstate.value,
        "anon_count": machine.qom.anon_count,
        "cpus": cpus,
        "migration_capabilities": dict(machine.migration_capabilities),
    }
    if board.cpuhp is not None and board.gpe is not None:
        meta["cpuhp"] = {
            "legacy": board.cpuhp.legacy,
            "selector": board.cpuhp.selector,
            "command": board.cpuhp.command,
            "slots": [{name: getattr(slot, name) for name in SLOT_FIELDS} for slot in board.cpuhp.slots],
            "gpe": {"status": board.gpe.status, "enable": board.gpe.enable},
        }
    return meta


def load_ram(machine: Machine, ram: RAMImage) -> None:
    """Guest RAM from the image (any thread: the machine's vCPUs are stopped, waiting in inmigrate)."""
    if ram.size != machine.board.ram.size:
        raise GenericError(f"the saved RAM is {ram.size} bytes, this machine's {machine.board.ram.size}")
    ram.load_into(machine.board.ram.view(), machine.board.ram.touched_chunks(ram.chunk))


def restore(machine: Machine, meta: dict[str, Any]) -> None:
    """Make a just-built, paused machine with the saved RAM loaded the saved one (after check_compatible)."""
    saved = {entry["index"]: entry for entry in meta["cpus"]}
    # Boot CPUs the source had unplugged go (the ACPI block and slots are restored below).
    for cpu in list(machine.cpus):
        if cpu.cpu_index not in saved:
            machine.hotplug.ejected_silently(cpu)
    for index in sorted(saved):
        entry = saved[index]
        if index not in machine.slots:
            _plug(machine, entry)
    machine.qom.anon_count = int(meta["anon_count"])
    for index, entry in saved.items():
        cpu = machine.slots[index]
        lapic = cpu.child("lapic")
        assert isinstance(lapic, LocalAPIC)
        for name in LAPIC_FIELDS:
            setattr(lapic, name, entry["lapic"][name])
        registers = CPUSnapshot(**{key: _tuples(value) for key, value in entry["registers"].items()})
        machine.board.vcpus.runners[index].restore_state(entry["runner"], registers)
    board = machine.board
    block = meta.get("cpuhp")
    if block is not None and board.cpuhp is not None and board.gpe is not None:
        board.cpuhp.legacy = block["legacy"]
        board.cpuhp.selector = block["selector"]
        board.cpuhp.command = block["command"]
        for slot, fields in zip(board.cpuhp.slots, block["slots"], strict=True):
            for name in SLOT_FIELDS:
                setattr(slot, name, fields[name])
        board.gpe.status = block["gpe"]["status"]
        board.gpe.enable = block["gpe"]["enable"]
    machine.migration_capabilities.update(meta.get("migration_capabilities", {}))


def _plug(machine: Machine, entry: dict[str, Any]) -> None:
    """Re-create a hot-plugged CPU where the source had it: /machine/peripheral/ID,
    /machine/peripheral-anon/device[N] or /objects/ID linked into its topology slot."""
    path: str = entry["qom_path"]
    slot = machine.topology.slots[entry["index"]]
    props = {"socket-id": slot.socket_id, "core-id": slot.core_id, "thread-id": slot.thread_id}
    if machine.spec.smp.dies > 1:
        props["die-id"] = slot.die_id
    switched = [(name, "on" if on else "off") for name, on in entry["switched"].items()]
    if path.startswith("/objects/"):
        cpu = machine.new_cpu(entry["type"])
        for name, on in entry["switched"].items():
            cpu.switched[name] = on
        cpu.qdev_id = entry["id"]
        machine.qom.objects.add_child(path.rsplit("/", 1)[1], cpu)
        node = machine.qom.thread_nodes[entry["index"]]
        machine.hotplug.set_thread_link(node, path)
        return
    if path.startswith("/machine/peripheral-anon/device["):
        machine.qom.anon_count = int(path.rsplit("[", 1)[1].rstrip("]"))
    options = (("driver", entry["type"]), *((k, str(v)) for k, v in props.items()), *switched)
    machine.hotplug.device_add(DeviceOptions(entry["id"], options))
    cpu = machine.slots[entry["index"]]
    assert isinstance(cpu, X86CPU) and cpu.canonical_path() == path, (cpu.canonical_path(), path)


def _tuples(value: Any) -> Any:
    """JSON arrays back into the tuples CPUSnapshot holds."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value
