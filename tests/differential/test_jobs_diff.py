"""QEMU's job commands against qemu-system-x86_64 7.2: the same signatures and the same answers.

libvirt sends ``query-jobs`` when it reconnects to a running domain (after a libvirtd restart); a refusal
makes it give the domain up, so these answers matter even though qmpd never runs a job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, resolved_signature, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
JOB_COMMANDS = ["query-jobs", "job-pause", "job-resume", "job-cancel", "job-complete", "job-dismiss", "job-finalize"]
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("query-jobs", {}),
    *[(verb, {"id": "no-such-job"}) for verb in JOB_COMMANDS[1:]],
    ("job-cancel", {}),
    ("job-cancel", {"id": 1}),
    ("job-cancel", {"id": "x", "force": True}),
    ("query-jobs", {"id": "x"}),
]


def _answers(server: Server) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with RawClient(server.socket_path, timeout=30) as client:
        client.negotiate()
        replies = [client.execute(name, args) for name, args in REQUESTS]
        schema = client.execute("query-qmp-schema", {})["return"]
    return replies, schema


def test_job_commands_answer_as_qemu(tmp_path: Path) -> None:
    argv = ["-S", "-nodefaults", "-machine", "pc"]
    qemu = start_qemu(argv, tmp_path, "qemu")
    try:
        expected, qemu_schema = _answers(qemu)
    finally:
        qemu.stop()
    qmpd = start_qmpd(argv, tmp_path, "qmpd")
    try:
        actual, qmpd_schema = _answers(qmpd)
    finally:
        qmpd.stop()
    assert actual == expected
    assert actual[0] == {"return": []}
    for name in JOB_COMMANDS:
        assert resolved_signature(qmpd_schema, name) == resolved_signature(qemu_schema, name), name
