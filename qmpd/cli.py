"""The command line: the qemu-system-x86_64 options qmpd understands, in QEMU's syntax.

QEMU's option grammar is not argparse's: every option is a single word that
may be written ``-opt`` or ``--opt``, and an option that takes an argument
takes the next word verbatim, even when it starts with ``-``.  So options are
a table (name, takes an argument, what it does), as in QEMU's
qemu-options.def, and errors use QEMU's wording ("-foo: invalid option",
"-m: requires an argument", "-qmp foo: 'foo' is not a valid char driver").

Options libvirt passes for a minimal domain but that mean nothing to qmpd are
accepted and ignored; they are listed in :data:`IGNORED_OPTIONS` and in the
README.  Everything else is refused with a clear message.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import json
import os
import sys
from collections.abc import Callable, Sequence

from qmpd import __version__
from qmpd.config import (
    CharConfig,
    Config,
    DeviceConfig,
    FwCfgOption,
    LogFormat,
    MachineConfig,
    MonitorConfig,
    MonitorKind,
    ObjectConfig,
    ServerConfig,
)
from qmpd.errors import QMPError
from qmpd.machine.actions import action_choices
from qmpd.machine.properties import parse_machine_properties
from qmpd.machine.types import default_machine_type, find_machine_type, machine_help
from qmpd.migration import STATE_FILE
from qmpd.qemuopts import OptionError, parse, parse_bool, parse_size
from qmpd.version import QEMU_VERSION

PROG = "qmpd"

#: Accepted for libvirt's sake; they change nothing in qmpd.
IGNORED_OPTIONS: dict[str, str] = {
    "overcommit": "guest RAM is an anonymous mapping",
    "rtc": "there is no RTC device",
    "boot": "qmpd boots its firmware directly",
    "audiodev": "there is no audio",
    "sandbox": "no seccomp policy is applied",
    "msg": "log format is set with --log-format",
    "global": "no device takes global properties",
    "no-user-config": "qmpd reads no configuration files",
    "enable-fips": "no cryptography is used",
}
_ACCELS = ("kvm", "tcg", "xen", "hax", "hvf", "nvmm", "whpx", "qtest")


class CLIError(Exception):
    """A command-line error; ``str()`` is the message without the program name."""


class ExitRequest(Exception):
    """A help or version request: print ``text`` and exit 0 (QEMU exits 0 even when the help names
    nothing it knows: then ``error`` goes to stderr)."""

    def __init__(self, text: str, error: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.error = error


class _Builder:
    """What the options said so far (mutable, turned into a Config at the end)."""

    def __init__(self) -> None:
        self.machine: dict[str, object] = {}
        self.machine_props: list[tuple[str, str]] = []
        self.memory_backends: list[str] = []
        #: Chardev labels in QEMU's creation order: -qmp and -chardev as given, then -debugcon's.
        self.chardev_order: list[str] = []
        self.late_chardevs: list[str] = []
        self.accel: list[str] = []
        self.tcg_thread = "multi"
        self.qmp: list[MonitorConfig] = []
        self.chardevs: dict[str, MonitorConfig | CharConfig] = {}
        self.mons: list[tuple[str, str]] = []
        self.server: dict[str, object] = {}
        self.ignored: list[str] = []
        self.actions: list[tuple[str, str]] = []
        self.devices: list[DeviceConfig] = []
        self.fw_cfg: list[FwCfgOption] = []
        self.objects: list[ObjectConfig] = []


def _where(option: str, arg: str | None) -> str:
    return f"-{option} {arg}" if arg is not None else f"-{option}"


def _socket_settings(option: str, arg: str, pairs: list[tuple[str, str]], chardev_id: str) -> MonitorConfig:
    """Common handling of socket chardev parameters (``-qmp`` and ``-chardev socket``)."""
    known = {"path", "fd", "host", "port", "server", "wait", "ipv4", "ipv6", "nodelay", "id", "backend", "to"}
    settings: dict[str, str] = {}
    for key, value in pairs:
        if key not in known:
            raise CLIError(f"{_where(option, arg)}: Invalid parameter '{key}'")
        settings[key] = value
    try:
        server = parse_bool("server", settings["server"]) if "server" in settings else False
        wait = parse_bool("wait", settings["wait"]) if "wait" in settings else True
        ipv4 = parse_bool("ipv4", settings.get("ipv4", "off"))
        ipv6 = parse_bool("ipv6", settings.get("ipv6", "off"))
    except OptionError as exc:
        raise CLIError(f"{_where(option, arg)}: {exc}") from exc
    if not server:
        raise CLIError(f"{_where(option, arg)}: qmpd only listens (server=on); client-mode sockets are not supported")
    if "fd" in settings:
        try:
            fd = int(settings["fd"])
        except ValueError:
            raise CLIError(f"{_where(option, arg)}: Unable to parse FD number {settings['fd']}") from None
        return MonitorConfig(kind=MonitorKind.FD, chardev_id=chardev_id, fd=fd, wait=wait)
    if "path" in settings:
        if not settings["path"]:
            raise CLIError(f"{_where(option, arg)}: Unable to parse FD number ")
        return MonitorConfig(kind=MonitorKind.UNIX, chardev_id=chardev_id, path=settings["path"], wait=wait)
    if "port" in settings:
        try:
            port = int(settings["port"])
        except ValueError:
            raise CLIError(f"{_where(option, arg)}: Parameter 'port' expects a port number") from None
        return MonitorConfig(
            kind=MonitorKind.TCP,
            chardev_id=chardev_id,
            host=settings.get("host") or "0.0.0.0",
            port=port,
            wait=wait,
            ipv4=ipv4,
            ipv6=ipv6,
        )
    raise CLIError(f"{_where(option, arg)}: chardev: socket: no local address given")


def _qmp_compat(arg: str, index: int) -> MonitorConfig:
    """``-qmp`` legacy chardev syntax: ``unix:PATH,...``, ``tcp:HOST:PORT,...``, ``stdio``."""
    chardev_id = f"compat_monitor{index}"
    if arg == "stdio":
        return MonitorConfig(kind=MonitorKind.STDIO, chardev_id=chardev_id)
    if arg.startswith("unix:"):
        pairs = parse(arg[5:], implied="path")
        return _socket_settings("qmp", arg, pairs, chardev_id)
    if arg.startswith("tcp:"):
        rest = arg[4:]
        host, sep, tail = rest.partition(":")
        port, _, options = tail.partition(",")
        if not sep or not port:
            raise CLIError(f"-qmp {arg}: parse error: {arg}")
        pairs = [("host", host), ("port", port), *parse(options)]
        return _socket_settings("qmp", arg, pairs, chardev_id)
    backend = arg.split(":", 1)[0].split(",", 1)[0]
    raise CLIError(f"-qmp {arg}: '{backend}' is not a valid char driver\n{PROG}: -qmp {arg}: parse error: {arg}")


def _opt_qmp(b: _Builder, arg: str) -> None:
    b.qmp.append(_qmp_compat(arg, len(b.qmp)))
    b.chardev_order.append(b.qmp[-1].chardev_id or "")


def _opt_chardev(b: _Builder, arg: str) -> None:
    pairs = parse(arg, implied="backend")
    backend = pairs[0][1] if pairs and pairs[0][0] == "backend" else None
    settings = dict(pairs)
    chardev_id = settings.get("id")
    if backend in ("help", "?"):  # the backends qmpd has, in QEMU's order (QEMU prints a space after the colon)
        raise ExitRequest("Available chardev backend types: \n  stdio\n  null\n  socket\n  file\n")
    if backend is None:
        raise CLIError(f'-chardev {arg}: chardev: "backend" is missing')
    if not chardev_id:
        raise CLIError(f"-chardev {arg}: Parameter 'id' is missing")
    if chardev_id in b.chardevs:
        raise CLIError(f"-chardev {arg}: Duplicate ID '{chardev_id}' for chardev")
    if backend == "socket":
        b.chardevs[chardev_id] = _socket_settings("chardev", arg, pairs[1:], chardev_id)
    elif backend == "stdio":
        b.chardevs[chardev_id] = MonitorConfig(kind=MonitorKind.STDIO, chardev_id=chardev_id)
    elif backend == "file":
        if "path" not in settings:
            raise CLIError(f"-chardev {arg}: chardev: file: no filename given")
        try:
            append = parse_bool("append", settings.get("append", "off"))
        except OptionError as exc:
            raise CLIError(f"-chardev {arg}: {exc}") from None
        b.chardevs[chardev_id] = CharConfig("file", settings["path"], append)
    elif backend == "null":
        b.chardevs[chardev_id] = CharConfig("null")
    else:
        raise CLIError(
            f"-chardev {arg}: chardev backend '{backend}' is not supported by qmpd (socket, stdio, file and null are)"
        )
    b.chardev_order.append(chardev_id)


def _opt_mon(b: _Builder, arg: str) -> None:
    settings = dict(parse(arg, implied="chardev"))
    for key in settings:
        if key not in ("chardev", "mode", "id", "pretty", "default"):
            raise CLIError(f"-mon {arg}: Invalid parameter '{key}'")
    mode = settings.get("mode", "readline")
    if mode != "control":
        raise CLIError(f"-mon {arg}: qmpd provides QMP monitors only (mode=control); use human-monitor-command for HMP")
    if parse_bool("pretty", settings.get("pretty", "off")):
        raise CLIError(f"-mon {arg}: pretty-printed QMP output is not supported")
    b.mons.append((settings.get("chardev", ""), arg))


def _opt_machine(b: _Builder, arg: str) -> None:
    pairs = parse(arg, implied="type")
    for key, value in pairs:
        if key == "type":
            if value in ("help", "?"):
                raise ExitRequest(machine_help())
            b.machine["machine_type"] = value
        elif key in ("help", "?"):
            raise ExitRequest(_machine_options_help(dict(pairs).get("type", "")))
        elif key == "accel":
            b.accel = value.split(":")
        else:
            b.machine_props.append((key, value))


def _machine_options_help(name: str) -> str:
    """``-machine TYPE,help`` (imported only then: the listing needs the QOM types)."""
    from qmpd.machine.help_text import machine_options_help

    machine_type = find_machine_type(name) if name else default_machine_type()
    if machine_type is None:  # QEMU lists the machines instead
        return machine_help()
    return machine_options_help(machine_type.name)


def _opt_object(b: _Builder, arg: str) -> None:
    """An object for /objects, created with the machine; a memory backend's id also serves -machine memory-backend."""
    text = not arg.lstrip().startswith("{")
    if not text:
        try:
            spec = json.loads(arg)
        except ValueError as exc:
            raise CLIError(f"-object {arg}: {exc}") from None
        if not isinstance(spec, dict):
            raise CLIError(f"-object {arg}: JSON object expected")
        settings: dict[str, object] = {str(key): value for key, value in spec.items()}
    else:
        settings = dict(parse(arg, implied="qom-type"))
    qom_type, object_id = settings.pop("qom-type", None), settings.pop("id", None)
    if qom_type is None:
        raise CLIError(f"-object {arg}: Parameter 'qom-type' is missing")
    if not isinstance(qom_type, str):
        raise CLIError(f"-object {arg}: Invalid parameter type for 'qom-type', expected: string")
    if qom_type in ("help", "?") or any(key in ("help", "?") for key in settings):
        raise ExitRequest(_object_help(arg, qom_type))
    if object_id is None:
        raise CLIError(f"-object {arg}: Parameter 'id' is missing")
    if not isinstance(object_id, str):
        raise CLIError(f"-object {arg}: Invalid parameter type for 'id', expected: string")
    if any(existing.id == object_id for existing in b.objects):
        raise CLIError(f"-object {arg}: Duplicate ID '{object_id}' for object")
    if qom_type.startswith("memory-backend-"):
        b.memory_backends.append(object_id)
    b.objects.append(ObjectConfig(qom_type, object_id, tuple(settings.items()), text, arg))


def _object_help(arg: str, qom_type: str) -> str:
    """``-object help`` lists the objects qmpd knows on its command line: the memory backends (whose ids
    ``-machine memory-backend=`` names; qmpd makes none); ``-object TYPE,help`` their properties."""
    from qmpd.machine.help_text import options_text
    from qmpd.qapi.host_tables import host_tables

    types = {name: info for name, info in host_tables()["types"].items() if name.startswith("memory-backend-")}
    if qom_type in ("help", "?"):
        return "List of user creatable objects:\n" + "".join(f"  {name}\n" for name in sorted(types))
    if qom_type not in types:
        raise CLIError(f"-object {arg}: Parameter 'qom-type' does not accept value '{qom_type}'")
    return options_text(qom_type, [entry for entry in types[qom_type]["properties"] if entry["name"] != "type"])


def _opt_accel(b: _Builder, arg: str) -> None:
    pairs = parse(arg, implied="accel")
    settings = dict(pairs)
    if settings.get("accel") in ("help", "?"):
        raise ExitRequest("Accelerators supported in QEMU binary:\ntcg\n")
    b.accel.append(settings.get("accel", "tcg"))
    if "thread" in settings:
        if settings["thread"] not in ("single", "multi"):
            raise CLIError(f"-accel {arg}: Invalid 'thread' setting {settings['thread']}")
        b.tcg_thread = settings["thread"]


def _opt_m(b: _Builder, arg: str) -> None:
    settings = dict(parse(arg, implied="size"))
    for key in settings:
        if key not in ("size", "slots", "maxmem"):
            raise CLIError(f"-m {arg}: Invalid parameter '{key}'")
    try:
        size = parse_size(settings.get("size", "128"), default_suffix="M")
    except OptionError as exc:
        raise CLIError(f"-m {arg}: {exc}") from exc
    b.machine["ram_size"] = size or 128 << 20
    b.machine["ram_size_given"] = True


def _opt_name(b: _Builder, arg: str) -> None:
    settings = dict(parse(arg, implied="guest"))
    for key in settings:
        if key not in ("guest", "process", "debug-threads"):
            raise CLIError(f"-name {arg}: Invalid parameter '{key}'")
    if "guest" in settings:
        b.machine["name"] = settings["guest"]


def _opt_display(b: _Builder, arg: str) -> None:
    kind = parse(arg, implied="type")[0][1]
    if kind in ("help", "?"):
        raise ExitRequest("Available display backend types:\nnone\n")
    if kind != "none":
        raise CLIError(f"-display {arg}: qmpd has no display; only '-display none' is accepted")


def _set_action(b: _Builder, name: str, action: str) -> None:
    b.actions.append((name, action))
    b.machine["actions"] = tuple(b.actions)


def _opt_action(b: _Builder, arg: str) -> None:
    choices = action_choices()
    for key, value in parse(arg):
        if key not in choices:
            raise CLIError(f"-action {arg}: Invalid parameter '{key}'")
        if value not in choices[key]:
            raise CLIError(f"-action {arg}: Parameter '{key}' does not accept value '{value}'")
        _set_action(b, key, value)


#: Devices -device may create, and the properties each takes.
DEVICE_PROPERTIES = {
    "isa-debug-exit": ("iobase", "iosize", "id"),
    "isa-debugcon": ("iobase", "chardev", "readback", "id"),
    "pvpanic": ("ioport", "events", "id"),
}


def _opt_device(b: _Builder, arg: str) -> None:
    pairs = parse(arg, implied="driver")
    driver = pairs[0][1] if pairs and pairs[0][0] == "driver" else ""
    if driver in ("help", "?") or any(key in ("help", "?") for key, _ in pairs[1:]):
        raise ExitRequest(_device_help(arg, driver))
    if driver not in DEVICE_PROPERTIES:
        raise CLIError(
            f"-device {arg}: '{driver}' is not a valid device model name (qmpd creates "
            + ", ".join(DEVICE_PROPERTIES)
            + " from the command line)"
        )
    for key, _ in pairs[1:]:
        if key not in DEVICE_PROPERTIES[driver]:
            raise CLIError(f"-device {arg}: Property '{driver}.{key}' not found")
    b.devices.append(DeviceConfig(driver, tuple(pairs[1:])))


def _device_help(arg: str, driver: str) -> str:
    """``-device help`` or ``-device DRIVER,help`` (imported only then: the listing needs the QOM types)."""
    from qmpd.machine import help_text

    if driver in ("help", "?"):
        return help_text.device_help()
    try:
        return help_text.device_options_help(driver)
    except QMPError as exc:
        raise ExitRequest("", f"-device {arg}: {exc.desc}") from None


def _opt_cpu(b: _Builder, arg: str) -> None:
    if arg in ("help", "?"):
        from qmpd.machine.help_text import cpu_help

        raise ExitRequest(cpu_help())
    b.machine["cpu"] = arg


def _opt_uuid(b: _Builder, arg: str) -> None:
    """``-uuid``: QEMU's format (8-4-4-4-12 hex digits); its bytes in that order go to fw_cfg's UUID item."""
    digits = arg.replace("-", "")
    if len(arg) != 36 or [i for i, c in enumerate(arg) if c == "-"] != [8, 13, 18, 23] or len(digits) != 32:
        raise CLIError(f"-uuid {arg}: failed to parse UUID string: wrong format")
    try:
        b.machine["uuid"] = bytes.fromhex(digits)
    except ValueError:
        raise CLIError(f"-uuid {arg}: failed to parse UUID string: wrong format") from None


def _opt_fw_cfg(b: _Builder, arg: str) -> None:
    """``-fw_cfg [name=]NAME,string=S|file=PATH``: its keys now (as QemuOpts); the rest when the machine is built."""
    values: dict[str, str] = {}
    for key, value in parse(arg, implied="name"):
        if key not in FwCfgOption._fields or key == "arg":
            raise CLIError(f"-fw_cfg {arg}: Invalid parameter '{key}'")
        values[key] = value  # a repeated key: the last one counts, as QemuOpts
    b.fw_cfg.append(FwCfgOption(arg, **values))


def _opt_vcpu_nice(b: _Builder, arg: str) -> None:
    try:
        value = int(arg)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise CLIError(f"--vcpu-nice {arg}: expected a nice value from 0 to 19")
    b.machine["vcpu_nice"] = value


def _opt_debugcon(b: _Builder, arg: str) -> None:
    """``-debugcon dev``: QEMU's shorthand for a debugcon chardev and an isa-debugcon on it."""
    # QEMU names the chardev "debugcon" (query-chardev shows it); a second one gets a number.
    chardev_id = "debugcon" if "debugcon" not in b.chardevs else f"debugcon{len(b.chardevs)}"
    if arg == "stdio":
        b.chardevs[chardev_id] = CharConfig("stdio")
    elif arg == "null" or arg == "none":
        b.chardevs[chardev_id] = CharConfig("null")
    elif arg.startswith("file:"):
        b.chardevs[chardev_id] = CharConfig("file", arg[5:])
    elif arg.startswith("chardev:"):
        chardev_id = arg[8:]
    else:
        raise CLIError(f"-debugcon {arg}: '{arg.split(':', 1)[0]}' is not a valid char driver")
    if not arg.startswith("chardev:"):
        b.late_chardevs.append(chardev_id)
    # QEMU's device has the id "debugcon" (/machine/peripheral/debugcon); qmpd's second one takes its chardev's.
    device_id = "debugcon" if not any(("id", "debugcon") in device.props for device in b.devices) else chardev_id
    b.devices.append(DeviceConfig("isa-debugcon", (("chardev", chardev_id), ("id", device_id))))


def _opt_log_format(b: _Builder, arg: str) -> None:
    try:
        b.server["log_format"] = LogFormat(arg)
    except ValueError:
        raise CLIError(f"--log-format {arg}: expected 'json' or 'console'") from None


def _opt_log_level(b: _Builder, arg: str) -> None:
    if arg not in ("debug", "info", "warning", "error"):
        raise CLIError(f"--log-level {arg}: expected debug, info, warning or error")
    b.server["log_level"] = arg


def _opt_socket_mode(b: _Builder, arg: str) -> None:
    try:
        b.server["socket_mode"] = int(arg, 8)
    except ValueError:
        raise CLIError(f"--socket-mode {arg}: expected an octal mode such as 0600") from None


def _opt_incoming(b: _Builder, arg: str) -> None:
    if arg != "defer" and not (arg.startswith(("file:", "exec:", "fd:")) and len(arg.split(":", 1)[1]) > 0):
        raise CLIError(
            f"-incoming {arg}: Parameter 'uri' expects a valid migration protocol (file:, exec:, fd: or defer)"
        )
    b.machine["incoming"] = arg


def _opt_max_sessions(b: _Builder, arg: str) -> None:
    if not arg.isdigit() or not 1 <= int(arg) <= 100000:
        raise CLIError(f"--max-sessions {arg}: expected a number from 1 to 100000")
    b.server["max_sessions"] = int(arg)


def _opt_state_dir(b: _Builder, arg: str) -> None:
    if not os.path.isdir(arg):
        raise CLIError(f"--state-dir {arg}: not a directory")
    b.server["state_dir"] = os.path.abspath(arg)


def _opt_http(b: _Builder, arg: str) -> None:
    host, sep, port = arg.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CLIError(f"--http {arg}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    b.server["http"] = (host, int(port))


def _opt_http_token(b: _Builder, arg: str) -> None:
    if len(arg) < 16:
        raise CLIError("--http-token: a token of at least 16 characters is required")
    b.server["http_token"] = arg


def _opt_http_allow_origin(b: _Builder, arg: str) -> None:
    from qmpd.origins import normalize_origin  # here, not at the top: only this option needs it

    origin = normalize_origin(arg)
    if origin is None:
        raise CLIError(f"--http-allow-origin {arg}: expected an origin, e.g. https://console.example:8443")
    known = b.server.get("http_allow_origins", ())
    assert isinstance(known, tuple)
    b.server["http_allow_origins"] = (*known, origin)


def _is_loopback(host: str) -> bool:
    import ipaddress  # here, not at the top: only --http needs it, and it costs start-up time

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _opt_event_loop(b: _Builder, arg: str) -> None:
    if arg not in ("uvloop", "asyncio"):
        raise CLIError(f"--event-loop {arg}: expected 'uvloop' or 'asyncio'")
    b.server["event_loop"] = arg


def _opt_nographic(b: _Builder) -> None:
    """-nographic: fw_cfg's NOGRAPHIC item and the machine's graphics property follow the option, as QEMU's."""
    b.machine["nographic"] = True
    b.machine_props.append(("graphics", "off"))


def _set(section: str, key: str, value: object) -> Callable[[_Builder], None]:
    def apply(b: _Builder) -> None:
        getattr(b, section)[key] = value

    return apply


class _Option:
    __slots__ = ("apply", "help", "takes_arg")

    def __init__(self, takes_arg: bool, apply: Callable[..., None] | None, help: str) -> None:
        self.takes_arg = takes_arg
        self.apply = apply
        self.help = help


_OPTIONS: dict[str, _Option] = {
    "qmp": _Option(True, _opt_qmp, "-qmp unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off | stdio"),
    "chardev": _Option(True, _opt_chardev, "-chardev socket,id=ID,path=PATH|fd=N|host=H,port=P,server=on,wait=off"),
    "mon": _Option(True, _opt_mon, "-mon chardev=ID,mode=control"),
    "machine": _Option(True, _opt_machine, "-machine pc|q35|none[,accel=tcg][,usb=on|off][,acpi=on|off|auto]..."),
    "object": _Option(True, _opt_object, "-object QOM-TYPE,id=ID,... (or JSON): create an object under /objects"),
    "M": _Option(True, _opt_machine, "-M TYPE (same as -machine)"),
    "accel": _Option(True, _opt_accel, "-accel tcg[,thread=multi|single]"),
    "cpu": _Option(True, _opt_cpu, "-cpu MODEL[,feature=on|off,...] | help"),
    "smp": _Option(
        True, lambda b, a: b.machine.__setitem__("smp", a), "-smp [cpus=]N[,sockets=,dies=,cores=,threads=,maxcpus=]"
    ),
    "m": _Option(True, _opt_m, "-m SIZE[M|G] (guest RAM, default 128M)"),
    "S": _Option(False, _set("machine", "start_paused", True), "-S (do not start the vCPUs until 'cont')"),
    "max-sessions": _Option(True, _opt_max_sessions, "--max-sessions N (QMP sessions at once, default 64)"),
    "state-dir": _Option(True, _opt_state_dir, "--state-dir DIR (save the machine on SIGTERM, restore it at start)"),
    "incoming": _Option(True, _opt_incoming, "-incoming file:PATH | exec:CMD | fd:N | defer (load a migration stream)"),
    "nodefaults": _Option(False, _set("machine", "nodefaults", True), "-nodefaults"),
    "name": _Option(True, _opt_name, "-name [guest=]NAME[,debug-threads=on]"),
    "pidfile": _Option(True, lambda b, a: b.server.__setitem__("pidfile", a), "-pidfile FILE"),
    "daemonize": _Option(False, _set("server", "daemonize", True), "-daemonize"),
    "bios": _Option(True, lambda b, a: b.machine.__setitem__("bios", a), "-bios FILE (firmware image)"),
    "kernel": _Option(True, lambda b, a: b.machine.__setitem__("kernel", a), "-kernel FILE (flat binary or ELF64)"),
    "no-shutdown": _Option(False, lambda b: _set_action(b, "shutdown", "pause"), "-no-shutdown"),
    "no-reboot": _Option(False, lambda b: _set_action(b, "reboot", "shutdown"), "-no-reboot"),
    "action": _Option(True, _opt_action, "-action reboot=..,shutdown=..,panic=..,watchdog=.. (as QEMU)"),
    "no-acpi": _Option(False, _set("machine", "acpi", False), "-no-acpi"),
    "nographic": _Option(False, _opt_nographic, "-nographic (no display; fw_cfg and graphics say so)"),
    "display": _Option(True, _opt_display, "-display none"),
    "debugcon": _Option(True, _opt_debugcon, "-debugcon stdio|file:PATH|null|chardev:ID (port 0xe9 output)"),
    "vcpu-nice": _Option(True, _opt_vcpu_nice, "--vcpu-nice N (0-19, default 10: vCPU threads yield to the monitors)"),
    "dump-dir": _Option(
        True, lambda b, a: b.machine.__setitem__("dump_dir", a), "--dump-dir DIR (where memsave/pmemsave may write)"
    ),
    "uuid": _Option(True, _opt_uuid, "-uuid UUID (the machine's UUID: query-uuid, fw_cfg)"),
    "fw_cfg": _Option(True, _opt_fw_cfg, "-fw_cfg [name=]opt/NAME,string=TEXT|file=PATH (an item for the firmware)"),
    "device": _Option(True, _opt_device, "-device isa-debug-exit[,iobase=,iosize=] | isa-debugcon,chardev=ID"),
    "log-format": _Option(True, _opt_log_format, "--log-format json|console"),
    "log-level": _Option(True, _opt_log_level, "--log-level debug|info|warning|error"),
    "log-file": _Option(True, lambda b, a: b.server.__setitem__("log_file", a), "--log-file FILE (default: stderr)"),
    "socket-mode": _Option(True, _opt_socket_mode, "--socket-mode MODE (Unix socket permissions, default 0600)"),
    "event-loop": _Option(True, _opt_event_loop, "--event-loop uvloop|asyncio (default uvloop when installed)"),
    "http": _Option(True, _opt_http, "--http HOST:PORT (QMP over WebSocket, REST, metrics, dashboard)"),
    "http-token": _Option(
        True, _opt_http_token, "--http-token TOKEN (bearer token for --http; or env QMPD_HTTP_TOKEN)"
    ),
    "http-allow-origin": _Option(
        True,
        _opt_http_allow_origin,
        "--http-allow-origin ORIGIN (a web origin besides the front's own that may drive it; repeatable)",
    ),
    "h": _Option(False, None, "-h, --help"),
    "help": _Option(False, None, "-help"),
    "version": _Option(False, None, "-version"),
}
_TAKES_ARG_IGNORED = {"overcommit", "rtc", "boot", "audiodev", "sandbox", "msg", "global"}
for _name in IGNORED_OPTIONS:
    _OPTIONS.setdefault(_name, _Option(_name in _TAKES_ARG_IGNORED, None, f"-{_name} (accepted, ignored)"))


def usage() -> str:
    """``-h`` output."""
    lines = [
        f"qmpd {__version__}: a QMP-compatible machine daemon (speaks QEMU {QEMU_VERSION})",
        "usage: qmpd [options]",
        "",
    ]
    lines += [f"  {option.help}" for name, option in _OPTIONS.items() if name not in IGNORED_OPTIONS]
    lines += ["", "Accepted and ignored (libvirt passes them): " + " ".join(f"-{n}" for n in IGNORED_OPTIONS)]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str]) -> Config:
    """Turn argv (without the program name) into a Config, or raise CLIError/ExitRequest."""
    b = _Builder()
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if not word.startswith("-") or word == "-":
            raise CLIError(f"{word}: invalid option")
        name = word[2:] if word.startswith("--") else word[1:]
        option = _OPTIONS.get(name)
        if option is None:
            raise CLIError(f"-{name}: invalid option")
        arg: str | None = None
        if option.takes_arg:
            if i >= len(argv):
                raise CLIError(f"-{name}: requires an argument")
            arg = argv[i]
            i += 1
        if name in ("h", "help"):
            raise ExitRequest(usage())
        if name == "version":
            raise ExitRequest(f"QEMU emulator version {QEMU_VERSION} (qmpd {__version__})\n")
        if option.apply is None:
            b.ignored.append(name)
        elif arg is None:
            option.apply(b)
        else:
            option.apply(b, arg)
    return _finish(b)


def _finish(b: _Builder) -> Config:
    monitors = list(b.qmp)
    used: set[str] = set()
    for chardev_id, arg in b.mons:
        if chardev_id not in b.chardevs:
            raise CLIError(f'-mon {arg}: chardev "{chardev_id}" not found')
        if chardev_id in used:
            raise CLIError(f"-mon {arg}: Device '{chardev_id}' is in use")
        used.add(chardev_id)
        monitor = b.chardevs[chardev_id]
        if not isinstance(monitor, MonitorConfig):
            raise CLIError(f"-mon {arg}: chardev '{chardev_id}' cannot carry a monitor")
        monitors.append(monitor)
    char_sinks: dict[str, CharConfig] = {}
    for chardev_id, chardev in b.chardevs.items():
        if isinstance(chardev, CharConfig):
            char_sinks[chardev_id] = chardev
        elif chardev.kind is MonitorKind.STDIO and chardev_id not in used:
            char_sinks[chardev_id] = CharConfig("stdio")
    for device in b.devices:
        for key, value in device.props:
            if key == "chardev" and value not in char_sinks:
                raise CLIError(
                    f"-device {device.driver}: Property '{device.driver}.chardev' can't find value '{value}'"
                )
    machine_type = find_machine_type(str(b.machine.get("machine_type", "pc")))
    if machine_type is None:
        raise CLIError("unsupported machine type\nUse -machine help to list supported machines")
    try:
        settings = parse_machine_properties(machine_type, b.machine_props, b.memory_backends)
    except OptionError as exc:
        raise CLIError(str(exc)) from None
    if settings.get("acpi") == "off":
        b.machine["acpi"] = False
    accel = tuple(b.accel) or ("tcg",)
    for name in accel:
        if name not in _ACCELS:
            raise CLIError(f"invalid accelerator {name}")
    if "tcg" not in accel:
        raise CLIError(f"-accel {accel[0]}: failed to initialize {accel[0]}: qmpd provides the tcg accelerator only")
    for monitor in monitors:
        if monitor.kind is MonitorKind.STDIO and b.server.get("daemonize"):
            raise CLIError("-daemonize: a monitor on stdio cannot be used with -daemonize")
    if "http" in b.server and "http_token" not in b.server and os.environ.get("QMPD_HTTP_TOKEN"):
        _opt_http_token(b, os.environ["QMPD_HTTP_TOKEN"])
    state_dir = b.server.get("state_dir")
    if isinstance(state_dir, str) and os.path.exists(os.path.join(state_dir, STATE_FILE)):
        if "incoming" in b.machine:
            raise CLIError("--state-dir: a saved state exists there; -incoming cannot be used with it")
        b.machine["incoming"] = "file:" + os.path.join(state_dir, STATE_FILE)
    http = b.server.get("http")
    if isinstance(http, tuple) and not _is_loopback(http[0]) and "http_token" not in b.server:
        raise CLIError(f"--http {http[0]}:{http[1]}: binding beyond loopback requires --http-token")
    machine = MachineConfig()._replace(
        **b.machine,  # type: ignore[arg-type]
        machine_settings=tuple(settings.items()),
        devices=tuple(b.devices),
        fw_cfg=tuple(b.fw_cfg),
        objects=tuple(b.objects),
        chardevs=tuple(char_sinks.items()),
        accel=accel,
        tcg_thread=b.tcg_thread,
    )
    # Absolute now: -daemonize changes directory later.
    machine = machine._replace(dump_dir=os.path.abspath(machine.dump_dir))
    server = ServerConfig()._replace(
        monitors=tuple(monitors),
        chardev_labels=(*b.chardev_order, *b.late_chardevs),
        **b.server,  # type: ignore[arg-type]
    )
    return Config(machine=machine, server=server, ignored=tuple(b.ignored))


def option_names() -> tuple[str, ...]:
    """Every option qmpd implements (without the leading dashes)."""
    return tuple(_OPTIONS)


def parse_or_exit(argv: Sequence[str]) -> Config:
    """parse_args for ``main``: print QEMU-style errors and exit as QEMU does."""
    try:
        return parse_args(argv)
    except ExitRequest as request:
        sys.stdout.write(request.text)
        if request.error is not None:
            sys.stderr.write(f"{PROG}: {request.error}\n")
        raise SystemExit(0) from None
    except CLIError as error:
        sys.stderr.write(f"{PROG}: {error}\n")
        raise SystemExit(1) from None
