"""Every x86 CPU property, every way of making a CPU: a clean answer, never a half-made CPU.

For each property qom-list-properties reports for the machine's CPU type, and
for values of the right and of wrong types, each way of making a CPU must
either succeed (the CPU is then realized in its slot, and can be ejected
again, leaving the machine as it was) or fail with a QMP error of a known
class and a text, after which the QOM tree, the slot table, the thread links
and the set of ids are exactly as before.  The ways:

1. ``-cpu MODEL,prop=value``: the parser the command line uses, then (on
   success) a CPU built with those global properties and plugged, as a boot
   CPU would be;
2. QMP ``device_add`` with the property as an argument;
3. HMP ``device_add driver,prop=value`` through ``human-monitor-command``;
4. ``object-add`` with the property, then ``qom-set`` of a topology thread's
   ``cpu`` link to the new object.

The machine runs under -S, so no vCPU executes guest code; the guest's eject
is simulated through the hot-plug handler.  The sweep is deterministic (every
property, fixed values); a bounded hypothesis test adds random values.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmpd.commands.base import context_factory
from qmpd.config import MachineConfig
from qmpd.cpu.cpu_option import CPUOptionError, parse_cpu_option
from qmpd.cpu.cpuid import CPUIDTable, build_cpuid
from qmpd.cpu.x86cpu import X86CPU
from qmpd.dispatch import Dispatcher
from qmpd.errors import GenericError
from qmpd.events import EventBus
from qmpd.handlers import REGISTRY
from qmpd.machine.machine import Machine
from qmpd.machine.user_objects import MAX_OBJECTS
from qmpd.migration.migrator import Migrator
from qmpd.qapi.schema import Schema
from tests.helpers import InProcessDaemon, InProcessSession

SCHEMA = Schema.load()
MODEL = "Haswell"
CPU_TYPE = f"{MODEL}-x86_64-cpu"
#: One boot CPU and one free slot (socket 0, core 1): every plug in this file goes there.
SMP = "1,sockets=1,cores=2,threads=1,maxcpus=2"
FREE_SLOT = {"socket-id": 0, "core-id": 1, "thread-id": 0}
FREE_THREAD = "/machine/topology/socket[0]/die[0]/core[1]/thread[0]"
#: What a reply may be when qmpd failed on its own (an exception it did not expect).
INTERNAL_ERROR = "Internal error"
ERROR_CLASSES = {"GenericError", "DeviceNotFound"}

#: JSON values for QMP: right and wrong types, edges of every integer width, odd strings.
JSON_VALUES: tuple[Any, ...] = (
    True,
    False,
    "on",
    "off",
    "auto",
    0,
    1,
    -1,
    0x3F,
    1 << 31,
    1 << 32,
    1 << 63,
    (1 << 64) - 1,
    1 << 64,
    -(1 << 63) - 1,
    "",
    "\u0000",
    "x" * 300,
    "\u20acuro\u00e9",
    "GenuineIntel",
    1.5,
    [],
    {},
    None,
)
#: The same as text (-cpu and HMP give every value as text).
TEXT_VALUES: tuple[str, ...] = (
    "on",
    "off",
    "yes",
    "auto",
    "0",
    "1",
    "-1",
    "0x3f",
    "010",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "",
    "x" * 300,
    "\u20acuro\u00e9",
    "GenuineIntel",
    "1.5",
)


class Snapshot(NamedTuple):
    """What a failed attempt must leave exactly as it was."""

    tree: tuple[tuple[str, str], ...]
    slots: tuple[tuple[int, str], ...]
    thread_links: tuple[tuple[int, str], ...]
    ids: tuple[str, ...]
    objects: tuple[str, ...]
    vcpus: tuple[int, ...]
    cpus: tuple[str, ...]


class Rig:
    """One machine under -S with a dispatcher, and the checks the sweep makes."""

    def __init__(self) -> None:
        self.events = EventBus(SCHEMA, strict=True)
        self.machine = Machine(MachineConfig(cpu=MODEL, smp=SMP, start_paused=True), self.events)
        contexts = context_factory(self.machine, SCHEMA, self.events, InProcessDaemon(), Migrator(self.machine))
        self.dispatcher = Dispatcher(SCHEMA, REGISTRY, contexts)
        self.session = InProcessSession()
        self.baseline = self.snapshot()
        self.successes = 0
        self.failures = 0

    def close(self) -> None:
        self.machine.close()

    def snapshot(self) -> Snapshot:
        machine = self.machine
        qom = machine.qom
        return Snapshot(
            tree=tuple((obj.canonical_path(), obj.type_name) for obj in qom.root.walk()),
            slots=tuple(sorted((index, cpu.canonical_path()) for index, cpu in machine.cpu_slots.occupied.items())),
            thread_links=tuple(
                sorted(
                    (index, target.canonical_path())
                    for index, node in qom.thread_nodes.items()
                    if (target := node.link_target("cpu")) is not None
                )
            ),
            ids=tuple(name for name, _ in qom.peripheral.children()),
            objects=tuple(name for name, _ in qom.objects.children()),
            vcpus=tuple(sorted(machine._board.vcpus.runners)),  # no thread leaked
            cpus=tuple(cpu.canonical_path() for cpu in machine.cpu_slots.cpus),
        )

    async def execute(self, command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        outcome = self.dispatcher.dispatch({"execute": command, "arguments": arguments}, self.session)
        reply = outcome if isinstance(outcome, dict) else await asyncio.wait_for(outcome, timeout=10)
        json.dumps(reply)  # it can go on the wire
        return reply

    def check_error(self, reply: dict[str, Any], context: str) -> None:
        """A clean QMP error: a known class, a text, not qmpd's internal-error reply."""
        error = reply["error"]
        assert error["class"] in ERROR_CLASSES, context
        assert isinstance(error["desc"], str) and error["desc"], context
        assert INTERNAL_ERROR not in error["desc"], (context, error)
        assert "Traceback" not in error["desc"], context

    def check_unchanged(self, context: str) -> None:
        assert self.snapshot() == self.baseline, context

    def check_plugged_then_eject(self, context: str) -> None:
        """The CPU is realized in the free slot with its thread; ejecting it restores the machine."""
        machine = self.machine
        cpu = machine.cpu_slots.occupied.get(1)
        assert isinstance(cpu, X86CPU) and cpu.realized, context
        assert cpu.child("lapic") is not None, context
        assert 1 in machine._board.vcpus.runners, context
        assert machine.qom.thread_nodes[1].link_target("cpu") is cpu, context
        cpuid_of(cpu, machine)  # what the vCPU thread builds when the guest starts the CPU
        machine.unplug(cpu)  # the guest ejected it
        self.check_unchanged(context)

    def settle(self, reply: dict[str, Any], context: str) -> None:
        """Check one attempt's outcome, then bring the machine back to its baseline."""
        if "error" in reply:
            self.failures += 1
            self.check_error(reply, context)
            self.check_unchanged(context)
        else:
            self.successes += 1
            assert reply == {"return": {}}, context
            self.check_plugged_then_eject(context)


def cpuid_of(cpu: X86CPU, machine: Machine) -> CPUIDTable:
    """The CPUID table of a plugged CPU, as its engine gets it when the guest starts the CPU (under -S the
    thread has not built it yet)."""
    levels = {name: cpu.level(name) for name in ("level", "xlevel", "xlevel2", "level-func7")}
    apic_id = int(cpu.values["apic-id"])
    return build_cpuid(cpu.engine(), cpu.identity, cpu.guest_features(), levels, machine.topology, apic_id)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    built = Rig()
    yield built
    built.close()


def property_names(rig: Rig) -> list[str]:
    """What qom-list-properties says the CPU type has (~439 names)."""
    reply = rig.dispatcher.dispatch(
        {"execute": "qom-list-properties", "arguments": {"typename": CPU_TYPE}}, rig.session
    )
    assert isinstance(reply, dict)
    return [entry["name"] for entry in reply["return"]]


def hmp_text(value: str) -> str:
    """A value inside QemuOpts text: a comma is written twice."""
    return value.replace(",", ",,")


# -- 1. -cpu ---------------------------------------------------------------------------------


async def try_cpu_option(rig: Rig, name: str, text: str) -> None:
    """-cpu MODEL,name=text: a CPUOptionError with a text, or a CPU that plugs with those globals."""
    context = f"-cpu {MODEL},{name}={text[:40]}"
    try:
        option = parse_cpu_option(f"{MODEL},{name}={text}")
    except CPUOptionError as exc:
        assert str(exc).startswith(f"can't apply global {CPU_TYPE}."), context
        rig.failures += 1
        return
    machine = rig.machine
    saved = machine.spec
    machine.spec = saved._replace(cpu=option)
    try:
        reply = await rig.execute("device_add", {"driver": CPU_TYPE, **FREE_SLOT})
    finally:
        machine.spec = saved
    rig.settle(reply, context)


async def test_every_property_through_cpu_option(rig: Rig) -> None:
    names = property_names(rig)
    assert len(names) > 400
    for name in names:
        for text in TEXT_VALUES:
            await try_cpu_option(rig, name, text)
    assert rig.successes > 500 and rig.failures > 1000


# -- 2. and 3. device_add ---------------------------------------------------------------------


async def test_every_property_through_qmp_device_add(rig: Rig) -> None:
    for name in property_names(rig):
        for value in JSON_VALUES:
            arguments = {"driver": CPU_TYPE, "id": "swept", **FREE_SLOT, name: value}
            reply = await rig.execute("device_add", arguments)
            rig.settle(reply, f"device_add {name}={value!r:.40}")
    assert rig.successes > 500 and rig.failures > 1000


async def test_every_property_through_hmp_device_add(rig: Rig) -> None:
    slot = ",".join(f"{key}={value}" for key, value in FREE_SLOT.items())
    for name in property_names(rig):
        for text in TEXT_VALUES:
            line = f"device_add {CPU_TYPE},id=swept,{slot},{name}={hmp_text(text)}"
            reply = await rig.execute("human-monitor-command", {"command-line": line})
            context = f"HMP {line[:120]}"
            assert "error" not in reply, context
            output = reply["return"]
            assert INTERNAL_ERROR not in output and "Traceback" not in output, context
            if output.startswith("Error: ") or output.startswith("Try "):
                rig.failures += 1
                rig.check_unchanged(context)
            else:
                rig.successes += 1
                rig.check_plugged_then_eject(context)
    assert rig.successes > 500 and rig.failures > 1000


# -- 4. object-add + the topology link ----------------------------------------------------------


async def try_object_add(rig: Rig, name: str, value: Any) -> None:
    context = f"object-add {name}={value!r:.40}"
    reply = await rig.execute("object-add", {"qom-type": CPU_TYPE, "id": "swept", name: value})
    if "error" in reply:
        rig.check_error(reply, context)
        rig.check_unchanged(context)
        rig.failures += 1
        return
    cpu = rig.machine.qom.objects.child("swept")
    assert isinstance(cpu, X86CPU) and not cpu.realized, context
    before = cpu.settings()
    linked = await rig.execute("qom-set", {"path": FREE_THREAD, "property": "cpu", "value": "/objects/swept"})
    if "error" in linked:
        rig.check_error(linked, context)
        assert cpu.settings() == before and not cpu.realized and cpu.child("lapic") is None, context
        deleted = await rig.execute("object-del", {"id": "swept"})
        assert deleted == {"return": {}}, context
        rig.check_unchanged(context)
        rig.failures += 1
        return
    rig.successes += 1
    rig.check_plugged_then_eject(context)


async def test_every_property_through_object_add_and_the_topology_link(rig: Rig) -> None:
    for name in property_names(rig):
        for value in JSON_VALUES:
            await try_object_add(rig, name, value)
    assert rig.successes > 500 and rig.failures > 1000


# -- random values ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=4), children, max_size=2),
    max_leaves=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_random_values_on_random_properties(rig: Rig, data: st.DataObject) -> None:
    names = property_names(rig)
    name = data.draw(st.sampled_from(names))
    value = data.draw(json_values)
    text = data.draw(st.text(alphabet=st.characters(blacklist_characters="\x00,"), max_size=24))
    reply = await rig.execute("device_add", {"driver": CPU_TYPE, "id": "swept", **FREE_SLOT, name: value})
    rig.settle(reply, f"device_add {name}={value!r:.40}")
    await try_object_add(rig, name, value)
    await try_cpu_option(rig, name, text)


# -- the issue's cases and QEMU 7.2's texts -------------------------------------------------------

#: qemu-system-x86_64 -machine pc -accel tcg -cpu Haswell,kvm-hint-dedicated=on: it warns and drops the flag.
KVM_HINT_WARNING = "TCG doesn't support requested feature: CPUID.40000001H:EDX.kvm-hint-dedicated [bit 0]"


async def test_kvm_hint_dedicated_on_the_command_line_is_filtered_as_qemu_does() -> None:
    machine = Machine(MachineConfig(cpu=f"{MODEL},kvm-hint-dedicated=on", smp=SMP, start_paused=True), EventBus(SCHEMA))
    try:
        boot = machine.cpu_slots.cpus[0]
        assert boot.get_property("kvm-hint-dedicated") is False
        assert "kvm-hint-dedicated" in boot.get_property("unavailable-features")
        assert boot.get_property("level") == 13  # a hypervisor leaf raises no level (measured: QEMU says 13)
        assert KVM_HINT_WARNING in boot.filter_warnings()
    finally:
        machine.close()


async def test_kvm_hint_dedicated_through_device_add_plugs(rig: Rig) -> None:
    reply = await rig.execute("device_add", {"driver": CPU_TYPE, "id": "c1", **FREE_SLOT, "kvm-hint-dedicated": True})
    assert reply == {"return": {}}
    assert KVM_HINT_WARNING in rig.machine.cpu_slots.occupied[1].filter_warnings()
    rig.check_plugged_then_eject("kvm-hint-dedicated")


async def test_an_unexpected_failure_in_device_add_frees_the_id(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_realize(cpu: X86CPU) -> None:
        raise KeyError("a bug")

    with monkeypatch.context() as patch:
        patch.setattr(X86CPU, "realize", broken_realize)
        reply = await rig.execute("device_add", {"driver": CPU_TYPE, "id": "c1", **FREE_SLOT})
    assert reply["error"]["desc"].startswith(INTERNAL_ERROR)
    rig.check_unchanged("after the failed device_add")
    assert await rig.execute("device_add", {"driver": CPU_TYPE, "id": "c1", **FREE_SLOT}) == {"return": {}}
    rig.check_plugged_then_eject("the id was free again")


async def test_a_failed_plug_through_the_link_leaves_the_object_as_it_was(rig: Rig) -> None:
    assert await rig.execute("object-add", {"qom-type": CPU_TYPE, "id": "c1", "phys-bits": 999}) == {"return": {}}
    names = ("apic-id", "socket-id", "core-id", "thread-id", "level", "phys-bits", "realized")
    before = [rig.machine.qom.objects.child("c1").get_property(name) for name in names]  # type: ignore[union-attr]
    reply = await rig.execute("qom-set", {"path": FREE_THREAD, "property": "cpu", "value": "/objects/c1"})
    assert reply["error"] == {"class": "GenericError", "desc": "phys-bits should be between 32 and 52  (but is 999)"}
    after = [rig.machine.qom.objects.child("c1").get_property(name) for name in names]  # type: ignore[union-attr]
    assert after == before
    assert await rig.execute("object-del", {"id": "c1"}) == {"return": {}}
    rig.check_unchanged("after object-del")


#: -cpu Haswell,<setting> -> QEMU 7.2's error (measured with qemu-system-x86_64 -accel tcg).
QEMU_CPU_OPTION_ERRORS = {
    "crash-information=x": "Property 'Haswell-x86_64-cpu.crash-information' is not writable",
    "feature-words=1": "Property 'Haswell-x86_64-cpu.feature-words' is not writable",
    "hotplugged=on": "Property 'Haswell-x86_64-cpu.hotplugged' is not writable",
    "parent_bus=x": "Property 'Haswell-x86_64-cpu.parent-bus' not found",
    "realized=on": "CPU socket-id is not set",
    "hv-no-nonarch-coresharing=bogus": "Parameter 'hv-no-nonarch-coresharing' does not accept value 'bogus'",
    "lbr-fmt=-1": "Property value for 'lbr-fmt' has bits outside mask '0x3f'",
    "level=-1": "Parameter 'level' expects uint32_t",
    "level=99999999999": "Parameter 'level' expects uint32_t",
    "node-id=99999999999": "Parameter 'node-id' expects int32_t",
    "family=x": "Parameter 'family' expects int64",
    "popcnt=maybe": "Parameter 'popcnt' expects 'on' or 'off'",
    "vendor=abc": "Property '.vendor' doesn't take value 'abc'",
}


@pytest.mark.parametrize(("setting", "desc"), QEMU_CPU_OPTION_ERRORS.items())
def test_cpu_option_errors_are_qemus(setting: str, desc: str) -> None:
    key = setting.partition("=")[0].replace("_", "-")
    with pytest.raises(CPUOptionError) as caught:
        parse_cpu_option(f"{MODEL},{setting}")
    assert str(caught.value) == f"can't apply global {CPU_TYPE}.{key}={setting.partition('=')[2]}: {desc}"


async def test_cpu_option_integers_are_read_as_c_reads_them() -> None:
    option = parse_cpu_option(f"{MODEL},family=010,level=0x10,ucode-rev=-1,hv-no-nonarch-coresharing=auto")
    assert option.globals == (
        ("family", "010"),
        ("level", "0x10"),
        ("ucode-rev", "-1"),
        ("hv-no-nonarch-coresharing", "auto"),
    )
    machine = Machine(MachineConfig(cpu=f"{MODEL},family=010,level=0x10", smp=SMP, start_paused=True), EventBus(SCHEMA))
    try:
        assert machine.cpu_slots.cpus[0].get_property("family") == 8  # measured: QEMU reads 010 as octal
        assert machine.cpu_slots.cpus[0].get_property("level") == 16
    finally:
        machine.close()


#: device_add arguments (besides driver, id and the free slot) -> QEMU 7.2's error text.
QEMU_DEVICE_ADD_ERRORS: tuple[tuple[dict[str, Any], str], ...] = (
    ({"nosuch": 1}, "Property 'Haswell-x86_64-cpu.nosuch' not found"),
    ({"family": "x"}, "Parameter 'family' expects integer"),
    ({"level": "x"}, "Parameter 'level' expects integer"),
    ({"level": -1}, "Parameter 'level' expects uint32_t"),
    ({"popcnt": "maybe"}, "Parameter 'popcnt' expects 'on' or 'off'"),
    ({"hv-no-nonarch-coresharing": "x"}, "Parameter 'hv-no-nonarch-coresharing' does not accept value 'x'"),
    ({"crash-information": "x"}, "Property 'Haswell-x86_64-cpu.crash-information' is not writable"),
    ({"feature-words": "x"}, "Property 'Haswell-x86_64-cpu.feature-words' is not writable"),
    ({"lbr-fmt": 64}, "Property value for 'lbr-fmt' has bits outside mask '0x3f'"),
    ({"phys-bits": 999}, "phys-bits should be between 32 and 52  (but is 999)"),
)


@pytest.mark.parametrize(("extra", "desc"), QEMU_DEVICE_ADD_ERRORS)
async def test_device_add_errors_are_qemus(rig: Rig, extra: dict[str, Any], desc: str) -> None:
    reply = await rig.execute("device_add", {"driver": CPU_TYPE, "id": "c1", **FREE_SLOT, **extra})
    assert reply["error"] == {"class": "GenericError", "desc": desc}
    rig.check_unchanged(desc)


#: qom-set on the realized boot CPU -> QEMU 7.2's error text.
QEMU_QOM_SET_ERRORS = (
    (
        "level",
        3,
        "Attempt to set property 'level' on anonymous device (type 'Haswell-x86_64-cpu') after it was realized",
    ),
    ("family", "x", "Invalid parameter type for 'family', expected: integer"),
    ("nosuch", 1, "Property 'Haswell-x86_64-cpu.nosuch' not found"),
    ("crash-information", "x", "Property 'Haswell-x86_64-cpu.crash-information' is not writable"),
    ("feature-words", "x", "Property 'Haswell-x86_64-cpu.feature-words' is not writable"),
)


@pytest.mark.parametrize(("name", "value", "desc"), QEMU_QOM_SET_ERRORS)
async def test_qom_set_errors_are_qemus(rig: Rig, name: str, value: Any, desc: str) -> None:
    path = rig.machine.cpu_slots.cpus[0].canonical_path()
    reply = await rig.execute("qom-set", {"path": path, "property": name, "value": value})
    assert reply["error"] == {"class": "GenericError", "desc": desc}


async def test_a_realize_that_fails_after_the_slot_is_chosen_leaves_the_object_as_it_was(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await rig.execute("object-add", {"qom-type": CPU_TYPE, "id": "c1"}) == {"return": {}}
    cpu = rig.machine.qom.objects.child("c1")
    assert isinstance(cpu, X86CPU)
    names = ("apic-id", "socket-id", "core-id", "thread-id", "level", "realized")
    before = [cpu.get_property(name) for name in names]

    def refusing_realize(cpu: X86CPU) -> None:
        cpu.expand()  # a change realize makes before it refuses
        raise GenericError("refused")

    with monkeypatch.context() as patch:
        patch.setattr(X86CPU, "realize", refusing_realize)
        reply = await rig.execute("qom-set", {"path": FREE_THREAD, "property": "cpu", "value": "/objects/c1"})
    assert reply["error"] == {"class": "GenericError", "desc": "refused"}
    assert [cpu.get_property(name) for name in names] == before
    assert await rig.execute("qom-set", {"path": FREE_THREAD, "property": "cpu", "value": "/objects/c1"}) == {
        "return": {}
    }
    rig.check_plugged_then_eject("plugged after the refusal")


# -- object-add's bound and object-del's release -------------------------------------------------


async def test_object_add_is_bounded_and_object_del_frees_a_place(rig: Rig) -> None:
    for number in range(MAX_OBJECTS):
        reply = await rig.execute("object-add", {"qom-type": CPU_TYPE, "id": f"o{number}"})
        assert reply == {"return": {}}, number
    reply = await rig.execute("object-add", {"qom-type": CPU_TYPE, "id": "one-more"})
    assert reply["error"] == {
        "class": "GenericError",
        "desc": f"Too many objects: at most {MAX_OBJECTS} can exist at once (object-del frees one)",
    }
    assert rig.machine.qom.objects.child("one-more") is None
    assert await rig.execute("object-del", {"id": "o0"}) == {"return": {}}
    assert await rig.execute("object-add", {"qom-type": CPU_TYPE, "id": "one-more"}) == {"return": {}}


async def test_object_del_releases_every_cpu_object_add_made(rig: Rig) -> None:
    made = []
    for number in range(200):
        assert await rig.execute("object-add", {"qom-type": CPU_TYPE, "id": f"o{number}", "level": 7}) == {"return": {}}
        made.append(weakref.ref(rig.machine.qom.objects.child(f"o{number}")))  # type: ignore[arg-type]
    for number in range(200):
        assert await rig.execute("object-del", {"id": f"o{number}"}) == {"return": {}}
    gc.collect()
    assert [ref for ref in made if ref() is not None] == []
    rig.check_unchanged("after object-del of everything object-add made")
