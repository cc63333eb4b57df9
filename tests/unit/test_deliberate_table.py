"""README's deliberate-differences table parses, and its sweep keys excuse exactly what they name."""

from __future__ import annotations

from tests.differential.deliberate import KINDS, deliberate, differences


def test_every_row_has_a_reason_and_known_key_kinds() -> None:
    rows = differences()
    assert len(rows) >= 10
    for row in rows:
        assert row.why
        assert all(kind in KINDS for kind, _ in row.keys)


def test_keys_match_by_pattern_and_kind() -> None:
    kvm = deliberate("command", "query-kvm")
    assert kvm is not None and kvm.what == "KVM"
    assert deliberate("path", "/machine/topology/socket[0]") is not None
    assert deliberate("event", "query-kvm") is None
    assert deliberate("command", "query-status") is None


def test_brackets_in_patterns_are_literal() -> None:
    """QOM paths are full of brackets: a pattern's ``[`` and ``]`` stand for themselves, only ``*`` and ``?`` match."""
    assert deliberate("type", "cpu-topology-thread") is not None
    assert deliberate("type", "Haswell-v2-x86_64-cpu") is not None
    assert deliberate("type", "host-x86_64-cpu") is None
    assert deliberate("path", "/machine/topology/socket[1]/die[0] (cpu-topology-die)") is not None


def test_brackets_in_reply_keys_are_literal() -> None:
    slots = deliberate("reply", "query-machines[pc-q35-7.2].cpu-max")
    assert slots is not None and slots.what == "CPU slots"
    assert deliberate("reply", "query-machines.cpu-max") is None
    assert deliberate("reply", "query-commands[cpu-add]") is not None
    assert deliberate("reply", "query-commands[c]") is None
