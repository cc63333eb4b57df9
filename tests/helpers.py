"""Test helpers: start qmpd or QEMU with an argv, talk to them over raw sockets.

Every read is bounded by a timeout, so a missing reply fails a test instead
of hanging it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QEMU_BINARY = shutil.which("qemu-system-x86_64")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    """A running qmpd or QEMU with one QMP Unix socket."""

    process: subprocess.Popen[bytes]
    socket_path: str
    argv: list[str]
    stderr_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def qmpd_command() -> list[str]:
    return [sys.executable, "-m", "qmpd"]


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, interval: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def wait_for_socket(path: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
                # QEMU serves one client at a time: close at once so the test client comes next.
                return
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not appear")


def start(
    binary: Sequence[str],
    argv: Sequence[str],
    tmp_path: Path,
    name: str = "qmp",
    *,
    extra_qmp: bool = True,
    pass_fds: Sequence[int] = (),
) -> Server:
    sock = str(tmp_path / f"{name}.sock")
    full = [*binary, *argv]
    if extra_qmp:
        full += ["-qmp", f"unix:{sock},server=on,wait=off"]
    stderr_path = tmp_path / f"{name}.stderr"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(stderr_path, "wb") as err:
        # Run in the test's directory: files a server writes (memsave, QEMU's fopen before an error) land there.
        process = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=tmp_path,
            pass_fds=pass_fds,
        )
    server = Server(process, sock, full, stderr_path)
    if extra_qmp:
        try:
            wait_for_socket(sock, process)
        except Exception:
            server.stop()
            raise
    return server


def start_qmpd(argv: Sequence[str], tmp_path: Path, name: str = "qmpd") -> Server:
    return start(qmpd_command(), argv, tmp_path, name)


def start_qemu(argv: Sequence[str], tmp_path: Path, name: str = "qemu") -> Server:
    assert QEMU_BINARY is not None
    return start([QEMU_BINARY, "-nographic"], argv, tmp_path, name)


class RawClient:
    """A bare QMP socket client."""

    #: How long a refused connection is retried: QEMU stops listening while it serves a client, and
    #: wait_for_socket's own probe connection may not have been noticed closed yet.
    REFUSED_RETRY = 5.0

    def __init__(self, address: str | tuple[str, int], timeout: float = 10.0) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        deadline = time.monotonic() + self.REFUSED_RETRY
        while True:
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(address)
                break
            except ConnectionRefusedError:
                self.sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
            except BaseException:
                self.sock.close()  # not left for the garbage collector to warn about in another test
                raise
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, timeout: float | None = None) -> bytes:
        """One CRLF-terminated line (raises socket.timeout / EOFError)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def message(self, timeout: float | None = None) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.line(timeout))
        return value

    def greeting(self) -> dict[str, Any]:
        message = self.message()
        assert "QMP" in message, message
        return message

    def negotiate(self, *capabilities: str) -> None:
        self.greeting()
        args = {"enable": list(capabilities)} if capabilities else {}
        reply = self.execute("qmp_capabilities", args)
        assert reply == {"return": {}}, reply

    def execute(self, name: str, arguments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Send a command; return its reply, stashing events that arrive first."""
        request: dict[str, Any] = {"execute": name, **extra}
        if arguments is not None:
            request["arguments"] = arguments
        self.send(json.dumps(request).encode())
        while True:
            message = self.message()
            if "event" in message:
                self.events.append(message)
                continue
            return message

    def lines_until(self, marker: bytes, limit: int = 100000) -> list[bytes]:
        """Every line up to and including the first containing ``marker``."""
        lines = []
        for _ in range(limit):
            line = self.line()
            lines.append(line)
            if marker in line:
                return lines
        raise AssertionError(f"{marker!r} not seen")

    def drain(self, quiet: float = 0.3) -> list[bytes]:
        """Lines until nothing arrives for ``quiet`` seconds."""
        lines = []
        while True:
            try:
                lines.append(self.line(timeout=quiet))
            except TimeoutError:
                return lines


_TIMESTAMP = re.compile(rb'"timestamp": \{"seconds": \d+, "microseconds": \d+\}')
_VERSION = re.compile(rb'\{"qemu": \{"micro": \d+, "minor": \d+, "major": \d+\}, "package": "[^"]*"\}')
_THREAD_ID = re.compile(rb'"thread-id": \d+')


def mask(line: bytes) -> bytes:
    """Hide what legitimately differs between QEMU and qmpd: times, version, thread ids."""
    line = _TIMESTAMP.sub(b'"timestamp": {"seconds": S, "microseconds": U}', line)
    line = _VERSION.sub(b"VERSION", line)
    return _THREAD_ID.sub(b'"thread-id": T', line)


GUESTS = REPO / "tests" / "guests"


def copy_firmware_sources(build: Path) -> None:
    """Copy the bundled firmware's sources (examples/firmware: .S, .ld, Makefile) into ``build``."""
    for source in sorted((REPO / "examples" / "firmware").iterdir()):
        if source.is_file() and (source.suffix in (".S", ".ld") or source.name == "Makefile"):
            (build / source.name).write_bytes(source.read_bytes())


def build_guest(name: str, out_dir: Path, *, defsym: dict[str, int] | None = None, include: str = "") -> Path:
    """Assemble tests/guests/NAME.S (GNU as) into a flat binary for -bios; ``include`` becomes leaves.inc etc."""
    work = out_dir / f"guest-{name}"
    work.mkdir(exist_ok=True)
    if include:
        (work / "leaves.inc").write_text(include)
    symbols = [f"--defsym={key}={value}" for key, value in (defsym or {}).items()]
    obj = work / f"{name}.o"
    image = work / f"{name}.bin"
    subprocess.run(["as", "--64", *symbols, "-I", str(work), "-o", str(obj), str(GUESTS / f"{name}.S")], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(image)], check=True)
    return image


FIRMWARE_SOURCES = REPO / "examples" / "firmware"


def firmware_variant(out_dir: Path, **symbols: int) -> Path:
    """The bundled firmware built from its sources with ``as --defsym NAME=value`` (its test variants)."""
    build = out_dir / "-".join(["firmware", *(f"{key}{value}" for key, value in symbols.items())])
    build.mkdir()
    for source in FIRMWARE_SOURCES.iterdir():
        if source.is_file():
            shutil.copyfile(source, build / source.name)
    image = build / "firmware.bin"
    asflags = " ".join(f"--defsym {key}={value}" for key, value in symbols.items())
    subprocess.run(["make", "-s", "-C", str(build), f"OUT={image}", f"ASFLAGS={asflags}"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return image


def hmp(client: RawClient, line: str) -> str:
    """Run an HMP command line through human-monitor-command; return its text."""
    reply = client.execute("human-monitor-command", {"command-line": line})
    assert "return" in reply, reply
    text: str = reply["return"]
    return text


def read_u64s(client: RawClient, address: int, count: int) -> list[int]:
    """``count`` little-endian 64-bit words of guest physical memory, read with HMP ``xp``."""
    values: list[int] = []
    for line in hmp(client, f"xp /{count}xg {address:#x}").splitlines():
        _, _, words = line.partition(": ")
        values += [int(word, 16) for word in words.split()]
    assert len(values) == count, values
    return values


def resolved_signature(schema: list[dict[str, Any]], name: str) -> Any:
    """An entity of a ``query-qmp-schema`` answer with every type name replaced by its definition.

    QEMU names its types by numbers that change between builds, so two servers can only be compared on
    what the numbers stand for: members, their order, optionality and types, enum values, features.
    """
    entities = {entry["name"]: entry for entry in schema}

    def resolve(type_name: str, seen: frozenset[str]) -> Any:
        entry = entities[type_name]
        if entry["meta-type"] == "builtin" or type_name in seen:
            return type_name if entry["meta-type"] == "builtin" else f"<recursive {entry['meta-type']}>"
        inner = seen | {type_name}
        shape = {key: value for key, value in entry.items() if key != "name"}
        for key in ("arg-type", "ret-type", "element-type"):
            if key in shape:
                shape[key] = resolve(shape[key], inner)
        if "members" in shape and entry["meta-type"] in ("object", "alternate"):
            shape["members"] = [{**m, "type": resolve(m["type"], inner)} for m in shape["members"]]
        if "variants" in shape:
            shape["variants"] = [{**v, "type": resolve(v["type"], inner)} for v in shape["variants"]]
        return shape

    return resolve(name, frozenset())


def read_elf_core(data: bytes) -> dict[str, Any]:
    """The fields of an ELF64 core file a debugger relies on, decoded independently of qmpd's code: the header,
    program and section headers, and the notes of the first (PT_NOTE) segment as (name, type, descriptor)."""
    header = struct.unpack_from("<16sHHIQQQIHHHHHH", data)
    ident, e_type, machine, version, entry, phoff, shoff, flags, ehsize, phentsize, phnum, shentsize = header[:12]
    shnum, shstrndx = header[12:]
    phdrs = [struct.unpack_from("<IIQQQQQQ", data, phoff + n * phentsize) for n in range(phnum)]
    shdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + n * shentsize) for n in range(shnum)]
    note_type, _, note_offset, _, _, note_size, _, _ = phdrs[0]
    notes = []
    position = note_offset
    while position < note_offset + note_size:
        namesz, descsz, kind = struct.unpack_from("<III", data, position)
        position += 12
        name = data[position : position + namesz].rstrip(b"\0")
        position += (namesz + 3) & ~3
        notes.append((name, kind, data[position : position + descsz]))
        position += (descsz + 3) & ~3
    return {
        "ident": ident, "type": e_type, "machine": machine, "version": version, "entry": entry, "phoff": phoff,
        "shoff": shoff, "flags": flags, "ehsize": ehsize, "phdrs": phdrs, "shdrs": shdrs, "notes": notes,
        "shstrndx": shstrndx, "note_type": note_type, "shnum": shnum, "phnum": phnum,
    }  # fmt: skip


class InProcessSession:
    """The calling session as dispatch sees it, for tests that dispatch in process: negotiated, in-band only."""

    name = "test"
    negotiated = True
    oob_enabled = False

    def negotiate(self, capabilities: object) -> None:
        """Never called: the session starts negotiated."""


class InProcessDaemon:
    """The daemon as command contexts see it, for in-process dispatch: no chardevs, no exit."""

    def chardevs(self) -> list[dict[str, object]]:
        return []

    def request_exit(self) -> None:
        """quit is not dispatched by these tests."""
