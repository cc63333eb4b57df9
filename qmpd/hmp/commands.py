"""HMP commands, each a thin layer over the machine or the QMP handler it mirrors."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from qmpd.commands.base import CommandContext
from qmpd.commands.control import quit_
from qmpd.commands.memory import memsave, pmemsave
from qmpd.cpu.cpu_option import CPUOptionError, parse_value
from qmpd.cpu.x86cpu import X86CPU
from qmpd.devices.ps2 import key_tables
from qmpd.errors import GenericError, QMPError
from qmpd.fdstore import SessionFds
from qmpd.hmp.memory_dump import memory_dump
from qmpd.hmp.monitor import HMP
from qmpd.hmp.registers import format_registers, monitor_registers
from qmpd.machine.guest_memory import read_physical, read_virtual
from qmpd.machine.help_text import device_help, device_options_help
from qmpd.machine.legacy_cpu import cpu_add, cpu_set
from qmpd.machine.qdev import DeviceOptions, OptionsSyntaxError, options_from_text, qdev_device_add, qdev_device_del
from qmpd.machine.runstate import RunState, ShutdownCause
from qmpd.qobject.parser import JSONParseError
from qmpd.qobject.streamer import JSONMessageStreamer
from qmpd.qobject.writer import encode_pretty
from qmpd.qom.object import Object, lookup, resolve_path
from qmpd.version import version_info


@HMP.command("help|?", "name:S?", "[cmd]", "show the help")
def hmp_help(ctx: CommandContext, name: str | None = None) -> str:
    return HMP.help_text(name)


@HMP.command("info", "item:s?", "[subcommand]", "show various information about the system state")
def hmp_info(ctx: CommandContext, item: str | None = None) -> str:
    return HMP.help_text("info")  # reached only through help; HMPTable.execute dispatches subcommands


@HMP.command("stop|s", "", "", "stop emulation")
async def hmp_stop(ctx: CommandContext) -> None:
    await ctx.machine.stop()


@HMP.command("cont|c", "", "", "resume emulation")
def hmp_cont(ctx: CommandContext) -> None:
    ctx.machine.cont()


@HMP.command("system_reset", "", "", "reset the system")
async def hmp_system_reset(ctx: CommandContext) -> None:
    await ctx.machine.system_reset(ShutdownCause.HOST_QMP_SYSTEM_RESET)


@HMP.command("system_powerdown", "", "", "send system power down event")
def hmp_system_powerdown(ctx: CommandContext) -> None:
    ctx.machine.system_powerdown()


@HMP.command("nmi", "", "", "inject an NMI")
def hmp_nmi(ctx: CommandContext) -> None:
    ctx.machine.inject_nmi()


_HEX_NUMBER = re.compile(r"0x[0-9a-fA-F]+")


@HMP.command(
    "sendkey",
    "keys:s,hold_time:i?",
    "keys [hold_ms]",
    "send keys to the VM (e.g. 'sendkey ctrl-alt-f1', default hold time=100 ms)",
)
def hmp_sendkey(ctx: CommandContext, keys: str, hold_time: int | None = None) -> str:
    """Keys joined by '-': QKeyCode names, '<' for less, or 0x-prefixed key numbers (QEMU's hmp_sendkey)."""
    names: list[str] = []
    for name in keys.split("-"):
        if name == "<":
            name = "less"
        if name.startswith("0x"):
            if not _HEX_NUMBER.fullmatch(name):
                return f"invalid parameter: {name}\n"
            names.append(key_tables().qcode_of_number(int(name, 16)))
        elif name in key_tables().names:
            names.append(name)
        else:
            return f"invalid parameter: {name}\n"
    ctx.machine.keys.send_keys(names, hold_time)
    return ""


@HMP.command("quit|q", "", "", "quit the emulator")
def hmp_quit(ctx: CommandContext) -> None:
    quit_(ctx)  # QEMU's hmp_quit calls qmp_quit


@HMP.info_command("status", "", "", "show the current VM status (running|paused)")
def hmp_info_status(ctx: CommandContext) -> str:
    state = ctx.machine.runstate
    running = ctx.machine.running
    text = f"VM status: {'running' if running else 'paused'}"
    if not running and state is not RunState.PAUSED:
        text += f" ({state.value})"
    return text + "\n"


@HMP.info_command("version", "", "", "show the version of QEMU")
def hmp_info_version(ctx: CommandContext) -> str:
    info = version_info()
    qemu = info["qemu"]
    return f"{qemu['major']}.{qemu['minor']}.{qemu['micro']}{info['package']}\n"


@HMP.info_command("name", "", "", "show the current VM name")
def hmp_info_name(ctx: CommandContext) -> str:
    name = ctx.machine.config.name
    return f"{name}\n" if name is not None else ""


@HMP.info_command("kvm", "", "", "show KVM information")
def hmp_info_kvm(ctx: CommandContext) -> str:
    return "kvm support: not compiled\n"


def _current_cpu(ctx: CommandContext) -> int | None:
    """The monitor's current CPU: human-monitor-command's cpu-index, else the first CPU."""
    indexes = ctx.machine.cpu_slots.cpu_indexes()
    if ctx.hmp_cpu_index is not None:
        return ctx.hmp_cpu_index
    return indexes[0] if indexes else None


async def _monitor_registers(ctx: CommandContext) -> dict[str, int] | None:
    """``$name`` in an expression: the current CPU's registers."""
    index = _current_cpu(ctx)
    return None if index is None else monitor_registers(await ctx.machine.cpu_snapshot(index))


HMP.registers = _monitor_registers


@HMP.info_command("cpus", "", "", "show infos for each CPU")
def hmp_info_cpus(ctx: CommandContext) -> str:
    current = _current_cpu(ctx)
    lines = []
    for entry in ctx.machine.cpu_slots.cpus_fast():
        marker = "*" if entry["cpu-index"] == current else " "
        lines.append(f"{marker} CPU #{entry['cpu-index']}: thread_id={entry['thread-id']}\n")
    return "".join(lines)


@HMP.info_command("hotpluggable-cpus", "", "", "Show information about hotpluggable CPUs")
def hmp_info_hotpluggable_cpus(ctx: CommandContext) -> str:
    lines = ["Hotpluggable CPUs:\n"]
    for entry in ctx.machine.cpu_slots.hotpluggable_cpus():
        lines.append(f'  type: "{entry["type"]}"\n')
        lines.append(f'  vcpus_count: "{entry["vcpus-count"]}"\n')
        if "qom-path" in entry:
            lines.append(f'  qom_path: "{entry["qom-path"]}"\n')
        lines.append("  CPUInstance Properties:\n")
        for key in ("node-id", "socket-id", "die-id", "cluster-id", "core-id", "thread-id"):
            if key in entry["props"]:
                lines.append(f'    {key}: "{entry["props"][key]}"\n')
    return "".join(lines)


@HMP.command("cpu", "index:i", "index", "set the default CPU")
def hmp_cpu(ctx: CommandContext, index: int) -> str:
    return "" if index in ctx.machine.cpu_slots.cpu_indexes() else "invalid CPU index\n"


@HMP.command("qom-list", "path:s?", "path", "list QOM properties")
def hmp_qom_list(ctx: CommandContext, path: str | None = None) -> str:
    if path is None:
        return "/\n"
    obj = lookup(ctx.machine.qom.root, path)
    return "".join(f"{prop.name} ({prop.type})\n" for prop in obj.properties())


@HMP.command("qom-get", "path:s,property:s", "path property", "print QOM property")
def hmp_qom_get(ctx: CommandContext, path: str, property: str) -> str:
    value = lookup(ctx.machine.qom.root, path).get_property(property)
    return encode_pretty(value) + "\n"


@HMP.command(
    "qom-set",
    "json:-j,path:s,property:s,value:S",
    "[-j] path property value",
    "set QOM property.\n\t\t\t-j: the value is specified in json format.",
)
def hmp_qom_set(ctx: CommandContext, path: str, property: str, value: str, json: bool = False) -> None:
    obj = lookup(ctx.machine.qom.root, path)
    if json:
        parsed = list(JSONMessageStreamer().feed(value.encode() + b"\n"))
        if len(parsed) != 1 or isinstance(parsed[0], JSONParseError):
            raise GenericError(
                parsed[0].desc if parsed and isinstance(parsed[0], JSONParseError) else "Expecting a value"
            )
        ctx.machine.qom_set(obj, property, parsed[0])
        return
    prop = obj.find_property(property)
    if prop is None:
        raise GenericError(f"Property '{obj.type_name}.{property}' not found")
    try:
        typed = parse_value(prop.type, property, value)
    except CPUOptionError as exc:
        raise GenericError(str(exc)) from None
    ctx.machine.qom_set(obj, property, typed)


@HMP.info_command("qom-tree", "path:s?", "[path]", "show QOM composition tree")
def hmp_info_qom_tree(ctx: CommandContext, path: str | None = None) -> str:
    root = ctx.machine.qom.root
    obj: Object
    if path is None:
        obj = ctx.machine.qom.machine
    else:
        found, ambiguous = resolve_path(root, path)
        if found is None:
            return f"Path '{path}' could not be resolved.\n"
        if ambiguous:
            return f"Warning: Path '{path}' is ambiguous.\n"
        obj = found
    lines: list[str] = []

    def show(node: Object, indent: int) -> None:
        name = "" if node is root else node.name_in_parent
        lines.append(f"{' ' * indent}/{name} ({node.type_name})\n")
        for _, child in sorted(node.children(), key=lambda item: item[0]):
            show(child, indent + 2)

    show(obj, 0)
    return "".join(lines)


@HMP.info_command(
    "registers",
    "cpustate_all:-a,vcpu:i?",
    "[-a|vcpu]",
    "show the cpu registers (-a: show register info for all cpus; vcpu: specific vCPU to query; "
    "show the current CPU's registers if no argument is specified)",
)
async def hmp_info_registers(ctx: CommandContext, cpustate_all: bool = False, vcpu: int | None = None) -> str:
    indexes = ctx.machine.cpu_slots.cpu_indexes()
    if cpustate_all:
        texts = [format_registers(index, await ctx.machine.cpu_snapshot(index)) for index in indexes]
        return "".join(texts)
    index = vcpu if vcpu is not None else _current_cpu(ctx)
    if index is None or index not in indexes:
        return f"CPU#{vcpu} not available\n" if vcpu is not None else "No CPU available\n"
    return format_registers(index, await ctx.machine.cpu_snapshot(index))


async def _dump(ctx: CommandContext, count: int, format: str, size: int, addr: int, physical: bool) -> str:
    index = _current_cpu(ctx)
    if index is None and (format == "i" or not physical):
        return "Can not dump without CPU\n"
    if format == "i":
        return "qmpd: the 'i' format (disassembly) is not supported\n"
    ram = ctx.machine.ram
    read: Callable[[int, int], bytes | None]
    if physical:
        read = partial(read_physical, ram)
    else:
        assert index is not None
        read = partial(read_virtual, ram, await ctx.machine.cpu_snapshot(index))
    # QEMU has no count limit: tens of megabytes of text are built off the event loop.
    return await ctx.in_worker(partial(memory_dump, count, format, size, addr, read))


@HMP.command("x", "fmt:/,addr:l", "/fmt addr", "virtual memory dump starting at 'addr'")
async def hmp_x(ctx: CommandContext, count: int, format: str, size: int, addr: int) -> str:
    return await _dump(ctx, count, format, size, addr, physical=False)


@HMP.command("xp", "fmt:/,addr:l", "/fmt addr", "physical memory dump starting at 'addr'")
async def hmp_xp(ctx: CommandContext, count: int, format: str, size: int, addr: int) -> str:
    return await _dump(ctx, count, format, size, addr, physical=True)


@HMP.command(
    "memsave", "val:l,size:i,filename:s", "addr size file",
    "save to disk virtual memory dump starting at 'addr' of size 'size'",
)  # fmt: skip
async def hmp_memsave(ctx: CommandContext, val: int, size: int, filename: str) -> str | None:
    index = _current_cpu(ctx)
    if index is None:
        return "No CPU available\n"
    await memsave(ctx, val, size & 0xFFFFFFFF, filename, index)
    return None


@HMP.command(
    "pmemsave", "val:l,size:i,filename:s", "addr size file",
    "save to disk physical memory dump starting at 'addr' of size 'size'",
)  # fmt: skip
async def hmp_pmemsave(ctx: CommandContext, val: int, size: int, filename: str) -> None:
    await pmemsave(ctx, val, size & 0xFFFFFFFF, filename)


@HMP.command("device_add", "device:O", "driver[,prop=value][,...]", "add device, like -device on the command line")
def hmp_device_add(ctx: CommandContext, device: str | None = None) -> str:
    try:
        opts = options_from_text(device or "") if device else DeviceOptions(None, ())
    except OptionsSyntaxError:
        return 'Try "help device_add" for more information\n'
    driver = dict(opts.options).get("driver")
    if driver in ("help", "?"):
        return device_help()
    if driver is not None and any(key in ("help", "?") for key, _ in opts.options):
        try:
            return device_options_help(driver)
        except QMPError as error:
            return f"{error.desc}\n"  # QEMU prints a failed help plainly, without "Error: "
    plugged = qdev_device_add(ctx.machine, opts)
    warnings = plugged.filter_warnings() if isinstance(plugged, X86CPU) else []
    return "".join(f"warning: {warning}\n" for warning in warnings)


@HMP.command("device_del", "id:s", "device", "remove device")
def hmp_device_del(ctx: CommandContext, id: str) -> None:
    qdev_device_del(ctx.machine, id)


@HMP.command("getfd", "fdname:s", "getfd name", "receive a file descriptor via SCM rights and assign it a name")
def hmp_getfd(ctx: CommandContext, fdname: str) -> None:
    """As QEMU's: the human monitor of human-monitor-command is a monitor of its own, made for one
    command line, which never receives a descriptor (those passed with the QMP message stay the QMP
    session's): always "No file descriptor supplied via SCM_RIGHTS"."""
    SessionFds().getfd(fdname)


@HMP.command("closefd", "fdname:s", "closefd name", "close a file descriptor previously passed via SCM rights")
def hmp_closefd(ctx: CommandContext, fdname: str) -> None:
    """As QEMU's: that monitor's own table, empty (the QMP session's named descriptors are not its)."""
    SessionFds().closefd(fdname)


@HMP.command("cpu-add", "id:i", "id", "add cpu (deprecated, use device_add instead)")
def hmp_cpu_add(ctx: CommandContext, id: int) -> str:
    text = "cpu_add is deprecated, please use device_add instead\n"
    try:
        cpu_add(ctx.machine, id)
    except GenericError as error:
        return f"{text}Error: {error.desc}\n"
    return text


@HMP.command("cpu_set", "cpu:i,state:s", "cpu [online|offline]", "change cpu state")
def hmp_cpu_set(ctx: CommandContext, cpu: int, state: str) -> None:
    cpu_set(ctx.machine, cpu, state)
