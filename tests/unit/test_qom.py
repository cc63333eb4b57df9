"""QOM: types, the tree, paths, property rules, and x86 CPU objects (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from qmpd.config import MachineConfig
from qmpd.cpu.cpu_option import CPUOptionError, parse_cpu_option
from qmpd.cpu.x86cpu import X86CPU
from qmpd.errors import DeviceNotFound, GenericError
from qmpd.events import EventBus
from qmpd.machine.machine import Machine
from qmpd.machine.qom_tree import new_object, type_registry
from qmpd.qapi.schema import Schema
from qmpd.qom.object import lookup, resolve_path

SCHEMA = Schema.load()


@pytest.fixture
async def machine() -> AsyncIterator[Machine]:
    config = MachineConfig(cpu="Haswell", smp="2,sockets=2,cores=2,threads=1,maxcpus=4", start_paused=True)
    built = Machine(config, EventBus(SCHEMA, strict=True))
    yield built
    built.close()


def test_type_ancestry_and_interfaces() -> None:
    registry = type_registry()
    assert [t.name for t in registry.ancestry("Haswell-x86_64-cpu")] == [
        "Haswell-x86_64-cpu", "x86_64-cpu", "cpu", "device", "object",
    ]  # fmt: skip
    assert registry.is_a("pc-i440fx-7.2-machine", "hotplug-handler")
    assert not registry.is_a("none-machine", "hotplug-handler")
    assert {t.name for t in registry.list_types("accel", False)} == {"accel", "tcg-accel"}
    assert registry.list_types("no-such-type", True) == []


def test_tree_and_canonical_paths(machine: Machine) -> None:
    root = machine.qom.root
    assert [name for name, _ in root.children()] == ["objects", "machine", "chardevs"]
    cpu1 = lookup(root, "/machine/unattached/device[2]")
    assert isinstance(cpu1, X86CPU) and cpu1.canonical_path() == "/machine/unattached/device[2]"
    assert lookup(root, "/machine/unattached/device[1]").type_name == "kvmvapic"
    assert (
        lookup(root, "/machine/topology/socket[0]/die[0]/core[1]/thread[0]").get_property("cpu")
        == cpu1.canonical_path()
    )
    assert lookup(root, "/machine/topology/socket[1]/die[0]/core[0]/thread[0]").get_property("cpu") == ""


@pytest.mark.parametrize("path", ["machine", "//machine", "/machine/", "unattached/device[0]", "device[0]/lapic"])
def test_partial_and_odd_paths_resolve(machine: Machine, path: str) -> None:
    found, ambiguous = resolve_path(machine.qom.root, path)
    assert found is not None and not ambiguous


def test_ambiguous_and_missing_paths(machine: Machine) -> None:
    assert resolve_path(machine.qom.root, "") == (None, True)
    assert resolve_path(machine.qom.root, "lapic") == (None, True), "two CPUs, two lapics"
    with pytest.raises(GenericError, match="Path 'lapic' is ambiguous"):
        lookup(machine.qom.root, "lapic", report_ambiguity=True)
    with pytest.raises(DeviceNotFound, match="Device 'lapic' not found"):
        lookup(machine.qom.root, "lapic")


def test_static_properties_freeze_at_realize(machine: Machine) -> None:
    cpu = machine.cpu_slots.cpus[0]
    for name in ("level", "avx2", "apic-id", "socket-id"):
        with pytest.raises(GenericError, match=f"Attempt to set property '{name}' on anonymous device"):
            cpu.set_property(name, 1 if name != "avx2" else True)
    with pytest.raises(GenericError, match=r"Attempt to set property 'sse4\.1'"):
        cpu.set_property("sse4-1", False)
    cpu.set_property("family", 15)
    cpu.set_property("model-id", "x" * 60)
    assert cpu.get_property("family") == 15 and cpu.get_property("model-id") == "x" * 48
    with pytest.raises(GenericError, match=r"Property \.family doesn.t take value 271"):
        cpu.set_property("family", 271)
    with pytest.raises(GenericError, match="is not writable"):
        cpu.set_property("hotplugged", True)
    with pytest.raises(GenericError, match="Invalid parameter type for 'family', expected: integer"):
        cpu.set_property("family", "6")


def test_unrealized_cpu_accepts_static_properties_and_expands_levels() -> None:
    cpu = new_object("486-x86_64-cpu")
    assert isinstance(cpu, X86CPU)
    cpu.set_property("arat", True)
    cpu.set_property("level", 0xFFFFFFFF)
    cpu.expand()
    assert cpu.get_property("level") == 6
    with pytest.raises(GenericError, match=r"Parameter .level. expects uint32"):
        cpu.set_property("level", 1 << 32)


def test_unavailable_features_are_what_unicorn_lacks(machine: Machine) -> None:
    cpu = machine.cpu_slots.cpus[0]
    unavailable = cpu.get_property("unavailable-features")
    assert {"avx", "avx2", "x2apic", "hle", "rtm"} <= set(unavailable)
    assert not cpu.get_property("avx2") and cpu.get_property("sse4.2")
    filtered = {
        (w["cpuid-input-eax"], w["cpuid-register"]): w["features"] for w in cpu.get_property("filtered-features")
    }
    assert filtered[(7, "EBX")] & 1 << 5, "avx2 is CPUID.7.0:EBX bit 5"


def test_realized_false_takes_a_cpu_out(machine: Machine) -> None:
    events: list[tuple[str, object]] = []
    machine.events.observers.append(lambda name, data: events.append((name, data)))
    cpu = machine.cpu_slots.cpus[1]
    machine.qom_set(cpu, "realized", False)
    assert [entry["cpu-index"] for entry in machine.cpu_slots.cpus_fast()] == [0]
    assert events == [("DEVICE_DELETED", {"path": "/machine/unattached/device[2]/lapic"})]
    paths = [entry.get("qom-path") for entry in machine.cpu_slots.hotpluggable_cpus()]
    assert "/machine/unattached/device[2]" in paths, "nothing unplugged it: the slot stays the CPU's"
    with pytest.raises(GenericError, match=r"CPU\[1\] with APIC ID 1 exists"):
        machine.qom_set(cpu, "realized", True)
    assert not cpu.realized


def test_realized_false_on_the_boot_cpu_sends_nothing(machine: Machine) -> None:
    """The boot CPU's lapic is the one QEMU's kvmvapic was made with: QEMU never finalizes it, so no event."""
    events: list[tuple[str, object]] = []
    machine.events.observers.append(lambda name, data: events.append((name, data)))
    machine.qom_set(machine.cpu_slots.cpus[0], "realized", False)
    assert events == []
    paths = [entry.get("qom-path") for entry in machine.cpu_slots.hotpluggable_cpus()]
    assert paths[-2:] == ["/machine/unattached/device[2]", "/machine/unattached/device[0]"]


def test_cpu_option_errors_and_warnings() -> None:
    with pytest.raises(CPUOptionError, match="unable to find CPU model 'haswell'"):
        parse_cpu_option("haswell")
    with pytest.raises(CPUOptionError, match=r"can't apply global Haswell-x86_64-cpu\.foo=on: Property"):
        parse_cpu_option("Haswell,foo=on")
    with pytest.raises(CPUOptionError, match="Parameter 'avx2' expects 'on' or 'off'"):
        parse_cpu_option("Haswell,avx2=maybe")
    option = parse_cpu_option("pentium,-fpu,+fpu,-mce,mce=on,+cx8,cx8=off")
    assert option.plus == {"fpu", "cx8"} and option.minus == {"fpu", "mce"}
    assert len(option.warnings) == 3
