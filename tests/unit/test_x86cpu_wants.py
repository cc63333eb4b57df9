"""X86CPU.wants answers what membership in requested_features() answers, for every feature and setting."""

from __future__ import annotations

import random

import pytest

from qmpd.cpu.models import MSR_FEATURES, features
from qmpd.cpu.x86cpu import X86CPU
from qmpd.machine.qom_tree import type_registry


@pytest.mark.parametrize("model", ["Haswell", "qemu64", "max", "base", "EPYC"])
def test_wants_is_membership_of_the_requested_set(model: str) -> None:
    registry = type_registry()
    names = sorted(features()) + sorted(MSR_FEATURES)
    chooser = random.Random(model)
    for _ in range(20):
        cpu = X86CPU(registry, f"{model}-x86_64-cpu")
        cpu.switched = {name: chooser.random() < 0.5 for name in chooser.sample(names, 30)}
        cpu.plus = set(chooser.sample(names, 10))
        cpu.minus = set(chooser.sample(names, 10))
        requested = cpu.requested_features()
        assert [name for name in names if cpu.wants(name)] == [name for name in names if name in requested]
        sample = chooser.sample(names, 40)
        assert [cpu.get_property(name) for name in sample] == [name in requested for name in sample]
        if model != "host":
            cpu.realize()  # then a feature reads as what the guest gets: requested, minus the filtered
            guest = cpu.guest_features()
            assert cpu.filtered and [cpu.get_property(name) for name in names] == [name in guest for name in names]
