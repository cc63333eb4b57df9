"""What the command line asked for, as frozen values.

``cli`` builds these from a QEMU-style argv; everything else reads them.
Machine settings describe the guest; server settings describe the process
(monitors, logging, pidfile).  They are NamedTuples rather than dataclasses
because they are built before the daemon greets its first client, and
importing dataclasses (and with it inspect) costs more than the rest of
start-up.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import enum
from typing import Any, NamedTuple


class MonitorKind(enum.Enum):
    """How a QMP monitor is reached."""

    UNIX = "unix"
    TCP = "tcp"
    FD = "fd"
    STDIO = "stdio"


class MonitorConfig(NamedTuple):
    """One QMP monitor (a ``-qmp`` or a ``-chardev`` + ``-mon`` pair)."""

    kind: MonitorKind
    #: Chardev id (``-chardev id=``), or a generated one for ``-qmp``.
    chardev_id: str
    path: str | None = None
    host: str | None = None
    port: int | None = None
    fd: int | None = None
    #: ``wait=on``: do not start the machine until a client connected.
    wait: bool = False
    #: ``ipv4=on`` / ``ipv6=on`` restrictions for TCP.
    ipv4: bool = False
    ipv6: bool = False

    def describe(self) -> str:
        """Where to connect, for humans (``make run`` prints it)."""
        if self.kind is MonitorKind.UNIX:
            return f"unix:{self.path}"
        if self.kind is MonitorKind.TCP:
            return f"tcp:{self.host}:{self.port}"
        if self.kind is MonitorKind.FD:
            return f"fd:{self.fd}"
        return "stdio"


class LogFormat(enum.Enum):
    """Log line format."""

    JSON = "json"
    CONSOLE = "console"


class DeviceConfig(NamedTuple):
    """A -device or -debugcon device: its driver and properties."""

    driver: str
    props: tuple[tuple[str, str], ...] = ()


class ObjectConfig(NamedTuple):
    """A -object: created under /objects as object-add would (qmpd.machine.user_objects)."""

    qom_type: str
    id: str
    #: Properties in order: text from ``TYPE,k=v``, JSON values from ``{...}``.
    props: tuple[tuple[str, object], ...] = ()
    #: True for the key=value form (values parsed by each property's type).
    text: bool = True
    #: The option as given, for error messages.
    arg: str = ""


class CharConfig(NamedTuple):
    """A character device backing debugcon: ``file`` (path), ``stdio`` or ``null``."""

    kind: str
    path: str | None = None
    #: ``-chardev file,...,append=on``: keep what the file holds (QEMU truncates it otherwise, as -debugcon file: does).
    append: bool = False


class FwCfgOption(NamedTuple):
    """One ``-fw_cfg [name=]NAME,string=S|file=PATH|gen_id=ID`` as given (checked when the machine is built)."""

    #: The option's argument as written (QEMU's error location).
    arg: str
    name: str = ""
    file: str = ""
    string: str = ""
    gen_id: str = ""


class MachineConfig(NamedTuple):
    """The guest machine."""

    #: Machine type as given (``pc``, ``q35``, ``none``, ``pc-i440fx-7.2`` ...).
    machine_type: str = "pc"
    #: Accelerators to try, in order (``kvm:tcg``); qmpd provides tcg.
    accel: tuple[str, ...] = ("tcg",)
    #: ``-accel tcg,thread=``: ``multi`` runs vCPUs in parallel, ``single`` one at a time.
    tcg_thread: str = "multi"
    #: ``/machine`` properties set with -machine (checked; see qmpd.machine.properties).
    machine_settings: tuple[tuple[str, Any], ...] = ()
    #: ``-cpu`` as given (model and features), or None for the default.
    cpu: str | None = None
    #: ``-smp`` as given, or None for the default.
    smp: str | None = None
    #: Guest RAM in bytes.
    ram_size: int = 128 << 20
    #: Whether ``-m`` was given: QEMU's machine none has no RAM without it (its ``memory`` reads 0).
    ram_size_given: bool = False
    #: ``-name`` guest name.
    name: str | None = None
    #: Firmware image (``-bios``) and kernel (``-kernel``).
    bios: str | None = None
    kernel: str | None = None
    #: ``-incoming``: ``defer``, ``file:PATH`` or ``exec:CMD`` (wait for a migration stream), or None.
    incoming: str | None = None
    #: ``-S``: do not start the vCPUs until ``cont``.
    start_paused: bool = False
    #: ``-action`` (and ``-no-reboot``, ``-no-shutdown``): what guest resets, shutdowns, panics and
    #: watchdog expiries do, as (name, action) pairs; QEMU 7.2's defaults otherwise.
    actions: tuple[tuple[str, str], ...] = ()
    #: False with ``-no-acpi``.
    acpi: bool = True
    #: ``-uuid`` as 16 bytes in the order written (fw_cfg's UUID item; zeros without it, as QEMU).
    uuid: bytes = bytes(16)
    #: ``-nographic`` (qmpd never has a display; only fw_cfg's NOGRAPHIC item reports the option, as QEMU's).
    nographic: bool = False
    #: ``-nodefaults``: no default devices.
    nodefaults: bool = False
    #: Devices from -device and -debugcon, in order.
    devices: tuple[DeviceConfig, ...] = ()
    #: ``-fw_cfg`` items, in order (their files are read when the machine is built).
    fw_cfg: tuple[FwCfgOption, ...] = ()
    #: Objects from -object, in order.
    objects: tuple[ObjectConfig, ...] = ()
    #: Character devices by id (-chardev file/null/stdio), for devices that name one.
    chardevs: tuple[tuple[str, CharConfig], ...] = ()
    #: Where memsave/pmemsave may write (relative names resolve inside it).
    dump_dir: str = "."
    #: Nice value of vCPU threads (0-19): above 0, busy vCPUs yield the host CPU to the monitors.
    vcpu_nice: int = 10


class ServerConfig(NamedTuple):
    """The daemon process."""

    monitors: tuple[MonitorConfig, ...] = ()
    #: Every chardev's label in QEMU's creation order (it decides query-chardev's order).
    chardev_labels: tuple[str, ...] = ()
    pidfile: str | None = None
    daemonize: bool = False
    log_format: LogFormat = LogFormat.CONSOLE
    log_level: str = "info"
    #: Append logs to this file instead of stderr.
    log_file: str | None = None
    #: Permissions of Unix sockets qmpd creates.
    socket_mode: int = 0o600
    #: Event loop implementation: "uvloop" (faster, the default when installed) or "asyncio".
    event_loop: str = "uvloop"
    #: ``--state-dir DIR``: save the machine there on SIGTERM, restore it from there at start.
    state_dir: str | None = None
    #: ``--max-sessions N``: QMP sessions open at once (monitors and WebSockets); more are refused.
    max_sessions: int = 64
    #: ``--http HOST:PORT``: the HTTP/WebSocket front (qmpd.http), or None.
    http: tuple[str, int] | None = None
    #: Bearer token every HTTP request must carry (required when ``http`` is not loopback).
    http_token: str | None = None
    #: ``--http-allow-origin ORIGIN`` (repeatable, normalized): web origins besides the front's own
    #: that may open its WebSockets and change state through it.
    http_allow_origins: tuple[str, ...] = ()


class Config(NamedTuple):
    """Everything the command line said."""

    machine: MachineConfig = MachineConfig()
    server: ServerConfig = ServerConfig()
    #: Options accepted for compatibility but without effect (listed in the README).
    ignored: tuple[str, ...] = ()
