"""The QEMU command line subset: syntax, defaults and QEMU's error texts."""

from __future__ import annotations

import pytest

from qmpd.cli import IGNORED_OPTIONS, CLIError, ExitRequest, parse_args
from qmpd.config import CharConfig, LogFormat, MonitorKind


def test_libvirt_probe_argv() -> None:
    config = parse_args(
        [
            "-S",
            "-no-user-config",
            "-nodefaults",
            "-nographic",
            "-machine",
            "none,accel=kvm:tcg",
            "-qmp",
            "unix:/tmp/qmp.monitor,server=on,wait=off",
            "-pidfile",
            "/tmp/qmp.pid",
            "-daemonize",
        ]
    )
    assert config.machine.machine_type == "none"
    assert config.machine.accel == ("kvm", "tcg")
    assert config.machine.start_paused and config.machine.nodefaults
    (monitor,) = config.server.monitors
    assert (monitor.kind, monitor.path, monitor.wait) == (MonitorKind.UNIX, "/tmp/qmp.monitor", False)
    assert config.server.pidfile == "/tmp/qmp.pid" and config.server.daemonize


def test_libvirt_start_argv() -> None:
    argv = [
        "-name", "guest=qmpd-test,debug-threads=on", "-S",
        "-object", '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/x/master-key.aes"}',
        "-machine", "pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram", "-accel", "tcg",
        "-cpu", "Haswell", "-m", "128", "-object", '{"qom-type":"memory-backend-ram","id":"pc.ram","size":134217728}',
        "-overcommit", "mem-lock=off", "-smp", "1,maxcpus=4,sockets=2,dies=1,cores=2,threads=1",
        "-uuid", "0f7e1b42-0000-0000-0000-000000000000", "-display", "none", "-no-user-config", "-nodefaults",
        "-chardev", "socket,id=charmonitor,fd=24,server=on,wait=off",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-rtc", "base=utc", "-no-shutdown", "-boot", "strict=on", "-audiodev", '{"id":"audio1","driver":"none"}',
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny", "-msg", "timestamp=on",
    ]  # fmt: skip
    config = parse_args(argv)
    assert config.machine.name == "qmpd-test"
    assert config.machine.machine_type == "pc-i440fx-7.2"
    assert config.machine.cpu == "Haswell" and config.machine.ram_size == 128 << 20
    assert config.machine.smp == "1,maxcpus=4,sockets=2,dies=1,cores=2,threads=1"
    assert config.machine.actions == (("shutdown", "pause"),)
    (monitor,) = config.server.monitors
    assert (monitor.kind, monitor.fd, monitor.chardev_id) == (MonitorKind.FD, 24, "charmonitor")
    assert set(config.ignored) <= set(IGNORED_OPTIONS)
    assert config.machine.uuid == bytes.fromhex("0f7e1b42" + "0" * 24)
    assert "sandbox" in config.ignored and "object" not in config.ignored
    assert dict(config.machine.machine_settings) == {
        "usb": False,
        "dump-guest-core": False,
        "memory-backend": "/objects/pc.ram",
    }
    assert [(o.qom_type, o.id, o.text) for o in config.machine.objects] == [
        ("secret", "masterKey0", False),
        ("memory-backend-ram", "pc.ram", False),
    ]
    assert dict(config.machine.objects[1].props) == {"size": 134217728}


def test_several_monitors_and_double_dash_spelling() -> None:
    config = parse_args(
        [
            "--qmp", "unix:/tmp/a.sock,server=on,wait=off",
            "-qmp", "tcp:127.0.0.1:4444,server=on,wait=off",
            "-qmp", "unix:/tmp/b.sock,server,nowait",
            "--log-format", "json", "--log-level", "debug",
        ]
    )  # fmt: skip
    kinds = [(m.kind, m.path or m.port) for m in config.server.monitors]
    assert kinds == [(MonitorKind.UNIX, "/tmp/a.sock"), (MonitorKind.TCP, 4444), (MonitorKind.UNIX, "/tmp/b.sock")]
    assert config.server.monitors[2].wait is False
    assert config.server.log_format is LogFormat.JSON and config.server.log_level == "debug"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-foo"], "-foo: invalid option"),
        (["-Sx"], "-Sx: invalid option"),
        (["stray"], "stray: invalid option"),
        (["-m"], "-m: requires an argument"),
        (["-name"], "-name: requires an argument"),
        (["-m", "foo"], "-m foo: Parameter 'size' expects a non-negative number below 2^64\n"),
        (["-qmp", "foo"], "-qmp foo: 'foo' is not a valid char driver\nqmpd: -qmp foo: parse error: foo"),
        (["-qmp", "tcp:localhost"], "-qmp tcp:localhost: parse error: tcp:localhost"),
        (["-qmp", "unix:/x,server=on,bogus=1"], "-qmp unix:/x,server=on,bogus=1: Invalid parameter 'bogus'"),
        (["-qmp", "unix:/x,server=maybe"], "-qmp unix:/x,server=maybe: Parameter 'server' expects 'on' or 'off'"),
        (["-machine", "nosuch"], "unsupported machine type\nUse -machine help to list supported machines"),
        (["-machine", "none,accel=foo"], "invalid accelerator foo"),
        (["-mon", "chardev=zz,mode=control"], '-mon chardev=zz,mode=control: chardev "zz" not found'),
        (["-chardev", "socket,path=/x,server=on"], "-chardev socket,path=/x,server=on: Parameter 'id' is missing"),
        (["-machine", "pc,foo=bar"], "Property 'pc-i440fx-7.2-machine.foo' not found"),
        (["-machine", "none,acpi=off"], "Property 'none-machine.acpi' not found"),
        (["-machine", "none,usb=maybe"], "Parameter 'usb' expects 'on' or 'off'"),
        (["-machine", "q35,acpi=maybe"], "Parameter 'acpi' does not accept value 'maybe'"),
        (["-machine", "pc,memory-backend=pc.ram"], "Memory backend 'pc.ram' not found"),
        (["-object", "id=x"], "-object id=x: Parameter 'qom-type' is missing"),
        (["-object", "secret,data=x"], "-object secret,data=x: Parameter 'id' is missing"),
        (
            ["-object", "secret,id=s,data=x", "-object", '{"qom-type":"secret","id":"s"}'],
            """-object {"qom-type":"secret","id":"s"}: Duplicate ID 's' for object""",
        ),
        (["-action", "panic=foo"], "-action panic=foo: Parameter 'panic' does not accept value 'foo'"),
        (["-action", "foo=bar"], "-action foo=bar: Invalid parameter 'foo'"),
        (["-action", "reboot"], "-action reboot: Parameter 'reboot' does not accept value 'on'"),
        (["-uuid", "{4f1c3a9e-5b2d-4c8e-9a7f-0e6d2b1c3a4f}"], "-uuid {4f1c3a9e-5b2d-4c8e-9a7f-0e6d2b1c3a4f}: failed"),
        (["-uuid", "4f1c3a9e5b2d4c8e9a7f0e6d2b1c3a4f"], "-uuid 4f1c3a9e5b2d4c8e9a7f0e6d2b1c3a4f: failed to parse UUID"),
        (["-uuid", "g"], "-uuid g: failed to parse UUID string: wrong format"),
    ],
)
def test_errors_use_qemu_wording(argv: list[str], message: str) -> None:
    with pytest.raises(CLIError) as raised:
        parse_args(argv)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    "argv",
    [
        ["-qmp", "unix:/x"],  # client mode
        ["-mon", "chardev=c"],  # readline (HMP) monitor
        ["-display", "gtk"],
        ["-device", "e1000"],
        ["-accel", "kvm"],
        ["--log-format", "xml"],
    ],
)
def test_unsupported_options_are_refused_clearly(argv: list[str]) -> None:
    if argv[0] == "-mon":
        argv = ["-chardev", "socket,id=c,path=/tmp/c.sock,server=on,wait=off", *argv]
    with pytest.raises(CLIError):
        parse_args(argv)


def test_help_and_version_exit_zero() -> None:
    with pytest.raises(ExitRequest) as help_request:
        parse_args(["-h"])
    assert "-qmp unix:PATH" in help_request.value.text
    with pytest.raises(ExitRequest) as version:
        parse_args(["--version"])
    assert version.value.text.startswith("QEMU emulator version 7.2.")
    with pytest.raises(ExitRequest) as machines:
        parse_args(["-machine", "help"])
    assert "pc-i440fx-7.2" in machines.value.text


def test_machine_properties_and_memory_backends() -> None:
    config = parse_args(
        ["-object", "memory-backend-ram,id=pc.ram,size=128M", "-machine", "q35,memory-backend=pc.ram,acpi=off"]
    )
    assert dict(config.machine.machine_settings) == {"memory-backend": "/objects/pc.ram", "acpi": "off"}
    assert config.machine.acpi is False
    config = parse_args(["-machine", "pc,mem-merge=off,suppress-vmdesc=on,acpi=on"])
    assert dict(config.machine.machine_settings) == {"mem-merge": False, "suppress-vmdesc": True, "acpi": "on"}
    assert config.machine.acpi is True


def test_memory_sizes() -> None:
    assert parse_args(["-m", "256"]).machine.ram_size == 256 << 20
    assert parse_args(["-m", "1G"]).machine.ram_size == 1 << 30
    assert parse_args(["-m", "size=64M,slots=2,maxmem=1G"]).machine.ram_size == 64 << 20
    assert parse_args(["-m", "256"]).machine.ram_size_given and not parse_args([]).machine.ram_size_given


def test_guest_devices_and_qmpd_machine_options() -> None:
    config = parse_args(
        [
            "-debugcon", "file:/tmp/dc.log", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-accel", "tcg,thread=single", "--vcpu-nice", "0", "--dump-dir", "dumps",
        ]
    )  # fmt: skip
    machine = config.machine
    assert [device.driver for device in machine.devices] == ["isa-debugcon", "isa-debug-exit"]
    assert dict(machine.devices[1].props) == {"iobase": "0xf4", "iosize": "0x04"}
    assert dict(machine.chardevs)[dict(machine.devices[0].props)["chardev"]] == CharConfig("file", "/tmp/dc.log")
    assert machine.tcg_thread == "single"
    assert machine.vcpu_nice == 0 and parse_args([]).machine.vcpu_nice == 10
    assert machine.dump_dir.startswith("/") and machine.dump_dir.endswith("/dumps")
    for bad in ("20", "-1", "x"):
        with pytest.raises(CLIError, match="--vcpu-nice"):
            parse_args(["--vcpu-nice", bad])
    with pytest.raises(CLIError, match="Invalid 'thread' setting"):
        parse_args(["-accel", "tcg,thread=many"])


def test_run_state_actions_in_order() -> None:
    config = parse_args(["-no-shutdown", "-action", "panic=none,reboot=shutdown", "-no-reboot"])
    assert config.machine.actions == (
        ("shutdown", "pause"),
        ("panic", "none"),
        ("reboot", "shutdown"),
        ("reboot", "shutdown"),
    )
    assert parse_args([]).machine.actions == ()


def test_help_requests_print_qemus_lists() -> None:
    from qmpd.cli import DEVICE_PROPERTIES
    from qmpd.cpu.models import cpu_properties, load_table
    from qmpd.machine.help_text import BOARD_DEVICES

    with pytest.raises(ExitRequest) as cpus:
        parse_args(["-cpu", "help"])
    assert cpus.value.text.startswith("Available CPUs:\nx86 486                   (alias configured by machine type)\n")
    assert "x86 Haswell-v1            Intel Core Processor (Haswell)\n" in cpus.value.text
    assert cpus.value.text.endswith(" xtpr\n\n")
    with pytest.raises(ExitRequest) as devices:
        parse_args(["-device", "help"])
    assert devices.value.text.startswith('Misc devices:\nname "isa-debug-exit", bus ISA\n')
    with pytest.raises(ExitRequest) as options:
        parse_args(["-device", "isa-debugcon,help"])
    assert options.value.text == (
        "isa-debugcon options:\n  chardev=<str>          - ID of a chardev to use as a backend\n"
        "  iobase=<uint32>        -  (default: 233)\n  readback=<uint32>      -  (default: 233)\n"
    )
    with pytest.raises(ExitRequest) as objects:
        parse_args(["-object", "help"])  # once taken for an object of type 'help' and ignored: qmpd started
    assert objects.value.text.startswith("List of user creatable objects:\n  memory-backend-file\n")
    with pytest.raises(ExitRequest) as backend:
        parse_args(["-object", "memory-backend-ram,help"])
    assert "  size=<int>             - Size of the memory region (ex: 500M)\n" in backend.value.text
    for argv, start in (
        (["-machine", "pc,help"], "pc-i440fx-7.2-machine options:\n"),
        (["-machine", "nosuch,help"], "Supported machines are:\n"),
        (["-chardev", "help"], "Available chardev backend types: \n  stdio\n"),
        (["-display", "help"], "Available display backend types:\nnone\n"),
    ):
        with pytest.raises(ExitRequest) as listing:
            parse_args(argv)
        assert listing.value.text.startswith(start), argv
    with pytest.raises(ExitRequest) as unknown:
        parse_args(["-device", "nosuch,help"])
    assert (unknown.value.text, unknown.value.error) == ("", "-device nosuch,help: Device 'nosuch' not found")
    # One truth: what -device creates is what its help lists; every flag -cpu help names is a CPU property.
    assert {name: {p.name for p in device.properties} | {"id"} for name, device in BOARD_DEVICES.items()} == {
        name: set(props) for name, props in DEVICE_PROPERTIES.items()
    }
    assert set(load_table("x86_cpu_flags.json")["flags"]) <= {p.name for p in cpu_properties()}


def test_a_file_chardev_appends_only_when_asked() -> None:
    """QEMU truncates a file chardev (and -debugcon file:) unless ``append=on``; its error for a bad value."""
    config = parse_args(["-chardev", "file,id=c,path=/tmp/x,append=on", "-debugcon", "file:/tmp/y"])
    chardevs = dict(config.machine.chardevs)
    assert chardevs["c"].append is True and chardevs["debugcon"].append is False
    with pytest.raises(CLIError, match="Parameter 'append' expects 'on' or 'off'"):
        parse_args(["-chardev", "file,id=c,path=/tmp/x,append=maybe"])
