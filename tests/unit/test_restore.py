"""Restoring a state is all-or-nothing, driven in-process through Migrator.accept (no subprocess).

The source machine has CPUs plugged by all three legacy paths (cpu_set, cpu-add, device_add); its
description is then mutated field by field and re-checksummed: each restore either completes or ends
``failed`` with an ``error-desc``, logged, with nothing of it applied, and a good state loads after.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmpd.config import DeviceConfig, MachineConfig
from qmpd.events import EventBus
from qmpd.machine.legacy_cpu import cpu_add, cpu_set
from qmpd.machine.machine import Machine
from qmpd.machine.qdev import DeviceOptions, qdev_device_add
from qmpd.migration import state as state_module
from qmpd.migration.migrator import Migrator
from qmpd.migration.state import capture
from qmpd.migration.stream import MAGIC, TRAILER, write_state
from qmpd.qapi.schema import Schema

SCHEMA = Schema.load()
SMP = "1,sockets=2,cores=2,threads=1,maxcpus=4"
RAM = 8 << 20
DEEP = "<nested 5000 deep>"
SOURCE_PATHS = [
    "/machine/unattached/device[0]",
    "/machine/unattached/device[27]",  # after the boot CPU, kvmvapic and QEMU's 25 chipset devices of pc
    "/machine/unattached/device[28]",
    "/machine/peripheral/vcpu3",
]


def _machine(incoming: str | None = None, cpu: str = "Haswell") -> Machine:
    config = MachineConfig(cpu=cpu, smp=SMP, ram_size=RAM, start_paused=True, incoming=incoming)
    return Machine(config, EventBus(SCHEMA))


async def _source_description() -> tuple[dict[str, Any], bytes]:
    """A paused source with CPUs from cpu_set (slot 1), cpu-add (slot 2) and device_add (slot 3)."""
    source = _machine()
    try:
        cpu_set(source, 1, "online")
        cpu_add(source, 2)
        options = (("driver", "Haswell-x86_64-cpu"), ("socket-id", "1"), ("core-id", "1"), ("thread-id", "0"))
        qdev_device_add(source, DeviceOptions("vcpu3", options))
        source.ram.write(0x1000, b"saved RAM")
        await source.stop_for_migration()
        meta = await capture(source)
        meta["runstate"] = "paused"
        return json.loads(json.dumps(meta)), bytes(source.ram.view())
    finally:
        source.close()


@dataclass(frozen=True)
class Saved:
    """The source's description and RAM (kept out of reprs: hypothesis prints its arguments)."""

    meta: dict[str, Any] = field(repr=False)
    ram: bytes = field(repr=False)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.meta, self.ram))


@pytest.fixture(scope="module")
def good() -> Saved:
    return Saved(*asyncio.run(_source_description()))


def _write(path: Path, meta: Any, ram: bytes) -> str:
    """A state file of ``meta`` (where DEEP stands, a list nested 5000 deep) and ``ram``."""
    with path.open("wb") as out:
        write_state(out, {}, memoryview(ram))
    description = json.dumps(meta).replace(json.dumps(DEEP), "[" * 5000 + "0" + "]" * 5000)
    path.write_bytes(_with_description(path.read_bytes(), description.encode()))
    return f"file:{path}"


def _fingerprint(machine: Machine) -> dict[str, Any]:
    """Everything a restore may change, as plain data."""
    board, qom = machine._board, machine.qom  # the hardware a restore writes
    assert board.cpuhp is not None and board.gpe is not None
    return {
        "cpus": [(cpu.cpu_index, cpu.canonical_path(), cpu.realized) for cpu in machine.cpu_slots.cpus],
        "slots": sorted(machine.cpu_slots.occupied),
        "counters": (qom.anon_count, qom.unattached_count),
        "tree": {
            name: sorted(child for child, _ in container.children())
            for name, container in (
                ("unattached", qom.unattached),
                ("peripheral", qom.peripheral),
                ("anon", qom.peripheral_anon),
                ("objects", qom.objects),
            )
        },
        "links": {index: node.link_target("cpu") is not None for index, node in qom.thread_nodes.items()},
        "cpuhp": (board.cpuhp.legacy, board.cpuhp.selector, board.cpuhp.command, repr(board.cpuhp.slots)),
        "gpe": (board.gpe.status, board.gpe.enable),
        "runners": {i: (r.save_state(), r._pending_registers) for i, r in board.vcpus.runners.items()},
        "capabilities": dict(machine.migration_capabilities),
        "ram": bytes(board.ram.view()[:0x2000]),
        "runstate": machine.runstate.value,
    }


def _restore(
    uri: str, good_uri: str | None = None, prepare: Callable[[Machine], None] = lambda target: None
) -> tuple[str, dict[str, Any], list[Any], Machine]:
    """Load ``uri`` into a fresh target (``prepare``d first, as libvirt device_adds vCPUs while it
    waits); on failure, check it is untouched and that ``good_uri`` loads."""

    async def run() -> tuple[str, dict[str, Any], list[Any], Machine]:
        target = _machine("defer")
        prepare(target)
        migrator = Migrator(target, "defer")
        before = _fingerprint(target)
        with structlog.testing.capture_logs() as logs:
            await asyncio.wait_for(migrator.accept(uri), 10)
        info = migrator.info()
        if info["status"] == "failed":
            assert _fingerprint(target) == before, "nothing of a refused state is applied"
            if good_uri is not None:
                await asyncio.wait_for(migrator.accept(good_uri), 10)
                assert migrator.info()["status"] == "completed", migrator.info()
                assert [cpu.canonical_path() for cpu in target.cpu_slots.cpus] == SOURCE_PATHS
        return info["status"], info, logs, target

    return asyncio.run(run())


@pytest.fixture
def closing() -> Iterator[list[Machine]]:
    machines: list[Machine] = []
    yield machines
    for machine in machines:
        machine.close()


def test_cpus_of_cpu_set_cpu_add_and_device_add_come_back_at_their_paths(
    good: Saved, tmp_path: Path, closing: list[Machine]
) -> None:
    meta, ram = good
    status, info, _, target = _restore(_write(tmp_path / "good.state", meta, ram))
    closing.append(target)
    assert status == "completed", info
    assert [cpu.canonical_path() for cpu in target.cpu_slots.cpus] == SOURCE_PATHS
    assert sorted(target.cpu_slots.occupied) == [0, 1, 2, 3]
    assert target.qom.unattached_count == 29, "the next cpu-add takes device[29], as on the source"
    assert target.runstate.value == "paused"
    assert bytes(target.ram.view()[0x1000:0x1009]) == b"saved RAM"
    assert [target.cpu_slots.occupied[index].hotplugged for index in range(4)] == [False, True, True, True]


def test_a_failure_while_applying_takes_back_what_was_applied(
    good: Saved, tmp_path: Path, closing: list[Machine], monkeypatch: pytest.MonkeyPatch
) -> None:
    meta, ram = good

    def broken(machine: Machine, entry: Any) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(state_module, "_apply_cpu_state", broken)
    status, info, logs, target = _restore(_write(tmp_path / "good.state", meta, ram))
    closing.append(target)
    assert status == "failed" and "injected" in info["error-desc"]
    assert [cpu.canonical_path() for cpu in target.cpu_slots.cpus] == SOURCE_PATHS[:1], "the plugged CPUs went again"
    assert sorted(target.cpu_slots.occupied) == [0] and target.runstate.value == "inmigrate"
    unexpected = [entry for entry in logs if entry["event"] == "migration.incoming_failed_unexpectedly"]
    assert unexpected and unexpected[0]["exc_info"], "logged with its traceback"


def test_a_state_of_a_qmpd_before_section_versions_loads(good: Saved, tmp_path: Path, closing: list[Machine]) -> None:
    meta, ram = good
    assert meta["state_versions"] == {
        "runner": 2, "registers": 1, "lapic": 2, "cpuhp": 1, "pm": 1, "pci": 1, "fw_cfg": 1, "i8042": 1,
        "ioapic": 1,
        "guest-policy": 1,
    }  # fmt: skip
    older = {key: value for key, value in meta.items() if key != "state_versions"}
    status, info, _, target = _restore(_write(tmp_path / "older.state", older, ram))
    closing.append(target)
    assert status == "completed", info
    assert [cpu.canonical_path() for cpu in target.cpu_slots.cpus] == SOURCE_PATHS


def test_a_section_newer_than_this_qmpd_is_refused_by_name(good: Saved, tmp_path: Path, closing: list[Machine]) -> None:
    meta, ram = good
    newer = {**meta, "state_versions": {**meta["state_versions"], "lapic": 3}}
    status, info, _, target = _restore(_write(tmp_path / "newer.state", newer, ram))
    closing.append(target)
    assert status == "failed" and "'lapic' state has version 3" in info["error-desc"], info


def test_a_state_without_lint_registers_nmi_or_keyboard_loads(
    good: Saved, tmp_path: Path, closing: list[Machine]
) -> None:
    """Version 1 of the lapic and runner sections, and no i8042 section: qmpd before inject-nmi and send-key."""
    meta, ram = good
    cpus = []
    for cpu in meta["cpus"]:
        lapic = {key: value for key, value in cpu["lapic"].items() if key not in ("lint0", "lint1")}
        runner = {key: value for key, value in cpu["runner"].items() if key != "nmi"}
        cpus.append({**cpu, "lapic": lapic, "runner": runner})
    versions = {**meta["state_versions"], "lapic": 1, "runner": 1}
    versions.pop("i8042")
    older = {key: value for key, value in meta.items() if key != "i8042"} | {"cpus": cpus, "state_versions": versions}
    status, info, _, target = _restore(_write(tmp_path / "older.state", older, ram))
    closing.append(target)
    assert status == "completed", info
    lapic = target.cpu_slots.cpus[0].child("lapic")
    assert lapic is not None and lapic.save_state()["lint1"] == 0x10000, "LINT1 masked, as at power-on"


def test_a_keyboard_queue_longer_than_the_ps2_queue_is_refused(
    good: Saved, tmp_path: Path, closing: list[Machine]
) -> None:
    meta, ram = good
    keyboard = {**meta["i8042"]["keyboard"], "queue": [0x1E] * 17}
    bad = {**meta, "i8042": {**meta["i8042"], "keyboard": keyboard}}
    status, info, _, target = _restore(_write(tmp_path / "bad.state", bad, ram))
    closing.append(target)
    assert status == "failed" and "'i8042.keyboard.queue'" in info["error-desc"], info


# -- CPUs plugged on the target while it waits (libvirt's restore) ----------------------------------------


def _device_add(machine: Machine, qdev_id: str, socket_id: int, core_id: int, *features: str) -> None:
    slot = (("socket-id", str(socket_id)), ("core-id", str(core_id)), ("thread-id", "0"))
    switched = tuple((name, value) for name, value in (feature.split("=") for feature in features))
    qdev_device_add(machine, DeviceOptions(qdev_id, (("driver", "Haswell-x86_64-cpu"), *slot, *switched)))


@pytest.fixture(scope="module")
def libvirt_saved() -> Saved:
    """A paused source with vcpu1 (slot 1) and vcpu3 (slot 3) device_added, as libvirt plugs them."""

    async def save() -> Saved:
        source = _machine()
        try:
            _device_add(source, "vcpu1", 0, 1)
            _device_add(source, "vcpu3", 1, 1)
            source.ram.write(0x1000, b"saved RAM")
            await source.stop_for_migration()
            meta = await capture(source)
            meta["runstate"] = "paused"
            return Saved(json.loads(json.dumps(meta)), bytes(source.ram.view()))
        finally:
            source.close()

    return asyncio.run(save())


LIBVIRT_PATHS = ["/machine/unattached/device[0]", "/machine/peripheral/vcpu1", "/machine/peripheral/vcpu3"]


def test_cpus_device_added_while_waiting_take_the_saved_state_and_are_not_plugged_twice(
    libvirt_saved: Saved, tmp_path: Path, closing: list[Machine]
) -> None:
    plugged: dict[int, Any] = {}

    def as_libvirt(target: Machine) -> None:
        _device_add(target, "vcpu1", 0, 1)
        _device_add(target, "vcpu3", 1, 1)
        plugged.update(target.cpu_slots.occupied)

    status, info, _, target = _restore(_write(tmp_path / "s.state", *libvirt_saved), prepare=as_libvirt)
    closing.append(target)
    assert status == "completed", info
    assert [cpu.canonical_path() for cpu in target.cpu_slots.cpus] == LIBVIRT_PATHS
    assert all(target.cpu_slots.occupied[index] is cpu for index, cpu in plugged.items()), "the same CPU objects"
    assert sorted(target.cpu_slots.occupied) == [0, 1, 3] and sorted(target._board.vcpus.runners) == [0, 1, 3]
    assert bytes(target.ram.view()[0x1000:0x1009]) == b"saved RAM"
    saved_cpuhp = libvirt_saved.meta["cpuhp"]
    assert target._board.cpuhp is not None and target._board.cpuhp.save_state() == saved_cpuhp


SAME_SETUP = "Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices"


@pytest.mark.parametrize(
    ("plugs", "error"),
    [
        ([("vcpu1", 0, 1)], f"Unknown savevm section or instance 'cpu_common' 3. {SAME_SETUP}"),
        (
            [("vcpu1", 0, 1), ("vcpu3", 1, 1), ("vcpu2", 1, 0)],
            f"CPU 2 plugged here as '/machine/peripheral/vcpu2' is not in the saved machine. {SAME_SETUP}",
        ),
        (
            [("vcpu1", 0, 1), ("other", 1, 1)],
            "CPU 3 plugged here as '/machine/peripheral/other' is '/machine/peripheral/vcpu3' in the saved machine",
        ),
        (
            [("vcpu3", 0, 1), ("vcpu1", 1, 1)],
            "CPU 1 plugged here as '/machine/peripheral/vcpu3' is '/machine/peripheral/vcpu1' in the saved machine",
        ),
        (
            [("vcpu1", 0, 1, "aes=off"), ("vcpu3", 1, 1)],
            "CPU 1 plugged here as '/machine/peripheral/vcpu1' differs in its type or features from the saved CPU",
        ),
    ],
    ids=["one missing", "one extra", "another id", "ids swapped", "other features"],
)
def test_cpus_device_added_while_waiting_that_differ_from_the_saved_ones_are_refused(
    libvirt_saved: Saved, tmp_path: Path, closing: list[Machine], plugs: list[tuple[Any, ...]], error: str
) -> None:
    def as_libvirt(target: Machine) -> None:
        for qdev_id, socket_id, core_id, *features in plugs:
            _device_add(target, qdev_id, socket_id, core_id, *features)

    status, info, _, target = _restore(_write(tmp_path / "s.state", *libvirt_saved), prepare=as_libvirt)
    closing.append(target)
    assert status == "failed" and info["error-desc"].startswith(error), info
    assert target.runstate.value == "inmigrate"
    assert len(target.cpu_slots.cpus) == 1 + len(plugs), "the target's CPUs stay as they were plugged"


#: The -cpu libvirt 9.0 gives a restored Haswell domain: the features it found off or on, spelled out.
LIBVIRT_CPU = (
    "Haswell,fma=off,pcid=off,x2apic=off,tsc-deadline=off,avx=off,f16c=off,rdrand=on,hypervisor=on,arat=on,"
    "hle=off,avx2=off,invpcid=off,rtm=off,xsaveopt=on,abm=on"
)


@pytest.mark.parametrize(("cpu", "loads"), [(LIBVIRT_CPU, True), ("Haswell,aes=off", False), ("Broadwell", False)])
def test_a_cpu_option_is_compared_by_what_the_guest_sees(good: Saved, tmp_path: Path, cpu: str, loads: bool) -> None:
    async def run() -> dict[str, Any]:
        target = _machine("defer", cpu)
        try:
            migrator = Migrator(target, "defer")
            await asyncio.wait_for(migrator.accept(_write(tmp_path / "s.state", *good)), 10)
            return migrator.info()
        finally:
            target.close()

    info = asyncio.run(run())
    if loads:
        assert info["status"] == "completed", info
    else:
        assert info["status"] == "failed" and "differs from this one in 'cpu'" in info["error-desc"], info


# -- mutated descriptions --------------------------------------------------------------------------------


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index path into a JSON value (the value itself first)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


#: Values put in place of a field; DEEP stands for a list nested 5000 deep (see _write).
REPLACEMENTS: list[Any] = [None, "x", -1, 0, 1, 2**64, 2**70, 1.5, True, [], {}, [0], {"a": 1}, DEEP]


def _mutate(meta: dict[str, Any], path: tuple[Any, ...], kind: str, replacement: Any) -> dict[str, Any]:
    mutated = copy.deepcopy(meta)
    if not path:
        return {"wrapped": mutated} if kind == "delete" else mutated
    parent = mutated
    for step in path[:-1]:
        parent = parent[step]
    key = path[-1]
    old = parent[key]
    if kind == "delete":
        del parent[key]
    elif kind == "replace":
        parent[key] = replacement
    elif kind == "bump" and isinstance(old, int) and not isinstance(old, bool):
        parent[key] = old + 1
    elif kind == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(old))
    elif kind == "negate" and isinstance(old, bool):
        parent[key] = not old
    else:
        parent[key] = replacement
    return mutated


def _special(meta: dict[str, Any], kind: str) -> dict[str, Any]:
    """Mutations that need to know the description's shape."""
    mutated = copy.deepcopy(meta)
    cpus = mutated["cpus"]
    if kind == "no boot CPU":
        del cpus[0]
    elif kind == "duplicate CPU":
        cpus.append(copy.deepcopy(cpus[1]))
    elif kind == "unknown slot":
        cpus[1]["index"] = 99
    elif kind == "wrong path":
        cpus[1]["qom_path"] = "/machine/peripheral-anon/device[7]"
    elif kind == "taken path":
        cpus[1]["qom_path"] = "/machine/unattached/device[1]"
    elif kind == "outside QOM":
        cpus[1]["qom_path"] = "/../../etc"
    elif kind == "moved slot":
        cpus[1]["index"], cpus[2]["index"] = 2, 1
    elif kind == "boot CPU elsewhere":
        cpus[0]["qom_path"] = "/machine/unattached/device[9]"
    elif kind == "another machine":
        mutated["machine"]["smp"][-1] = 8
    return mutated


SPECIALS = [
    "no boot CPU",
    "duplicate CPU",
    "unknown slot",
    "wrong path",
    "taken path",
    "outside QOM",
    "moved slot",
    "boot CPU elsewhere",
    "another machine",
]


MUTATIONS = st.one_of(
    st.tuples(st.just("special"), st.sampled_from(SPECIALS), st.just(()), st.none()),
    st.tuples(
        st.just("field"),
        st.sampled_from(["delete", "replace", "bump", "duplicate", "negate"]),
        st.integers(min_value=0),
        st.sampled_from(REPLACEMENTS),
    ),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=MUTATIONS)
def test_mutated_descriptions_load_whole_or_not_at_all(
    good: Saved, tmp_path: Path, mutation: tuple[str, str, Any, Any]
) -> None:
    meta, ram = good
    family, kind, where, value = mutation
    if family == "special":
        mutated = _special(meta, kind)
    else:
        paths = list(_paths(meta))
        mutated = _mutate(meta, paths[where % len(paths)], kind, value)
    good_uri = _write(tmp_path / "good.state", meta, ram)
    status, info, logs, target = _restore(_write(tmp_path / "mutated.state", mutated, ram), good_uri)
    try:
        assert status in ("completed", "failed"), info
        if status == "failed":
            assert info["error-desc"], info
            assert any(entry["event"].startswith("migration.incoming_failed") for entry in logs), logs
        else:
            assert target.runstate.value in ("paused", "running")
            assert all(cpu.realized for cpu in target.cpu_slots.cpus)
    finally:
        target.close()


def test_a_deeply_nested_description_is_refused_by_the_reader(
    good: Saved, tmp_path: Path, closing: list[Machine]
) -> None:
    meta, ram = good
    path = tmp_path / "deep.state"
    _write(path, {**meta, "cpus": DEEP}, ram)
    status, info, _, target = _restore(f"file:{path}")
    closing.append(target)
    assert status == "failed" and "nested too deeply" in info["error-desc"], info


def _with_description(data: bytes, description: bytes) -> bytes:
    """A state with another description, re-checksummed."""
    meta_len = struct.unpack_from("<Q", data, len(MAGIC) + 4)[0]
    rest = data[len(MAGIC) + 12 + meta_len : len(data) - 32 - len(TRAILER)]
    body = MAGIC + struct.pack("<IQ", 1, len(description)) + description + rest
    return body + hashlib.sha256(body).digest() + TRAILER


def test_an_anonymous_cpu_saved_before_the_isa_devices_were_in_qom_restores_after_them(tmp_path: Path) -> None:
    """qmpd once numbered anonymous CPUs from device[0] even after an anonymous -device pvpanic; QEMU (and
    qmpd now) put the pvpanic at device[0] and the CPU at device[1].  Such a state still loads, renumbered."""
    config = MachineConfig(cpu="Haswell", smp=SMP, ram_size=RAM, start_paused=True, devices=(DeviceConfig("pvpanic"),))
    options = (("driver", "Haswell-x86_64-cpu"), ("socket-id", "1"), ("core-id", "1"), ("thread-id", "0"))

    async def run() -> tuple[dict[str, Any], bytes]:
        source = Machine(config, EventBus(SCHEMA))
        try:
            qdev_device_add(source, DeviceOptions(None, options))
            assert [cpu.canonical_path() for cpu in source.cpu_slots.cpus][-1] == "/machine/peripheral-anon/device[1]"
            await source.stop_for_migration()
            meta = await capture(source)
            return json.loads(json.dumps(meta)), bytes(source.ram.view())
        finally:
            source.close()

    meta, ram = asyncio.run(run())
    assert meta["anon_count"] == 2
    old = copy.deepcopy(meta)  # what the qmpd before the change wrote: the CPU at device[0], the counter at 1
    old["anon_count"] = 1
    for cpu in old["cpus"]:
        if cpu["qom_path"] == "/machine/peripheral-anon/device[1]":
            cpu["qom_path"] = "/machine/peripheral-anon/device[0]"
    for name, saved in (("new", meta), ("old", old)):

        async def restore(saved: dict[str, Any] = saved, name: str = name) -> tuple[str, list[str], int]:
            target = Machine(config._replace(incoming="defer"), EventBus(SCHEMA))
            try:
                migrator = Migrator(target, "defer")
                await asyncio.wait_for(migrator.accept(_write(tmp_path / f"{name}.state", saved, ram)), 10)
                paths = [cpu.canonical_path() for cpu in target.cpu_slots.cpus]
                return migrator.info()["status"], paths, target.qom.anon_count
            finally:
                target.close()

        status, paths, anon_count = asyncio.run(restore())
        assert status == "completed", name
        assert paths[-1] == "/machine/peripheral-anon/device[1]", name
        assert anon_count == 2, f"{name}: the next anonymous device_add takes device[2]"
