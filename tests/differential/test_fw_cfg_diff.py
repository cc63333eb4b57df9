"""-fw_cfg and /machine/fw_cfg against QEMU 7.2: the same errors and warnings, the same QOM answers.

(What a guest reads of fw_cfg is compared in test_firmware_diff.py, with the firmware's FWCFG_DUMP variant.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import QEMU_BINARY, REPO, RawClient, qmpd_command, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
LONG = "opt/" + "a" * 52

#: -fw_cfg arguments (and the machine) that QEMU refuses, or warns about before a refusal.
BAD = [
    ("pc", ["string=x"]),
    ("pc", ["name=opt/a"]),
    ("pc", ["name=,string=x"]),
    ("pc", ["name=opt/a,string="]),
    ("pc", ["name=opt/a,string=x,file=/etc/hostname"]),
    ("pc", ["name=opt/a,bogus=1,string=x"]),
    ("pc", [f"name={LONG},string=x"]),
    ("q35", ["name=opt/a,file=/nonexistent/file"]),
    ("q35", ["name=opt/a,file=/tmp"]),
    ("pc", ["name=opt/a,gen_id=g"]),
    ("pc", ["name=opt/a,string=x", "name=opt/a,string=y"]),
    ("pc", ["foo,string=x", "foo,string=y"]),  # two warnings, then the duplicate
    ("none", ["name=opt/a,string=x"]),
]
#: -uuid values QEMU refuses.
BAD_UUIDS = ["bogus", "0f7e1b42-0001-0203-0405-06070809abc", "0f7e1b42-0001-0203-0405+06070809abcd", "z" * 36]


def _stderr(
    binary: list[str], machine: str, args: list[str], tmp_path: Path, option: str = "-fw_cfg"
) -> tuple[int | None, list[str]]:
    argv = [*binary, "-machine", machine, "-S", "-nodefaults", "-qmp", f"unix:{tmp_path}/s.sock,server=on,wait=off"]
    argv += [word for arg in args for word in (option, arg)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=REPO, env={"PYTHONPATH": str(REPO)})
    return result.returncode, [line.split(": ", 1)[1] for line in result.stderr.splitlines()]


@pytest.mark.parametrize(("machine", "args"), BAD)
def test_command_line_errors_and_warnings_are_qemus(tmp_path: Path, machine: str, args: list[str]) -> None:
    assert QEMU_BINARY is not None
    qemu = _stderr([QEMU_BINARY, "-nographic"], machine, args, tmp_path)
    qmpd = _stderr(qmpd_command(), machine, args, tmp_path)
    assert qmpd == qemu
    assert qemu[0] == 1 and qemu[1]


@pytest.mark.parametrize("uuid", BAD_UUIDS)
def test_uuid_errors_are_qemus(tmp_path: Path, uuid: str) -> None:
    assert QEMU_BINARY is not None
    qemu = _stderr([QEMU_BINARY, "-nographic"], "pc", [uuid], tmp_path, "-uuid")
    assert _stderr(qmpd_command(), "pc", [uuid], tmp_path, "-uuid") == qemu
    assert qemu[0] == 1


QOM = [
    ("qom-get", {"path": "/machine/fw_cfg", "property": "type"}),
    ("qom-get", {"path": "/machine/fw_cfg", "property": "x-file-slots"}),
    ("qom-get", {"path": "/machine/fw_cfg", "property": "dma_enabled"}),
    ("qom-get", {"path": "/machine/fw_cfg", "property": "acpi-mr-restore"}),
    ("qom-get", {"path": "/machine/fw_cfg", "property": "realized"}),
    ("qom-get", {"path": "/machine/fw_cfg", "property": "hotpluggable"}),
    ("qom-set", {"path": "/machine/fw_cfg", "property": "x-file-slots", "value": 5}),
    ("qom-set", {"path": "/machine/fw_cfg", "property": "dma_enabled", "value": False}),
    ("qom-get", {"path": "/machine/fw_cfg", "property": "nosuch"}),
    ("device-list-properties", {"typename": "fw_cfg_io"}),
    ("device-list-properties", {"typename": "fw_cfg_mem"}),
    ("qom-list-properties", {"typename": "fw_cfg"}),
    ("qom-list-types", {"implements": "fw_cfg"}),
    ("device_add", {"driver": "fw_cfg_io"}),
    ("device_del", {"id": "/machine/fw_cfg"}),
    ("device_del", {"id": "/machine/unattached/device[1]"}),  # kvmvapic: on the system bus too
]


def _qom_answers(server_start: Any, machine: str, tmp_path: Path) -> tuple[list[Any], list[str]]:
    server = server_start(["-machine", machine, "-S", "-nodefaults", "-fw_cfg", "opt/a,string=x"], tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            replies = [client.execute(name, arguments) for name, arguments in QOM]
            listed = client.execute("qom-list", {"path": "/machine/fw_cfg"})["return"]
            machine_children = client.execute("qom-list", {"path": "/machine"})["return"]
    finally:
        server.stop()
    # qmpd has no memory regions: QEMU's child<memory-region> entries are left out of the comparison
    names = [prop["name"] for prop in listed if prop["type"] != "child<memory-region>"]
    assert {"name": "fw_cfg", "type": "child<fw_cfg_io>"} in machine_children
    return replies, names


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_the_qom_object_answers_as_qemus(tmp_path: Path, machine: str) -> None:
    (tmp_path / "qemu").mkdir()
    (tmp_path / "qmpd").mkdir()
    qemu = _qom_answers(start_qemu, machine, tmp_path / "qemu")
    qmpd = _qom_answers(start_qmpd, machine, tmp_path / "qmpd")
    assert qmpd == qemu
