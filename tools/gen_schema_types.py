#!/usr/bin/env python3
"""Write schema/ type documents from qemu-system-x86_64 7.2's own introspection.

Some of QEMU's types are large (BlockDeviceInfo, MigrationInfo, ObjectOptions) and qmpd only ever
answers them empty or refuses them, yet their introspected shape must be QEMU's, member for member.
This script turns QEMU's ``query-qmp-schema`` entities into JSON Schema documents in schema/types/,
in schema/README.md's conventions: members in QEMU's order, optional ones not required, enums with
their member features, unions with ``x-qapi-union`` and ``allOf`` branches.  QEMU masks its type
names, so the names come from this script's tables (``ROOTS``, ``NAMES``) and from the ``$ref`` of a
member in the document being rewritten; a type with no name is written inline.  Introspection says only
``int`` for every integer type: members keep the ``x-qapi-type`` of the document being rewritten, and
the members of a command's union branches (object-add's) get theirs by asking QEMU (``probe_integers``).

The documents are qmpd's source of truth once written: the script is a tool for updating them, and
tests/differential/test_schema_sweep.py checks them against QEMU at every run.

Usage: tools/gen_schema_types.py [NAME ...]   (needs qemu-system-x86_64; default: every root)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TYPES = Path(__file__).resolve().parents[1] / "schema" / "types"
BASE = "https://qmpd.dev/schema/types/"

#: Named type -> (QEMU entity, where in it: "ret", "ret[]", "arg.MEMBER"), the types written.
ROOTS: dict[str, tuple[str, str]] = {
    "BlockInfo": ("query-block", "ret[]"),
    "BlockDeviceInfo": ("query-named-block-nodes", "ret[]"),
    "MigrationInfo": ("query-migrate", "ret"),
    "SGXInfo": ("query-sgx-capabilities", "ret"),
    "StatsResult": ("query-stats", "ret[]"),
    "StatsSchema": ("query-stats-schemas", "ret[]"),
    "CpuInfoFast": ("query-cpus-fast", "ret[]"),
    "GuestPanicInformation": ("GUEST_PANICKED", "arg.info"),
    "MigrationCapability": ("query-migrate-capabilities", "ret[].capability"),
    "SchemaInfoEnum": ("query-qmp-schema", "ret[].case:enum"),
}
#: Command documents whose arguments are written whole: command -> where its arguments are in QEMU's schema.
COMMANDS: dict[str, tuple[str, str]] = {
    "object-add": ("object-add", "arg"),
}
#: "Type.member" (or "Type.case:CASE" for a union branch) -> the name of the type found there.
NAMES: dict[str, str] = {
    "BlockInfo.inserted": "BlockDeviceInfo",
    "BlockDeviceInfo.image": "ImageInfo",
    "ImageInfo.backing-image": "ImageInfo",
    "ImageInfo.format-specific": "ImageInfoSpecific",
    "BlockDeviceInfo.cache": "BlockdevCacheInfo",
    "MigrationInfo.ram": "MigrationStats",
    "MigrationInfo.disk": "MigrationStats",
    "MigrationInfo.socket-address": "SocketAddress",
    "SocketAddress.case:inet": "InetSocketAddress",
    "SocketAddress.case:unix": "UnixSocketAddress",
    "SocketAddress.case:vsock": "VsockSocketAddress",
    "SocketAddress.case:fd": "String",
    "SGXInfo.sections": "SGXEPCSection",
    "StatsResult.stats": "Stats",
    "Stats.value": "StatsValue",
    "StatsSchema.stats": "StatsSchemaValue",
    "StatsSchemaValue.type": "StatsType",
    "StatsSchemaValue.unit": "StatsUnit",
    "StatsSchemaValue.base": "StatsBase",
    "GuestPanicInformation.type": "GuestPanicInformationType",
    "GuestPanicInformation.case:hyper-v": "GuestPanicInformationHyperV",
    "GuestPanicInformation.case:s390": "GuestPanicInformationS390",
    "GuestPanicInformationS390.reason": "S390CrashReason",
    "CpuInfoFast.case:s390x": "CpuInfoS390",
    "CpuInfoS390.cpu-state": "CpuS390State",
}


class QEMU:
    """One qemu-system-x86_64 under -S with a QMP socket, asked one command at a time."""

    def __enter__(self) -> QEMU:
        self._tmp = tempfile.TemporaryDirectory()
        path = os.path.join(self._tmp.name, "qmp.sock")
        argv = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-S", "-qmp",
                f"unix:{path},server=on,wait=off"]  # fmt: skip
        self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        while not os.path.exists(path):
            time.sleep(0.01)
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.connect(path)
        self._stream = self._sock.makefile("rwb")
        self._stream.readline()
        self.ask("qmp_capabilities")
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
        self._process.terminate()
        self._process.wait()
        self._tmp.cleanup()

    def ask(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """The reply (events skipped)."""
        request: dict[str, Any] = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self._stream.write(json.dumps(request).encode())
        self._stream.flush()
        while True:
            line = self._stream.readline()
            if not line:
                raise ConnectionError(f"QEMU exited on {request}")
            reply: dict[str, Any] = json.loads(line)
            if "event" not in reply:
                return reply

    def restart(self) -> None:
        """A fresh QEMU (a probe can crash one: QEMU 7.2 aborts on some object-add arguments)."""
        self.__exit__()
        self.__enter__()


class Writer:
    """QEMU entities -> schema/ documents."""

    def __init__(self, table: list[dict[str, Any]], wanted: set[str], qemu: QEMU) -> None:
        self.qemu = qemu
        self.table = {entry["name"]: entry for entry in table}
        self.wanted = wanted
        self.written: dict[str, dict[str, Any]] = {}
        #: QEMU type -> the name it is written under (a recursive type refers to itself by it).
        self.named: dict[str, str] = {}
        self.inline_stack: list[str] = []
        #: Named types that are some union's branch: left open (the union's unevaluatedProperties closes them).
        self.branches: set[str] = set()

    def find(self, entity: str, where: str) -> str:
        """The QEMU type name at ``where`` inside ``entity``."""
        name = self.table[entity]["ret-type" if where.startswith("ret") else "arg-type"]
        for step in where.replace("[]", ".[]").split(".")[1:]:
            entry = self.table[name]
            if step == "[]":
                name = entry["element-type"]
            elif step.startswith("case:"):
                name = next(v["type"] for v in entry["variants"] if v["case"] == step[5:])
            else:
                name = next(m["type"] for m in entry["members"] if m["name"] == step)
        return name

    def document(self, title: str, qemu_name: str) -> None:
        """Write types/TITLE.json for QEMU's type ``qemu_name`` (once)."""
        if title in self.written:
            return
        path = TYPES / f"{title}.json"
        old: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.written[title] = old
        self.named[qemu_name] = title
        body = self.schema(qemu_name, title, old)
        if title in self.branches or (old and "additionalProperties" not in old):
            body.pop("additionalProperties", None)
        description = old.get("description") or f"QEMU's {title} (its shape, from QEMU 7.2's introspection)."
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": BASE + f"{title}.json",
            "title": title,
            "description": description,
            **body,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")

    def command(self, name: str, qemu_name: str) -> None:
        """Rewrite commands/NAME.json's arguments (its title, description, x-qmp and returns are kept)."""
        path = TYPES.parent / "commands" / f"{name}.json"
        old = json.loads(path.read_text())
        body = self.schema(qemu_name, name, old)
        if "x-qapi-union" in body:
            self.probe_integers(name, qemu_name, body)
        keep = ("$schema", "$id", "title", "description", "x-qmp")
        document = {**{key: old[key] for key in keep if key in old}, **body}
        extend = EXTEND.get(name)
        if extend is not None:
            extend(document)
        if "$defs" in old:
            document["$defs"] = old["$defs"]
        path.write_text(json.dumps(document, indent=2) + "\n")

    def probe_integers(self, command: str, qemu_name: str, body: dict[str, Any]) -> None:
        """Give each integer member of each union branch its QAPI type, asked of QEMU (introspection says
        only ``int``): a string tells signed from unsigned by QEMU's error, a too-large number the width."""
        entry = self.table[qemu_name]
        tag = entry["tag"]
        for variant in entry["variants"]:
            branch = self.table[variant["type"]]
            schema = body["x-qapi-union"]["variants"][variant["case"]]
            for member in branch["members"]:
                if self.table[member["type"]].get("json-type") != "int" or "$ref" in schema:
                    continue
                name = member["name"]
                base = {tag: variant["case"], **self.filled(entry, skip=tag), **self.filled(branch, skip=name)}
                schema["properties"][name]["x-qapi-type"] = self.integer_type(command, base, name)

    def integer_type(self, command: str, base: dict[str, Any], name: str) -> str:
        self.probes = getattr(self, "probes", 0) + 1
        base = {**base, "id": f"probe{self.probes}"} if "id" in base else base
        signed = "expected: integer" in self.qemu.ask(command, {**base, name: "s"}).get("error", {}).get("desc", "")
        try:
            desc = self.qemu.ask(command, {**base, name: (1 << 63) - 1 if signed else (1 << 64) - 1})
        except ConnectionError as exc:  # QEMU 7.2 aborts on some (memory-backend-ram size=2^64-1)
            print(f"{exc}: {name} taken as 64 bits wide", file=sys.stderr)
            self.qemu.restart()
            desc = {}
        for width in (8, 16, 32):
            qapi_type = f"{'' if signed else 'u'}int{width}"
            if desc.get("error", {}).get("desc", "").endswith(f"expects {qapi_type}_t"):
                return qapi_type
        return "int" if signed else "uint64"

    def filled(self, entry: dict[str, Any], skip: str) -> dict[str, Any]:
        """Valid values for an object's required members (all but ``skip``), so QEMU checks the one probed."""
        return {
            member["name"]: self.sample(member["type"])
            for member in entry["members"]
            if "default" not in member and member["name"] != skip
        }

    def sample(self, qemu_name: str) -> Any:
        entry = self.table[qemu_name]
        samples = {"string": "x", "int": 1, "boolean": False, "number": 1.0, "null": None, "value": "x"}
        if entry["meta-type"] == "builtin":
            return samples[entry["json-type"]]
        if entry["meta-type"] == "enum":
            return entry["values"][0]
        if entry["meta-type"] == "array":
            return []
        if entry["meta-type"] == "alternate":
            return self.sample(entry["members"][0]["type"])
        return self.filled(entry, skip="")

    def reference(self, title: str, qemu_name: str) -> dict[str, Any]:
        """A ``$ref`` to a named type, written first if it is to be (re)generated or missing."""
        if title in self.wanted or not (TYPES / f"{title}.json").exists():
            self.document(title, qemu_name)
        return {"$ref": f"{title}.json"}

    def schema(self, qemu_name: str, title: str | None, old: dict[str, Any]) -> dict[str, Any]:
        entry = self.table[qemu_name]
        meta = entry["meta-type"]
        if meta == "builtin":
            return _builtin(entry["json-type"], old)
        if meta == "array":
            return {"type": "array", "items": self.member(entry["element-type"], f"{title}.[]", old.get("items", {}))}
        if meta == "enum":
            result: dict[str, Any] = {"type": "string", "enum": list(entry["values"])}
            features = {m["name"]: m["features"] for m in entry["members"] if m.get("features")}
            if features:
                result["x-enum-features"] = features
            return result
        if meta == "alternate":
            return {"oneOf": [self.member(m["type"], f"{title}.alt", {}) for m in entry["members"]]}
        assert meta == "object", meta
        old_properties = old.get("properties", {})
        properties: dict[str, Any] = {}
        for member in entry["members"]:
            spec = self.member(member["type"], f"{title}.{member['name']}", old_properties.get(member["name"], {}))
            if member.get("features"):
                spec["x-features"] = list(member["features"])
            properties[member["name"]] = spec
        result = {"type": "object", "properties": properties}
        required = [m["name"] for m in entry["members"] if "default" not in m]
        if required:
            result["required"] = required
        if "variants" in entry:
            variants = {v["case"]: self.member(v["type"], f"{title}.case:{v['case']}", {}) for v in entry["variants"]}
            result["x-qapi-union"] = {"tag": entry["tag"], "variants": variants}
            result["allOf"] = [
                {"if": {"properties": {entry["tag"]: {"const": case}}}, "then": branch}
                for case, branch in variants.items()
                if branch != {"type": "object"}
            ]
            result["unevaluatedProperties"] = False
        elif not properties:
            return {"type": "object"}
        else:
            result["additionalProperties"] = False
        return result

    def member(self, qemu_name: str, where: str, old: dict[str, Any]) -> dict[str, Any]:
        """The schema of the type at ``where``: a reference to a named type, or the type inline."""
        name = NAMES.get(where)
        if name is None and "$ref" in old:
            name = old["$ref"].removesuffix(".json").rpartition("/")[2]
        if name is None and "$ref" in old.get("items", {}):
            entry = self.table[qemu_name]
            if entry["meta-type"] == "array":
                element = self.table[entry["element-type"]]
                if element["meta-type"] != "builtin":
                    title = old["items"]["$ref"].removesuffix(".json").rpartition("/")[2]
                    return {"type": "array", "items": self.reference(title, entry["element-type"])}
        entry = self.table[qemu_name]
        if name is None and qemu_name in self.named:
            name = self.named[qemu_name]
        if name is not None and entry["meta-type"] not in ("builtin", "array"):
            if where.rpartition(".")[2].startswith("case:"):
                self.branches.add(name)
            return self.reference(name, qemu_name)
        if entry["meta-type"] == "array" and name is not None:
            return {"type": "array", "items": self.reference(name, entry["element-type"])}
        if qemu_name in self.inline_stack:
            raise SystemExit(f"{where}: a recursive type needs a name in NAMES")
        self.inline_stack.append(qemu_name)
        inline = self.schema(qemu_name, None, old)
        self.inline_stack.pop()
        if where.rpartition(".")[2].startswith("case:"):
            inline.pop("additionalProperties", None)
        return inline


def _builtin(json_type: str, old: dict[str, Any]) -> dict[str, Any]:
    if json_type == "int":
        return {"type": "integer", "x-qapi-type": old.get("x-qapi-type", "int")}
    if json_type == "value":
        return {}
    return {"type": {"string": "string", "boolean": "boolean", "number": "number", "null": "null"}[json_type]}


def object_add_cpu_types() -> list[str]:
    """qmpd's concrete CPU types: object-add takes them too (README's deliberate differences)."""
    sys.path.insert(0, str(TYPES.parents[1]))
    from qmpd.machine.qom_tree import type_registry  # run from a checkout: qmpd need not be installed

    registry = type_registry()
    return [info.name for info in registry if not info.abstract and registry.is_a(info.name, "x86_64-cpu")]


def _object_add_cpu_types(document: dict[str, Any]) -> None:
    """Add the CPU types and qmpd-guest-policy to object-add's qom-type, each an open branch (their
    properties are checked by the handler, with QEMU's property texts)."""
    cpus = [*object_add_cpu_types(), "qmpd-guest-policy"]
    tag = document["x-qapi-union"]["tag"]
    document["properties"][tag]["enum"] += cpus
    for name in cpus:
        document["x-qapi-union"]["variants"][name] = {"type": "object", "additionalProperties": True}
    document["allOf"].append({"if": {"properties": {tag: {"enum": cpus}}}, "then": {"additionalProperties": True}})


#: Commands whose generated arguments qmpd extends (a deliberate difference, in README's table).
EXTEND = {"object-add": _object_add_cpu_types}


def main() -> None:
    wanted = set(sys.argv[1:]) or set(ROOTS) | set(COMMANDS)
    with QEMU() as qemu:
        writer = Writer(qemu.ask("query-qmp-schema")["return"], wanted, qemu)
        for title in sorted(wanted & ROOTS.keys()):
            entity, where = ROOTS[title]
            writer.document(title, writer.find(entity, where))
        for name in sorted(wanted & COMMANDS.keys()):
            entity, where = COMMANDS[name]
            writer.command(name, writer.find(entity, where))
    print(" ".join(sorted(writer.written)))


if __name__ == "__main__":
    main()
