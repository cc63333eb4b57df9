"""dump-guest-memory against qemu-system-x86_64 7.2: the same commands, the same answers, the same file shape.

Both run with ``-S -m 128 -smp 2`` in a directory of their own and get the same
command list; replies and events (timestamps masked) must be equal, with the
size of a whole-RAM dump written as RAM (QEMU's also counts its 256 KiB BIOS
ROM).  The files are compared on structure, not memory: where the section and
program headers sit, that the memory follows the notes range after range,
the notes' names and types per CPU, and the QEMUCPUState header.  Known
differences, asserted as such: QEMU's CPUs are still in real mode under -S,
so it writes EM_386 and the 32-bit prstatus where qmpd writes EM_X86_64; QEMU
splits RAM at the PAM ranges and adds the ROM where qmpd has one range;
QEMU 7.2 writes e_ehsize 8; qmpd lists only the elf format.
"""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, Server, mask, read_elf_core, resolved_signature, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
ARGV = ["-S", "-nodefaults", "-machine", "pc", "-m", "128", "-smp", "2"]
DUMP = "dump-guest-memory"
WHOLE = {"paging": False, "protocol": "file:core.elf"}
FILTERED = {"paging": False, "protocol": "file:part.elf", "begin": 655000, "length": 100000}
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("query-dump", {}),
    (DUMP, {"paging": False}),
    (DUMP, {"protocol": "file:x.elf"}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "begin": 0}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "length": 4096}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "format": "bogus"}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "format": "kdump-lzo"}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "format": "kdump-snappy"}),
    (DUMP, {"paging": True, "protocol": "file:x.elf", "format": "kdump-zlib"}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "format": "kdump-zlib", "begin": 0, "length": 1}),
    (DUMP, {"paging": False, "protocol": "bogus:x"}),
    (DUMP, {"paging": False, "protocol": "fd:nosuch"}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "begin": 5, "length": 0}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "begin": -5, "length": 4096}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "begin": 1 << 40, "length": 4096}),
    ("query-dump", {}),
    (DUMP, {"paging": False, "protocol": "file:x.elf", "format": "win-dmp"}),
    (DUMP, WHOLE),
    ("query-dump", {}),
    (DUMP, FILTERED),
    ("query-dump", {}),
    (DUMP, {**WHOLE, "detach": True}),
    ("query-status", {}),
]
#: A whole-RAM dump's size: QEMU's RAM and BIOS ROM, qmpd's RAM.
RAM_SIZES = (b"134479872", b"134217728")


def _masked(line: bytes) -> bytes:
    line = mask(line)
    for size in RAM_SIZES:
        line = line.replace(size, b"RAM")
    return line


def _session(server: Server) -> tuple[list[bytes], dict[str, Any]]:
    """Every line after negotiation (replies and events in order), and the schema."""
    lines: list[bytes] = []
    with RawClient(server.socket_path, timeout=30) as client:
        client.negotiate()
        for name, arguments in REQUESTS:
            client.send(json.dumps({"execute": name, "arguments": arguments}).encode())
            while True:
                line = client.line(timeout=30)
                lines.append(_masked(line))
                if b'"event"' not in line:
                    break
        lines += [_masked(line) for line in client.lines_until(b'"DUMP_COMPLETED"')]
        schema = client.execute("query-qmp-schema")["return"]
        capability = client.execute("query-dump-guest-memory-capability")["return"]
    return lines, {"schema": schema, "capability": capability}


def _structure(path: Path) -> dict[str, Any]:
    """What a core file's layout says, without its memory."""
    data = path.read_bytes()
    core = read_elf_core(data)
    phdrs, shdrs, phoff, shoff = core["phdrs"], core["shdrs"], core["phoff"], core["shoff"]
    ident, e_type, machine, entry, ehsize = core["ident"], core["type"], core["machine"], core["entry"], core["ehsize"]
    shnum, shstrndx, phnum = core["shnum"], core["shstrndx"], core["phnum"]
    _, _, note_offset, _, _, note_size, _, _ = phdrs[0]
    notes = [(name, kind, len(desc), desc[:8] if name == b"QEMU" else b"") for name, kind, desc in core["notes"]]
    loads = phdrs[1:]
    contiguous = all(a[2] + a[5] == b[2] for a, b in itertools.pairwise(loads))
    memory_end = loads[-1][2] + loads[-1][5]
    return {
        "ident": ident, "type": e_type, "entry": entry, "phoff": phoff, "shoff": shoff, "shnum": shnum,
        "shstrndx": shstrndx, "types": [p[0] for p in phdrs][:2],
        "notes_follow_phdrs": note_offset == phoff + 56 * phnum,
        "memory_follows_notes": loads[0][2] == note_offset + note_size, "loads_contiguous": contiguous,
        "vaddr_is_paddr": all(p[3] == p[4] and p[5] == p[6] for p in loads),
        "flags_align": {(p[1], p[7]) for p in phdrs}, "null_section": shdrs[0],
        "strtab": (shdrs[1][:2], shdrs[1][4] == memory_end, data[memory_end:]),
        "notes": [(name, kind, qemu) for name, kind, _, qemu in notes],
        "machine": machine, "ehsize": ehsize, "prstatus_size": notes[0][2], "loads": [(p[4], p[5]) for p in loads],
    }  # fmt: skip


DIFFERENT = ("machine", "ehsize", "prstatus_size", "loads")


def test_dump_commands_and_files_match_qemu(tmp_path: Path) -> None:
    runs: dict[str, tuple[list[bytes], dict[str, Any], Path]] = {}
    for name, start in (("qemu", start_qemu), ("qmpd", start_qmpd)):
        workdir = tmp_path / name
        workdir.mkdir()
        server = start(ARGV, workdir, name)
        try:
            lines, extra = _session(server)
        finally:
            server.stop()
        runs[name] = (lines, extra, workdir)
    qemu_lines, qemu_extra, qemu_dir = runs["qemu"]
    qmpd_lines, qmpd_extra, qmpd_dir = runs["qmpd"]
    assert qmpd_lines == qemu_lines
    assert b'"status": "completed"' in qmpd_lines[-1]
    for entity in (DUMP, "query-dump", "query-dump-guest-memory-capability", "DUMP_COMPLETED"):
        assert resolved_signature(qmpd_extra["schema"], entity) == resolved_signature(qemu_extra["schema"], entity)
    assert qmpd_extra["capability"] == {"formats": ["elf"]}
    assert "elf" in qemu_extra["capability"]["formats"]
    for file in ("core.elf", "part.elf"):
        qemu, qmpd = _structure(qemu_dir / file), _structure(qmpd_dir / file)
        assert {k: v for k, v in qmpd.items() if k not in DIFFERENT} == {
            k: v for k, v in qemu.items() if k not in DIFFERENT
        }, file
        assert qmpd["notes"] == [(b"CORE", 1, b"")] * 2 + [(b"QEMU", 0, struct.pack("<II", 1, 440))] * 2
        assert (qemu["machine"], qmpd["machine"]) == (3, 62)  # EM_386 (real mode under -S), EM_X86_64
        assert (qemu["prstatus_size"], qmpd["prstatus_size"]) == (144, 336)
        assert (qemu["ehsize"], qmpd["ehsize"]) == (8, 64)
    part = [(655000, 100000)]
    assert _structure(qemu_dir / "part.elf")["loads"] == _structure(qmpd_dir / "part.elf")["loads"] == part
    assert _structure(qmpd_dir / "core.elf")["loads"] == [(0, 128 << 20)]
    assert (qmpd_dir / "core.elf").stat().st_mode & 0o777 == (qemu_dir / "core.elf").stat().st_mode & 0o777 == 0o400
