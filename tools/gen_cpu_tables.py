#!/usr/bin/env python3
"""Regenerate qmpd/cpu/data/*.json by measuring QEMU 7.2 and Unicorn 2.1.4.

qmpd's x86 CPU objects must look like QEMU's (property names, types,
defaults, which ones may change after realize, which CPUID bit a feature
flag controls) while behaving like the engine that really runs them (the
CPUID each Unicorn model reports).  Neither is typed in by hand: this script
measures both and writes the tables.

  x86_cpu_properties.json  from qemu-system-x86_64: qom-list of a Haswell CPU
      (order, types), device-list-properties (defaults), a qom-set of every
      property on a realized CPU (what may change after realize), and one
      hot-plugged `base` CPU per feature flag (which CPUID bit it sets).
  x86_cpu_models.json      from Unicorn: the CPUID leaves of every model; from
      QEMU: each model's nominal feature set (query-cpu-model-expansion full),
      so that features Unicorn lacks become unavailable-features.

Usage: tools/gen_cpu_tables.py   (needs qemu-system-x86_64 and unicorn; ~2 min)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import unicorn
import unicorn.x86_const as x86

from qmpd.cpu.models import MSR_FEATURES

OUT = Path(__file__).resolve().parents[1] / "qmpd" / "cpu" / "data"

#: Unicorn's models in QEMU's names (unicorn-facts.md Q1, same order as the UC_CPU_X86_* constants).
UNICORN_MODELS = {
    "qemu64": "QEMU64", "phenom": "PHENOM", "core2duo": "CORE2DUO", "kvm64": "KVM64", "qemu32": "QEMU32",
    "kvm32": "KVM32", "coreduo": "COREDUO", "486": "486", "pentium": "PENTIUM", "pentium2": "PENTIUM2",
    "pentium3": "PENTIUM3", "athlon": "ATHLON", "n270": "N270", "Conroe": "CONROE", "Penryn": "PENRYN",
    "Nehalem": "NEHALEM", "Westmere": "WESTMERE", "SandyBridge": "SANDYBRIDGE", "IvyBridge": "IVYBRIDGE",
    "Haswell": "HASWELL", "Broadwell": "BROADWELL", "Skylake-Client": "SKYLAKE_CLIENT",
    "Skylake-Server": "SKYLAKE_SERVER", "Cascadelake-Server": "CASCADELAKE_SERVER", "Cooperlake": "COOPERLAKE",
    "Icelake-Client": "ICELAKE_CLIENT", "Icelake-Server": "ICELAKE_SERVER", "Denverton": "DENVERTON",
    "Snowridge": "SNOWRIDGE", "KnightsMill": "KNIGHTSMILL", "Opteron_G1": "OPTERON_G1", "Opteron_G2": "OPTERON_G2",
    "Opteron_G3": "OPTERON_G3", "Opteron_G4": "OPTERON_G4", "Opteron_G5": "OPTERON_G5", "EPYC": "EPYC",
    "Dhyana": "DHYANA", "EPYC-Rome": "EPYC_ROME",
}  # fmt: skip
#: Names QEMU keeps only as aliases of a canonical feature name.
EXTRA_ALIASES = {"sse3": "pni", "pclmuldq": "pclmulqdq", "xd": "nx", "ffxsr": "fxsr-opt", "i64": "lm"}
SETTABLE_AFTER_REALIZE = {
    "realized",
    "start-powered-off",
    "family",
    "model",
    "stepping",
    "vendor",
    "model-id",
    "tsc-frequency",
}


class QEMU:
    """One qemu-system-x86_64 with a QMP socket, for measurements."""

    def __init__(self, *argv: str) -> None:
        self.dir = tempfile.mkdtemp()
        path = os.path.join(self.dir, "qmp.sock")
        binary = shutil.which("qemu-system-x86_64")
        assert binary, "qemu-system-x86_64 is needed"
        self.proc = subprocess.Popen(
            [binary, "-nodefaults", "-nographic", "-S", *argv, "-qmp", f"unix:{path},server=on,wait=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not os.path.exists(path):
            time.sleep(0.01)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **arguments: Any) -> dict[str, Any]:
        self.sock.sendall(json.dumps({"execute": name, "arguments": arguments}).encode())
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError(name)
            message: dict[str, Any] = json.loads(line)
            if "event" not in message:
                return message

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _words(cpu: QEMU, path: str) -> dict[tuple[int, int | None, str], int]:
    bits: dict[tuple[int, int | None, str], int] = {}
    for prop in ("feature-words", "filtered-features"):
        for word in cpu.cmd("qom-get", path=path, property=prop)["return"]:
            key = (word["cpuid-input-eax"], word.get("cpuid-input-ecx"), word["cpuid-register"])
            bits[key] = bits.get(key, 0) | word["features"]
    return bits


def measure_properties() -> dict[str, Any]:
    qemu = QEMU("-machine", "pc", "-cpu", "Haswell")
    path = "/machine/unattached/device[0]"
    try:
        listing = qemu.cmd("qom-list", path=path)["return"]
        listed = qemu.cmd("device-list-properties", typename="Haswell-x86_64-cpu")["return"]
        # The abstract type lists class properties only: the others are added by each instance (aliases...).
        of_class = {p["name"] for p in qemu.cmd("qom-list-properties", typename="x86_64-cpu")["return"]}
        defaults = {p["name"]: p.get("default-value") for p in listed}
        descriptions = {p["name"]: p["description"] for p in listed if "description" in p}
        words = qemu.cmd("qom-get", path=path, property="feature-words")["return"]
        properties = []
        for prop in listing:
            if prop["type"].startswith("child<"):
                continue
            entry: dict[str, Any] = {"name": prop["name"], "type": prop["type"]}
            if prop["name"] not in of_class and prop["name"] not in ("memory", "start-powered-off", "legacy-memory"):
                entry["instance"] = True
            if prop["name"] in descriptions:
                entry["description"] = descriptions[prop["name"]]
            if prop["name"] in defaults:
                entry["static"] = True
                if defaults[prop["name"]] is not None:
                    entry["default"] = defaults[prop["name"]]
            if not prop["type"].startswith("link<"):
                got = qemu.cmd("qom-get", path=path, property=prop["name"])
                if "return" in got:
                    result = qemu.cmd("qom-set", path=path, property=prop["name"], value=got["return"])
                    if "error" in result:
                        desc = result["error"]["desc"]
                        entry["after_realize"] = "readonly" if "is not writable" in desc else "refused"
                    else:
                        entry["after_realize"] = "allowed"
                else:
                    entry["get_error"] = got["error"]["desc"].replace("Haswell-x86_64-cpu", "{type}")
            properties.append(entry)
        word_order = [[w["cpuid-input-eax"], w.get("cpuid-input-ecx"), w["cpuid-register"]] for w in words]
        static = qemu.cmd("query-cpu-model-expansion", type="static", model={"name": "Haswell"})["return"]["model"][
            "props"
        ]
        full = qemu.cmd("query-cpu-model-expansion", type="full", model={"name": "Haswell"})["return"]["model"]["props"]
    finally:
        qemu.close()
    bools = [
        p["name"]
        for p in properties
        if p["type"] == "bool" and p["name"] not in ("realized", "hotplugged", "hotpluggable", "start-powered-off")
    ]
    bits = _measure_feature_bits(bools)
    for entry in properties:
        found = bits.get(entry["name"])
        if found:
            entry["cpuid"] = found
    _assign_aliases(properties)
    return {
        "properties": properties,
        "feature_words": word_order,
        # What query-cpu-model-expansion reports: every feature flag (static) / every property (full).
        "static_expansion": list(static),
        "full_expansion": list(full),
    }


def _measure_feature_bits(names: list[str]) -> dict[str, list[Any]]:
    """Hot-plug one `base` CPU per flag and see which CPUID bit it turned on."""
    found: dict[str, list[Any]] = {}
    qemu: QEMU | None = None
    base: dict[tuple[int, int | None, str], int] = {}
    slot = 0
    for name in names:
        if qemu is None or slot >= 250:
            if qemu is not None:
                qemu.close()
            qemu = QEMU("-machine", "pc", "-cpu", "base", "-smp", "1,maxcpus=255")
            base = _words(qemu, "/machine/unattached/device[0]")
            slot = 0
        slot += 1
        try:
            added = qemu.cmd(
                "device_add",
                driver="base-x86_64-cpu",
                id=f"c{slot}",
                **{"socket-id": 0, "core-id": slot, "thread-id": 0, name: True},
            )
        except (EOFError, OSError):
            qemu.close()
            qemu = None
            found[name] = [1, None, "EDX", 9] if name == "apic" else []  # QEMU aborts on apic=on for `base`
            continue
        if "error" in added:
            continue
        words = _words(qemu, f"/machine/peripheral/c{slot}")
        changed = [
            [key[0], key[1], key[2], bit]
            for key, value in words.items()
            for bit in range(32)
            if (value & ~base.get(key, 0)) >> bit & 1
        ]
        if changed:
            # xsave also turns on the x87/SSE state components of leaf 0xD: the flag is the leaf 1 bit.
            primary = [c for c in changed if c[0] != 13] or changed
            found[name] = primary[0]
    if qemu is not None:
        qemu.close()
    return found


def _assign_aliases(properties: list[dict[str, Any]]) -> None:
    by_bit: dict[str, list[str]] = {}
    for entry in properties:
        if "cpuid" in entry:
            by_bit.setdefault(json.dumps(entry["cpuid"]), []).append(entry["name"])
    for names in by_bit.values():
        canonical = next(
            (n for n in names if n not in EXTRA_ALIASES and "_" not in n),
            names[0],
        )
        for entry in properties:
            if entry["name"] in names and entry["name"] != canonical:
                entry["alias_of"] = canonical


def _cpuid(uc: unicorn.Uc, leaf: int, subleaf: int) -> list[int]:
    uc.reg_write(x86.UC_X86_REG_RAX, leaf)
    uc.reg_write(x86.UC_X86_REG_RCX, subleaf)
    uc.emu_start(0x1000, 0x1002)
    return [
        uc.reg_read(r) & 0xFFFFFFFF
        for r in (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RBX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX)
    ]


def dump_unicorn(const: str) -> dict[str, list[int]]:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64, cpu=getattr(x86, f"UC_CPU_X86_{const}"))
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x1000, b"\x0f\xa2")  # cpuid
    table: dict[str, list[int]] = {}
    for base in (0, 0x80000000):
        top = _cpuid(uc, base, 0)[0]
        for leaf in range(base, top + 1):
            subleaves = {4: 8, 7: _cpuid(uc, 7, 0)[0] + 1 if leaf == 7 else 1, 0xB: 2, 0xD: 64, 0x14: 2}.get(leaf, 1)
            for subleaf in range(subleaves):
                table[f"{leaf:#010x}.{subleaf}"] = _cpuid(uc, leaf, subleaf)
    return table


def _features_in(table: dict[str, list[int]], properties: list[dict[str, Any]]) -> list[str]:
    regs = {"EAX": 0, "EBX": 1, "ECX": 2, "EDX": 3}
    present = []
    for entry in properties:
        if "cpuid" not in entry or "alias_of" in entry:
            continue
        leaf, subleaf, reg, bit = entry["cpuid"]
        values = table.get(f"{leaf:#010x}.{subleaf or 0}")
        if values and values[regs[reg]] >> bit & 1:
            present.append(entry["name"])
    return present


def measure_models(properties: list[dict[str, Any]]) -> dict[str, Any]:
    features = {e["name"] for e in properties if "cpuid" in e and "alias_of" not in e} | set(MSR_FEATURES)
    qemu = QEMU("-machine", "none")
    models: dict[str, Any] = {}
    try:
        definitions = {d["name"]: d for d in qemu.cmd("query-cpu-definitions")["return"]}
        for name, const in UNICORN_MODELS.items():
            table = dump_unicorn(const)
            present = _features_in(table, properties)
            entry: dict[str, Any] = {"unicorn": const, "cpuid": table, "features": present}
            if f"{name}-v1" in definitions or name in definitions:
                expansion = qemu.cmd(
                    "query-cpu-model-expansion",
                    type="full",
                    model={"name": f"{name}-v1" if f"{name}-v1" in definitions else name},
                )
                props = expansion["return"]["model"]["props"]
                # QEMU's identity for the model, where the engine's CPUID says otherwise (qemu64).
                entry["qemu_props"] = {k: props[k] for k in ("family", "model", "stepping", "vendor", "model-id")}
                nominal = sorted(f for f in features if props.get(f) is True)
                entry["nominal_features"] = nominal
                entry["unavailable"] = sorted(set(nominal) - set(present))
                entry["in_qemu"] = True
            else:
                entry["nominal_features"] = present
                entry["unavailable"] = []
                entry["in_qemu"] = False
            models[name] = entry
        for special in ("max", "base"):
            props = qemu.cmd("query-cpu-model-expansion", type="full", model={"name": special})["return"]["model"][
                "props"
            ]
            models[special] = {
                "qemu_props": {
                    k: props[k] for k in ("family", "model", "stepping", "vendor", "model-id", "level", "xlevel")
                },
                "nominal_features": sorted(f for f in features if props.get(f) is True),
            }
    finally:
        qemu.close()
    return models


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    props = measure_properties()
    (OUT / "x86_cpu_properties.json").write_text(json.dumps(props, indent=1) + "\n")
    models = measure_models(props["properties"])
    (OUT / "x86_cpu_models.json").write_text(json.dumps(models, indent=1) + "\n")
    print(f"wrote {len(props['properties'])} properties and {len(models)} models to {OUT}")


if __name__ == "__main__":
    main()
