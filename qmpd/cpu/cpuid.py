"""The CPUID a vCPU's guest sees: the engine model's values, changed by the CPU's properties.

Unicorn reports its model's CPUID with APIC ID 0 everywhere; qmpd serves
CPUID itself from a per-vCPU table (through a hook that runs before the
built-in instruction).  The table starts from the engine model's measured
leaves and applies, as QEMU's cpu_x86_cpuid does: level/xlevel, vendor,
family/model/stepping, model-id, every feature flag the CPU has (set) or has
not (clear), the APIC ID in leaf 1 EBX[31:24], and the x2APIC topology
leaf 0xB.
"""

from __future__ import annotations

from qmpd.cpu.models import CPUModel, c_string, features
from qmpd.cpu.topology import Topology

Registers = tuple[int, int, int, int]
_REGISTER = {"EAX": 0, "EBX": 1, "ECX": 2, "EDX": 3}
#: Leaves whose result depends on ECX.
SUBLEAF_LEAVES = frozenset({4, 7, 0xB, 0xD, 0x12, 0x14, 0x17, 0x18, 0x1F, 0x8000001D})


def _vendor_registers(vendor: str) -> tuple[int, int, int]:
    """The vendor string as CPUID returns it: EBX, EDX, ECX (in that order of the text)."""
    raw = c_string(vendor)[:12].ljust(12, b"\0")
    return (int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[8:12], "little"))


def _signature(family: int, model: int, stepping: int) -> int:
    value = stepping & 0xF | (model & 0xF) << 4 | (model >> 4 & 0xF) << 16
    if family > 0xF:
        return value | 0xF << 8 | (family - 0xF & 0xFF) << 20
    return value | (family & 0xF) << 8


class CPUIDTable:
    """Immutable answers for one vCPU."""

    def __init__(self, entries: dict[tuple[int, int], Registers], level: int, xlevel: int, xlevel2: int) -> None:
        self._entries = entries
        self.level = level
        self.xlevel = xlevel
        self.xlevel2 = xlevel2

    def lookup(self, leaf: int, subleaf: int) -> Registers:
        """What CPUID returns for EAX=leaf, ECX=subleaf (out-of-range leaves as QEMU clamps them)."""
        leaf &= 0xFFFFFFFF
        if leaf >= 0xC0000000:
            if leaf > self.xlevel2:
                leaf = self.xlevel2
        elif leaf >= 0x80000000:
            if leaf > self.xlevel:
                leaf = self.level
        elif leaf > self.level:
            leaf = self.level
        key = (leaf, subleaf & 0xFFFFFFFF if leaf in SUBLEAF_LEAVES else 0)
        return self._entries.get(key, (0, 0, 0, 0))


def build_cpuid(
    engine: CPUModel,
    identity: dict[str, object],
    guest_features: set[str],
    levels: dict[str, int],
    topology: Topology,
    apic_id: int,
) -> CPUIDTable:
    """The table for one vCPU (see the module docstring)."""
    entries: dict[tuple[int, int], list[int]] = {}
    for key, values in engine.cpuid.items():
        leaf_text, _, subleaf_text = key.partition(".")
        entries[(int(leaf_text, 16), int(subleaf_text))] = list(values)

    def entry(leaf: int, subleaf: int = 0) -> list[int]:
        return entries.setdefault((leaf, subleaf), [0, 0, 0, 0])

    level, xlevel, xlevel2 = levels["level"], levels["xlevel"], levels["xlevel2"]
    vendor = str(identity["vendor"])
    ebx, edx, ecx = _vendor_registers(vendor)
    entries[(0, 0)] = [level, ebx, ecx, edx]
    leaf1 = entry(1)
    leaf1[0] = _signature(int(str(identity["family"])), int(str(identity["model"])), int(str(identity["stepping"])))
    per_package = topology.smp.dies * topology.smp.cores * topology.smp.threads
    leaf1[1] = (
        (leaf1[1] & 0x0000FFFF) | (apic_id & 0xFF) << 24 | (min(per_package, 255) if per_package > 1 else 0) << 16
    )
    for name, feature in features().items():
        values = entry(feature.leaf, feature.subleaf or 0)
        mask = 1 << feature.bit
        if name in guest_features:
            values[_REGISTER[feature.register]] |= mask
        else:
            values[_REGISTER[feature.register]] &= ~mask
    if per_package > 1:
        leaf1[3] |= 1 << 28  # HTT: more than one logical processor per package
    entry(7)[0] = levels.get("level-func7", entry(7)[0])
    entry(0x80000000)[:] = [xlevel, ebx, ecx, edx]  # QEMU repeats the vendor here
    brand = c_string(str(identity["model-id"]))[:48].ljust(48, b"\0")
    for index, leaf in enumerate((0x80000002, 0x80000003, 0x80000004)):
        chunk = brand[index * 16 : index * 16 + 16]
        entries[(leaf, 0)] = [int.from_bytes(chunk[i : i + 4], "little") for i in range(0, 16, 4)]
    smt_shift = topology.core_offset
    pkg_shift = topology.pkg_offset
    threads = topology.smp.threads
    entries[(0xB, 0)] = [smt_shift, threads, 1 << 8 | 0, apic_id]
    entries[(0xB, 1)] = [pkg_shift, per_package, 2 << 8 | 1, apic_id]
    for subleaf in range(2, 4):
        entries[(0xB, subleaf)] = [0, 0, subleaf, apic_id]
    for subleaf in range(8):
        cache = entries.get((4, subleaf))
        if cache is not None and cache[0] & 0x1F:
            cache[0] = (cache[0] & 0x03FFFFFF) | (max(topology.smp.cores * topology.smp.dies, 1) - 1 & 0x3F) << 26
    frozen = {
        key: (v[0] & 0xFFFFFFFF, v[1] & 0xFFFFFFFF, v[2] & 0xFFFFFFFF, v[3] & 0xFFFFFFFF) for key, v in entries.items()
    }
    return CPUIDTable(frozen, level, xlevel, xlevel2)
