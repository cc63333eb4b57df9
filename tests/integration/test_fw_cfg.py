"""fw_cfg in a running qmpd: a guest writing nonsense to its ports, the command line, and its QOM object."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import REPO, RawClient, build_guest, qmpd_command, read_u64s, start_qmpd, wait_until

#: Where tests/guests/fwcfg_noise.S counts the DMA descriptors that came back with the error bit.
ERRORS = 0x2FF000


def test_a_guest_writing_nonsense_to_fw_cfg_never_hurts_the_daemon(tmp_path: Path) -> None:
    image = build_guest("fwcfg_noise", tmp_path)
    console = tmp_path / "debugcon.txt"
    argv = ["-machine", "pc", "-bios", str(image), "-debugcon", f"file:{console}", "-fw_cfg", "opt/a,string=abcdefgh"]
    server = start_qmpd(argv, tmp_path)
    try:
        with RawClient(server.socket_path, timeout=20) as client:
            client.negotiate()
            wait_until(lambda: console.exists() and console.read_text().endswith("\n"), timeout=60)
            assert console.read_text() == "fw_cfg ok\n"  # the signature still reads right afterwards
            assert read_u64s(client, ERRORS, 1)[0] > 100, "bad DMA targets set the error bit"
            assert client.execute("query-status")["return"]["status"] == "running"
            assert client.execute("qom-get", {"path": "/machine/fw_cfg", "property": "dma_enabled"}) == {"return": True}
            assert not [event for event in client.events if event["event"] == "GUEST_PANICKED"]
        assert server.process.poll() is None
    finally:
        server.stop()


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    command = [*qmpd_command(), "-machine", "pc", "-S", "-nodefaults", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=20, cwd=REPO)


def test_command_line_errors_stop_qmpd_before_it_listens(tmp_path: Path) -> None:
    result = _run("-fw_cfg", "name=opt/a", "-qmp", f"unix:{tmp_path}/s.sock,server=on,wait=off")
    assert result.returncode == 1
    assert result.stderr == "qmpd: -fw_cfg name=opt/a: name, plus exactly one of file, string and gen_id, are needed\n"
    assert not (tmp_path / "s.sock").exists()
    result = _run("-fw_cfg", "opt/a,string=x", "-fw_cfg", "opt/a,file=/etc/hostname")
    assert (result.returncode, result.stderr) == (
        1,
        "qmpd: -fw_cfg opt/a,file=/etc/hostname: duplicate fw_cfg file name: opt/a\n",
    )


def test_a_name_without_opt_is_a_warning_and_machine_none_has_no_fw_cfg(tmp_path: Path) -> None:
    server = start_qmpd(["-machine", "pc", "-S", "-fw_cfg", "etc/x,string=1"], tmp_path)
    try:
        with RawClient(server.socket_path) as client:
            client.negotiate()
            reply = client.execute("qom-get", {"path": "/machine/fw_cfg", "property": "type"})
            assert reply == {"return": "fw_cfg_io"}
    finally:
        server.stop()
    warning = (
        'qmpd: -fw_cfg etc/x,string=1: warning: externally provided fw_cfg item names should be prefixed with "opt/"'
    )
    assert warning in server.stderr().splitlines()
    (tmp_path / "none").mkdir()
    none = start_qmpd(["-machine", "none", "-S"], tmp_path / "none")
    try:
        with RawClient(none.socket_path) as client:
            client.negotiate()
            names = [prop["name"] for prop in client.execute("qom-list", {"path": "/machine"})["return"]]
            assert "fw_cfg" not in names
    finally:
        none.stop()
