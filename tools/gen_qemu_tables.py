#!/usr/bin/env python3
"""Regenerate qmpd/qapi/data/qemu_host.json by asking qemu-system-x86_64 7.2.

libvirt's probe reads a few QEMU facts that have nothing to do with qmpd's
machine but must have QEMU's shape: the properties of the memory-backend and
accelerator QOM types (qom-list-properties), the parameters of each command
line option (query-command-line-options) and the migration capabilities
(query-migrate-capabilities), and the orders of query-commands and
query-machines.  This script records them; qmpd serves the
parts that apply to it (the options it accepts, the types it has).

Usage: tools/gen_qemu_tables.py   (needs qemu-system-x86_64; a second or two)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "qmpd" / "qapi" / "data" / "qemu_host.json"
TYPES = ["accel", "tcg-accel", "memory-backend", "memory-backend-ram", "memory-backend-file", "memory-backend-memfd"]
#: The chipset devices qmpd emulates and puts in QOM (qmpd.machine.chipset_qom), with their abstract parents,
#: and the ISA devices the command line adds.
DEVICE_TYPES = [
    "isa-device", "i8042", "pci-device", "PIIX4_PM", "ICH9-LPC", "ps2-device", "ps2-kbd",
    "isa-debugcon", "isa-debug-exit", "pvpanic",
]  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "qmp.sock")
        argv = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-nographic", "-S", "-qmp",
                f"unix:{path},server=on,wait=off"]  # fmt: skip
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            while not os.path.exists(path):
                time.sleep(0.01)
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            stream = sock.makefile("rwb")
            stream.readline()

            def ask(name: str, **arguments: Any) -> Any:
                stream.write(json.dumps({"execute": name, "arguments": arguments}).encode())
                stream.flush()
                while True:
                    reply = json.loads(stream.readline())
                    if "event" not in reply:
                        return reply["return"]

            ask("qmp_capabilities")
            types = {}
            for info in ask("qom-list-types", abstract=True):
                if info["name"] in TYPES:
                    types[info["name"]] = {
                        "parent": info.get("parent"),
                        "abstract": info.get("abstract", False),
                        "properties": ask("qom-list-properties", typename=info["name"]),
                    }
            devices = {}
            for info in ask("qom-list-types", abstract=True):
                if info["name"] in DEVICE_TYPES:
                    abstract = info.get("abstract", False)
                    devices[info["name"]] = {
                        "parent": info.get("parent"),
                        "abstract": abstract,
                        "properties": ask("qom-list-properties", typename=info["name"]),
                        "device_properties": None if abstract else ask("device-list-properties", typename=info["name"]),
                    }
            tables = {
                "types": {name: types[name] for name in TYPES},
                "devices": {name: devices[name] for name in DEVICE_TYPES},
                "command_line_options": ask("query-command-line-options"),
                "migration_capabilities": [entry["capability"] for entry in ask("query-migrate-capabilities")],
                # The orders QEMU lists commands and machine types in (registration, hash table):
                # qmpd lists its own in the same relative order.
                "command_order": [entry["name"] for entry in ask("query-commands")],
                "machine_order": [entry["name"] for entry in ask("query-machines")],
            }
            ask("quit")
        finally:
            process.wait(timeout=10)
    OUT.write_text(json.dumps(tables, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
