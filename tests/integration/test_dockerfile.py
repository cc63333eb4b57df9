"""The Dockerfile's steps, run without a container engine: build the wheel, install it
into a fresh environment, start the ENTRYPOINT + CMD, and talk QMP to it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, RawClient, wait_for_socket, wait_until

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instruction(name: str) -> list[str]:
    match = re.search(rf"^{name} (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert match, f"Dockerfile has no JSON-form {name}"
    value: list[str] = json.loads(match.group(1))
    return value


def test_dockerfile_uses_the_steps_this_test_runs() -> None:
    assert "FROM python:3.11-slim" in DOCKERFILE
    assert "RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist ." in DOCKERFILE
    assert "RUN pip install --no-cache-dir /tmp/dist/*.whl" in DOCKERFILE
    assert "USER qmpd" in DOCKERFILE, "the image runs as a non-root user"
    assert "install -y --no-install-recommends gcc" in DOCKERFILE, "the build stage compiles the block hook"
    assert _instruction("ENTRYPOINT")[0] == "qmpd"


@pytest.mark.slow
def test_wheel_install_and_entrypoint(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--wheel-dir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dist.glob("qmpd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "qmpd/firmware/qmpd-firmware.bin" in names, "the default firmware ships in the wheel"
    assert "qmpd/vcpu/_blockhook.so" in names, "the block hook is compiled into the wheel"
    env_dir = tmp_path / "image"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-cache-dir", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    workdir = tmp_path / "var-lib-qmpd"
    workdir.mkdir()
    command = [arg.replace("/var/lib/qmpd", str(workdir)) for arg in _instruction("ENTRYPOINT") + _instruction("CMD")]
    command[0] = str(env_dir / "bin" / command[0])
    clean_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    with open(tmp_path / "stderr", "wb") as stderr:
        process = subprocess.Popen(command, cwd=workdir, env=clean_env, stderr=stderr, stdout=subprocess.DEVNULL)
    try:
        sock = str(workdir / "qmp.sock")
        wait_for_socket(sock, process)
        with RawClient(sock) as client:
            client.negotiate()
            assert client.execute("query-version")["return"]["package"].startswith("qmpd ")
            schema = client.execute("query-qmp-schema")["return"]
            assert any(entry["name"] == "query-status" for entry in schema), "schema/ ships inside the wheel"
            wait_until(lambda: "CPU 1 (APIC ID 1) online" in _read(workdir / "debugcon.log"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    logs = [json.loads(line) for line in (tmp_path / "stderr").read_text().splitlines()]
    assert any(entry["event"] == "qmp.listening" for entry in logs), "JSON logs"
    assert not (workdir / "qmp.sock").exists()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
