"""Passed descriptors and migration parameters against qemu-system-x86_64 7.2: the same bytes, the same answers.

Both servers get the same requests over a Unix socket, each carrying the descriptors listed
with it (``socket.send_fds``); replies must be equal once descriptor numbers (which differ between
two processes) are masked.  Both run under ``-S``: QEMU 7.2 then keeps descriptors that
``remove-fd`` removed, and lists them.  The commands' query-qmp-schema signatures must match too.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, resolved_signature, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
ARGV = ["-S", "-nodefaults", "-machine", "none"]
COMMANDS = (
    "getfd",
    "closefd",
    "add-fd",
    "remove-fd",
    "query-fdsets",
    "migrate-set-parameters",
    "query-migrate-parameters",
)
SET = "migrate-set-parameters"
HMP = "human-monitor-command"
#: (command, arguments, how many descriptors the message carries)
REQUESTS: list[tuple[str, dict[str, Any] | None, int]] = [
    ("getfd", {"fdname": "a"}, 0),
    ("getfd", {"fdname": "a"}, 1),
    ("getfd", {"fdname": "a"}, 1),
    ("getfd", {"fdname": "1a"}, 1),
    ("getfd", {"fdname": "1a"}, 0),
    ("getfd", {"fdname": ""}, 1),
    ("getfd", {"fdname": "two"}, 2),
    ("getfd", {"fdname": "three"}, 0),
    # HMP through human-monitor-command: a monitor of its own, which never receives descriptors and
    # does not see the QMP session's names.
    (HMP, {"command-line": "getfd h"}, 1),
    (HMP, {"command-line": "getfd h"}, 0),
    (HMP, {"command-line": "getfd 1h"}, 1),
    (HMP, {"command-line": "closefd two"}, 0),
    ("closefd", {"fdname": "two"}, 0),
    (HMP, {"command-line": "closefd h"}, 0),
    (HMP, {"command-line": "getfd"}, 0),
    (HMP, {"command-line": "closefd"}, 0),
    (HMP, {"command-line": "getfd a b"}, 0),
    (HMP, {"command-line": "help getfd"}, 0),
    (HMP, {"command-line": "help closefd"}, 0),
    ("query-status", None, 1),
    ("getfd", {"fdname": "later"}, 0),
    ("getfd", {"fdname": "again"}, 0),
    ("closefd", {"fdname": "nosuch"}, 0),
    ("closefd", {"fdname": "a"}, 0),
    ("closefd", {"fdname": "a"}, 0),
    ("closefd", {}, 0),
    ("getfd", {"fdname": 5}, 1),
    ("add-fd", None, 0),
    ("add-fd", {}, 1),
    ("add-fd", {"opaque": "hello"}, 1),
    ("add-fd", {"fdset-id": 1, "opaque": "x"}, 1),
    ("add-fd", {"fdset-id": 7}, 1),
    ("add-fd", {"fdset-id": -1}, 1),
    ("add-fd", {"fdset-id": 3}, 0),
    ("add-fd", {}, 1),
    ("query-fdsets", None, 0),
    ("remove-fd", {"fdset-id": 1, "fd": 999}, 0),
    ("remove-fd", {"fdset-id": 99}, 0),
    ("remove-fd", {"fdset-id": 99, "fd": 3}, 0),
    ("remove-fd", {}, 0),
    ("remove-fd", {"fdset-id": 7}, 0),
    ("query-fdsets", None, 0),
    ("dump-guest-memory", {"paging": False, "protocol": "fd:nosuch"}, 0),
    ("migrate", {"uri": "fd:nosuch"}, 0),
    ("query-migrate", None, 0),
    ("query-migrate-parameters", None, 0),
    (SET, {"max-bandwidth": -1}, 0),
    (SET, {"downtime-limit": 2000001}, 0),
    (SET, {"downtime-limit": -1}, 0),
    (SET, {"downtime-limit": 2000000, "max-bandwidth": 1000}, 0),
    (SET, {"compress-level": 10}, 0),
    (SET, {"compress-level": 256}, 0),
    (SET, {"compress-threads": 0}, 0),
    (SET, {"decompress-threads": 0}, 0),
    (SET, {"throttle-trigger-threshold": 101}, 0),
    (SET, {"cpu-throttle-initial": 0}, 0),
    (SET, {"cpu-throttle-increment": 100}, 0),
    (SET, {"multifd-channels": 0}, 0),
    (SET, {"multifd-zlib-level": 10}, 0),
    (SET, {"multifd-zstd-level": 21}, 0),
    (SET, {"xbzrle-cache-size": 4095}, 0),
    (SET, {"xbzrle-cache-size": 12288}, 0),
    (SET, {"max-cpu-throttle": 10}, 0),
    (SET, {"cpu-throttle-initial": 50, "max-cpu-throttle": 40}, 0),
    (SET, {"announce-initial": 100001}, 0),
    (SET, {"announce-max": 100001}, 0),
    (SET, {"announce-rounds": 1001}, 0),
    (SET, {"announce-step": 0}, 0),
    (SET, {"announce-step": 10001}, 0),
    (SET, {"multifd-compression": "lz4"}, 0),
    (SET, {"tls-creds": None, "tls-hostname": "h", "tls-authz": "a"}, 0),
    (SET, {"tls-creds": 5}, 0),
    (SET, {"bogus": 1}, 0),
    (SET, {"cpu-throttle-tailslow": True, "xbzrle-cache-size": 1 << 20, "max-postcopy-bandwidth": 7}, 0),
    ("query-migrate-parameters", None, 0),
]
_FD_NUMBER = re.compile(rb'"fd": \d+')


def _session(server: Server) -> tuple[list[bytes], list[dict[str, Any]]]:
    read_end, write_end = os.pipe()
    lines: list[bytes] = []
    try:
        with RawClient(server.socket_path, timeout=30) as client:
            client.negotiate()
            for request in REQUESTS:
                name, arguments, count = request
                message: dict[str, Any] = {"execute": name}
                if arguments is not None:
                    message["arguments"] = arguments
                fds = [read_end, write_end][:count]
                socket.send_fds(client.sock, [json.dumps(message).encode()], fds)
                lines.append(_FD_NUMBER.sub(b'"fd": N', client.line(timeout=30)))
            schema: list[dict[str, Any]] = client.execute("query-qmp-schema")["return"]
    finally:
        os.close(read_end)
        os.close(write_end)
    return lines, schema


def test_fd_commands_and_migration_parameters_match_qemu(tmp_path: Path) -> None:
    runs: dict[str, tuple[list[bytes], list[dict[str, Any]]]] = {}
    for name, start in (("qemu", start_qemu), ("qmpd", start_qmpd)):
        workdir = tmp_path / name
        workdir.mkdir()
        server = start(ARGV, workdir, name)
        try:
            runs[name] = _session(server)
        finally:
            server.stop()
    (qemu_lines, qemu_schema), (qmpd_lines, qmpd_schema) = runs["qemu"], runs["qmpd"]
    differences = [
        (request, theirs, ours)
        for request, theirs, ours in zip(REQUESTS, qemu_lines, qmpd_lines, strict=True)
        if ours != theirs
    ]
    assert differences == []
    for command in COMMANDS:
        assert resolved_signature(qmpd_schema, command) == resolved_signature(qemu_schema, command), command
