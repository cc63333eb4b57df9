"""-smp parsing, APIC IDs and slots (QEMU 7.2 rules, no sockets)."""

from __future__ import annotations

import pytest

from qmpd.cpu.topology import SMP, Topology, TopologyError, bit_width, parse_smp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, SMP(1, 1, 1, 1, 1, 1, 1)),
        ("4", SMP(4, 1, 1, 1, 4, 1, 4)),
        ("1,maxcpus=2", SMP(1, 1, 1, 1, 2, 1, 2)),
        ("1,sockets=2,cores=2,threads=2,maxcpus=8", SMP(1, 2, 1, 1, 2, 2, 8)),
        ("sockets=2,cores=3", SMP(6, 2, 1, 1, 3, 1, 6)),
        ("8,sockets=2", SMP(8, 2, 1, 1, 4, 1, 8)),
        ("8,cores=2,threads=2", SMP(8, 2, 1, 1, 2, 2, 8)),
        ("1,sockets=1,dies=2,cores=2,threads=2,maxcpus=8", SMP(1, 1, 2, 1, 2, 2, 8)),
    ],
)
def test_smp_defaults_prefer_cores(text: str | None, expected: SMP) -> None:
    assert parse_smp(text, "pc-i440fx-7.2", 1024)[0] == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1,sockets=2,cores=2,threads=2,maxcpus=7",
         "Invalid CPU topology: product of the hierarchy must match maxcpus: "
         "sockets (2) * dies (1) * cores (2) * threads (2) != maxcpus (7)"),
        ("8,maxcpus=4", "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
         "sockets (1) * dies (1) * cores (4) * threads (1) == maxcpus (4) < smp_cpus (8)"),
        ("foo", "Parameter 'smp.cpus' expects integer"),
        ("1,foo=2", "Parameter 'smp.foo' is unexpected"),
        ("1,clusters=2", "clusters not supported by this machine's CPU topology"),
        ("2048", "Invalid SMP CPUs 2048. The max CPUs supported by machine 'pc-i440fx-7.2' is 1024"),
    ],
)  # fmt: skip
def test_smp_errors(text: str, error: str) -> None:
    with pytest.raises(TopologyError) as raised:
        parse_smp(text, "pc-i440fx-7.2", 1024)
    assert str(raised.value) == error


def test_zero_is_deprecated_but_accepted() -> None:
    smp, warnings = parse_smp("0", "pc-i440fx-7.2", 1024)
    assert smp.cpus == 1 and warnings == [
        "Deprecated CPU topology (considered invalid): CPU topology parameters must be greater than zero"
    ]


@pytest.mark.parametrize(
    ("text", "apic_ids"),
    [
        ("1,sockets=2,cores=3,threads=1,maxcpus=6", [0, 1, 2, 4, 5, 6]),
        ("1,sockets=3,cores=1,threads=3,maxcpus=9", [0, 1, 2, 4, 5, 6, 8, 9, 10]),
        ("1,maxcpus=4", [0, 1, 2, 3]),
        ("1,sockets=2,dies=2,cores=1,threads=1,maxcpus=4", [0, 1, 2, 3]),
    ],
)
def test_apic_ids_pack_power_of_two_fields(text: str, apic_ids: list[int]) -> None:
    topology = Topology(parse_smp(text, "pc", 1024)[0])
    assert [slot.apic_id for slot in topology.slots] == apic_ids
    for slot in topology.slots:
        assert topology.ids_from_apic_id(slot.apic_id) == (slot.socket_id, slot.die_id, slot.core_id, slot.thread_id)
        assert topology.slot_by_apic_id(slot.apic_id) == slot


def test_1024_slots() -> None:
    topology = Topology(parse_smp("1,sockets=4,cores=128,threads=2,maxcpus=1024", "pc", 1024)[0])
    assert len(topology.slots) == 1024
    assert len({slot.apic_id for slot in topology.slots}) == 1024
    assert topology.apic_id_limit == 1024


def test_bit_width() -> None:
    assert [bit_width(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [0, 1, 2, 2, 3, 3, 4]
