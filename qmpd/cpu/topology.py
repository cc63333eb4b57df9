"""CPU topology: ``-smp`` as QEMU 7.2 parses and defaults it, APIC IDs, CPU slots.

``-smp`` (hw/core/machine-smp.c): zero values are deprecated, missing values
are computed preferring cores over sockets (since 6.2), and the product of
the hierarchy must equal maxcpus.  APIC IDs pack socket/die/core/thread into
power-of-two bit fields (include/hw/i386/topology.h), so IDs are not always
contiguous.  A slot is one possible CPU: index, APIC ID and topology ids.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

from typing import NamedTuple

from qmpd.qemuopts import parse as parse_opts


class TopologyError(ValueError):
    """An -smp value QEMU rejects; the text is QEMU's."""


class SMP(NamedTuple):
    """The machine's CPU topology."""

    cpus: int
    sockets: int
    dies: int
    clusters: int
    cores: int
    threads: int
    max_cpus: int


class Slot:
    """One possible CPU."""

    __slots__ = ("apic_id", "core_id", "cpu_index", "die_id", "socket_id", "thread_id")

    def __init__(self, cpu_index: int, apic_id: int, socket_id: int, die_id: int, core_id: int, thread_id: int) -> None:
        self.cpu_index = cpu_index
        self.apic_id = apic_id
        self.socket_id = socket_id
        self.die_id = die_id
        self.core_id = core_id
        self.thread_id = thread_id


_KEYS = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")


def _hierarchy(smp: SMP) -> str:
    return f"sockets ({smp.sockets}) * dies ({smp.dies}) * cores ({smp.cores}) * threads ({smp.threads})"


def parse_smp(
    text: str | None, machine_name: str, max_cpus: int, *, dies_supported: bool = True
) -> tuple[SMP, list[str]]:
    """Parse ``-smp``; return the topology and QEMU's warnings, or raise TopologyError."""
    given: dict[str, int] = {}
    warnings: list[str] = []
    for key, value in parse_opts(text or "", implied="cpus"):
        if key not in _KEYS:
            raise TopologyError(f"Parameter 'smp.{key}' is unexpected")
        try:
            number = int(value, 0)
        except ValueError:
            raise TopologyError(f"Parameter 'smp.{key}' expects integer") from None
        if number < 0:
            raise TopologyError(f"Parameter 'smp.{key}' expects integer")
        given[key] = number
    if any(value == 0 for value in given.values()):
        warnings.append(
            "Deprecated CPU topology (considered invalid): CPU topology parameters must be greater than zero"
        )
    cpus = given.get("cpus", 0)
    sockets = given.get("sockets", 0)
    dies = given.get("dies", 0)
    clusters = given.get("clusters", 0)
    cores = given.get("cores", 0)
    threads = given.get("threads", 0)
    maxcpus = given.get("maxcpus", 0)
    if not dies_supported and dies > 1:
        raise TopologyError("dies not supported by this machine's CPU topology")
    if clusters > 1:
        raise TopologyError("clusters not supported by this machine's CPU topology")
    dies = dies or 1
    clusters = clusters or 1
    if cpus == 0 and maxcpus == 0:
        sockets = sockets or 1
        cores = cores or 1
        threads = threads or 1
    else:
        maxcpus = maxcpus or cpus
        if cores == 0:
            sockets = sockets or 1
            threads = threads or 1
            cores = maxcpus // (sockets * dies * clusters * threads)
        elif sockets == 0:
            threads = threads or 1
            sockets = maxcpus // (dies * clusters * cores * threads)
        if threads == 0:
            threads = maxcpus // (sockets * dies * clusters * cores)
    maxcpus = maxcpus or sockets * dies * clusters * cores * threads
    cpus = cpus or maxcpus
    smp = SMP(cpus, sockets, dies, clusters, cores, threads, maxcpus)
    if sockets * dies * clusters * cores * threads != maxcpus:
        raise TopologyError(
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"{_hierarchy(smp)} != maxcpus ({maxcpus})"
        )
    if maxcpus < cpus:
        raise TopologyError(
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
            f"{_hierarchy(smp)} == maxcpus ({maxcpus}) < smp_cpus ({cpus})"
        )
    if cpus < 1:
        raise TopologyError(f"Invalid SMP CPUs {cpus}. The min CPUs supported by machine '{machine_name}' is 1")
    if maxcpus > max_cpus:
        raise TopologyError(
            f"Invalid SMP CPUs {maxcpus}. The max CPUs supported by machine '{machine_name}' is {max_cpus}"
        )
    return smp, warnings


def bit_width(count: int) -> int:
    """Bits needed to number 0..count-1 (QEMU's apicid_bitwidth_for_count)."""
    return (count - 1).bit_length() if count > 1 else 0


class Topology:
    """APIC-ID arithmetic and the slot list for one SMP configuration."""

    def __init__(self, smp: SMP) -> None:
        self.smp = smp
        self.smt_width = bit_width(smp.threads)
        self.core_width = bit_width(smp.cores)
        self.die_width = bit_width(smp.dies)
        self.core_offset = self.smt_width
        self.die_offset = self.core_offset + self.core_width
        self.pkg_offset = self.die_offset + self.die_width
        self.slots = [self.slot(index) for index in range(smp.max_cpus)]
        self._by_apic = {slot.apic_id: slot for slot in self.slots}

    def apic_id(self, socket_id: int, die_id: int, core_id: int, thread_id: int) -> int:
        """Pack topology ids into an APIC ID."""
        return socket_id << self.pkg_offset | die_id << self.die_offset | core_id << self.core_offset | thread_id

    def slot(self, index: int) -> Slot:
        """Topology ids and APIC ID of CPU index ``index`` (x86_topo_ids_from_idx)."""
        smp = self.smp
        socket_id = index // (smp.dies * smp.cores * smp.threads)
        die_id = index // (smp.cores * smp.threads) % smp.dies
        core_id = index // smp.threads % smp.cores
        thread_id = index % smp.threads
        return Slot(index, self.apic_id(socket_id, die_id, core_id, thread_id), socket_id, die_id, core_id, thread_id)

    def ids_from_apic_id(self, apic_id: int) -> tuple[int, int, int, int]:
        """(socket, die, core, thread) encoded in an APIC ID (x86_topo_ids_from_apicid)."""
        thread_id = apic_id & ((1 << self.smt_width) - 1)
        core_id = (apic_id >> self.core_offset) & ((1 << self.core_width) - 1)
        die_id = (apic_id >> self.die_offset) & ((1 << self.die_width) - 1)
        socket_id = apic_id >> self.pkg_offset
        return socket_id, die_id, core_id, thread_id

    def slot_by_apic_id(self, apic_id: int) -> Slot | None:
        """The slot with this APIC ID, if any."""
        return self._by_apic.get(apic_id)

    @property
    def apic_id_limit(self) -> int:
        """Largest APIC ID + 1."""
        return self.slots[-1].apic_id + 1 if self.slots else 0
