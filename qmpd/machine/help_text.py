"""The command line's ``help`` answers (``-cpu help``, ``-device help``, ``X,help``), in QEMU 7.2's layout.

Scripts and management tools read these lists to learn what a binary offers, so qmpd prints what it
supports in exactly QEMU's format: the same headers, columns, sort orders and default-value spelling.
``-machine help`` lives with the machine types (qmpd.machine.types).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from qmpd.cpu.models import cpu_models, load_table
from qmpd.machine.properties import MACHINE_PROPERTIES
from qmpd.machine.qdev import device_properties
from qmpd.machine.qom_tree import type_registry

#: QEMU's descriptions of the CPU classes that are not versioned models.
_CLASS_DESCRIPTIONS = {
    "base": "base CPU model type with no features enabled",
    "max": "Enables all features supported by the accelerator in the current host",
}
#: QEMU lists these classes last, in this order (X86CPUClass.ordering), the others by name.
_LAST = ("base", "host", "max")
#: Classes QEMU 7.2 under TCG leaves out of ``-cpu help`` (host needs KVM or HVF).
_NOT_LISTED = frozenset({"host"})
#: ``listflags``: a new line before a name that would reach this column.
_FLAGS_WIDTH = 75


class BoardProperty(NamedTuple):
    """One property of a device qmpd creates from ``-device``, as device-list-properties shows it."""

    name: str
    type: str
    description: str | None = None
    default: Any = None


class BoardDevice(NamedTuple):
    """A device ``-device`` may create, with QEMU's category, bus and properties."""

    category: str
    bus: str
    properties: tuple[BoardProperty, ...]


#: The devices ``-device`` creates besides CPUs (qmpd.devices implements them).
BOARD_DEVICES: dict[str, BoardDevice] = {
    "isa-debug-exit": BoardDevice(
        "Misc devices",
        "ISA",
        (BoardProperty("iobase", "uint32", None, 0x501), BoardProperty("iosize", "uint32", None, 2)),
    ),
    "isa-debugcon": BoardDevice(
        "Misc devices",
        "ISA",
        (
            BoardProperty("chardev", "str", "ID of a chardev to use as a backend"),
            BoardProperty("iobase", "uint32", default=0xE9),
            BoardProperty("readback", "uint32", default=0xE9),
        ),
    ),
    "pvpanic": BoardDevice(
        "Misc devices",
        "ISA",
        (BoardProperty("events", "uint8", None, 3), BoardProperty("ioport", "uint16", None, 0x505)),
    ),
}
#: QEMU's device categories, in its order (only those qmpd has devices in are printed).
_CATEGORIES = ("Misc devices", "CPU devices")


def cpu_help() -> str:
    """``-cpu help``: every model (an alias line and its versioned line), then the recognized flags."""
    entries: list[tuple[str, str]] = []
    for model in cpu_models().values():
        if model.name in _NOT_LISTED:
            continue
        if model.versioned is None:
            entries.append((model.name, _CLASS_DESCRIPTIONS.get(model.name, model.model_id)))
            continue
        entries.append((model.name, "(alias configured by machine type)"))
        entries.append((model.versioned, model.model_id))

    def order(entry: tuple[str, str]) -> tuple[int, bytes]:
        name = entry[0]
        return (_LAST.index(name) + 1 if name in _LAST else 0, name.encode())

    lines = ["Available CPUs:"]
    lines += [f"x86 {name:<20}  {description}" for name, description in sorted(entries, key=order)]
    lines += ["", "Recognized CPUID flags:"]
    current = ""
    for flag in load_table("x86_cpu_flags.json")["flags"]:
        if current and len(current) - 1 + len(flag) + 1 >= _FLAGS_WIDTH:
            lines.append(current)
            current = ""
        current += ("  " if not current else " ") + flag
    lines += [current, ""]
    return "\n".join(lines) + "\n"


def machine_options_help(machine_type: str) -> str:
    """``-machine TYPE,help``: the machine's options, its class properties (not ``type``, not children)."""
    qom_type = f"{machine_type}-machine"
    read_only = {prop.name for prop in MACHINE_PROPERTIES if prop.read_only}
    properties = [
        prop.info(description=True)
        for prop in type_registry().class_properties(qom_type)
        if prop.name != "type" and not prop.is_child and prop.name not in read_only
    ]
    return options_text(qom_type, properties)


def device_help() -> str:
    """``-device help``: the devices qmpd creates, by QEMU's category, sorted as QEMU sorts them."""
    registry = type_registry()
    listed: dict[str, list[tuple[str, str]]] = {category: [] for category in _CATEGORIES}
    for name, device in BOARD_DEVICES.items():
        listed[device.category].append((name, f'name "{name}", bus {device.bus}'))
    for info in registry:
        if not info.abstract and info.user_creatable and registry.is_a(info.name, "x86_64-cpu"):
            listed["CPU devices"].append((info.name, f'name "{info.name}"'))
    blocks = []
    for category in _CATEGORIES:
        if listed[category]:
            rows = [line for _, line in sorted(listed[category], key=lambda row: row[0].lower())]
            blocks.append("\n".join([f"{category}:", *rows]) + "\n")
    return "\n".join(blocks)


def device_options_help(driver: str) -> str:
    """``-device DRIVER,help``: its properties, one line each, sorted, with QEMU's columns."""
    board = BOARD_DEVICES.get(driver)
    if board is not None:
        properties = [
            {"name": p.name, "type": p.type, **({} if p.description is None else {"description": p.description}),
             **({} if p.default is None else {"default-value": p.default})}
            for p in board.properties
        ]  # fmt: skip
    else:
        properties = device_properties(driver)
    return options_text(driver, properties)


def options_text(name: str, properties: list[dict[str, Any]]) -> str:
    """``-device X,help`` and ``-object X,help``: one line per property (qom-list-properties or
    device-list-properties entries), sorted, with QEMU's columns."""
    lines = sorted(_option_line(entry) for entry in properties)
    return "\n".join([f"{name} options:", *lines]) + "\n"


def _option_line(entry: dict[str, Any]) -> str:
    line = f"  {entry['name']}=<{entry['type']}>"
    if "description" in entry or "default-value" in entry:
        line = f"{line:<24} - {entry.get('description', '')}"
    if "default-value" in entry:
        line += f" (default: {json.dumps(entry['default-value'])})"
    return line
