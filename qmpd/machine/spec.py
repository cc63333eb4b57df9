"""The machine the command line describes, checked before anything is created.

QEMU rejects a bad ``-machine``/``-cpu``/``-smp`` combination before it opens
any monitor; so does qmpd: ``build_spec`` runs at start-up, before the
sockets exist, and either returns a spec the machine can be built from
without failing, or raises SpecError with QEMU's text.
"""

from __future__ import annotations

from typing import NamedTuple

from qmpd.config import MachineConfig
from qmpd.cpu.cpu_option import CPUOption, CPUOptionError, parse_cpu_option
from qmpd.machine.topology import SMP, Topology, TopologyError, parse_smp
from qmpd.machine.types import MachineType, default_machine_type, find_machine_type


class SpecError(ValueError):
    """The machine cannot be built; the text is QEMU's."""


class MachineSpec(NamedTuple):
    """A validated machine description."""

    machine_type: MachineType
    smp: SMP
    topology: Topology
    #: The -cpu option (None: machine none without -cpu, which has no CPU).
    cpu: CPUOption | None
    warnings: tuple[str, ...]

    @property
    def cpu_type(self) -> str | None:
        """QOM type of the machine's CPUs (QEMU's ms->cpu_type)."""
        return self.cpu.model.typename if self.cpu else None


def build_spec(config: MachineConfig) -> MachineSpec:
    """Validate the machine part of the command line."""
    machine_type = find_machine_type(config.machine_type) or default_machine_type()
    warnings: list[str] = []
    try:
        smp, smp_warnings = parse_smp(config.smp, machine_type.name, machine_type.max_cpus)
    except TopologyError as exc:
        raise SpecError(str(exc)) from None
    warnings += smp_warnings
    cpu_text = config.cpu
    if cpu_text is None and machine_type.name != "none":
        cpu_text = "qemu64"
    cpu: CPUOption | None = None
    if cpu_text is not None:
        try:
            cpu = parse_cpu_option(cpu_text)
        except CPUOptionError as exc:
            raise SpecError(str(exc)) from None
        warnings += cpu.warnings
    return MachineSpec(machine_type, smp, Topology(smp), cpu, tuple(warnings))
