"""The Dockerfile's steps, run without a container engine: build the wheel, install it
into a fresh environment, start the ENTRYPOINT + CMD, and talk QMP to it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, RawClient, free_port, wait_for_socket, wait_until

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instruction(name: str) -> list[str]:
    match = re.search(rf"^{name} (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert match, f"Dockerfile has no JSON-form {name}"
    value: list[str] = json.loads(match.group(1))
    return value


def test_dockerfile_uses_the_steps_this_test_runs() -> None:
    assert "FROM python:3.11-slim" in DOCKERFILE
    assert "RUN pip wheel --no-cache-dir --wheel-dir /dist ." in DOCKERFILE
    assert "RUN pip install --no-cache-dir --no-index --find-links /tmp/dist qmpd" in DOCKERFILE
    assert "RUN make -C examples/firmware OUT=/src/qmpd/firmware/qmpd-firmware.bin" in DOCKERFILE
    assert "RUN python -m qmpd.caches" in DOCKERFILE
    assert "USER qmpd" in DOCKERFILE, "the image runs as a non-root user"
    assert "install -y --no-install-recommends gcc" in DOCKERFILE, "the build stage compiles the block hook"
    assert _instruction("ENTRYPOINT")[0] == "qmpd"
    assert "--http" in _instruction("CMD") and "EXPOSE 8080" in DOCKERFILE


def _healthcheck() -> list[str]:
    match = re.search(r"^HEALTHCHECK .* CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert match, "Dockerfile has no JSON-form HEALTHCHECK"
    value: list[str] = json.loads(match.group(1))
    return value


def test_the_firmware_built_inside_is_the_shipped_one(tmp_path: Path) -> None:
    if not (shutil.which("as") and shutil.which("ld") and shutil.which("objcopy") and shutil.which("make")):
        pytest.skip("binutils and make are needed to build the firmware")
    # As the build stage does: make in the firmware's source directory (a copy here), OUT inside the package.
    firmware = tmp_path / "firmware"
    shutil.copytree(REPO / "examples" / "firmware", firmware)
    out = tmp_path / "qmpd-firmware.bin"
    subprocess.run(["make", "-C", str(firmware), f"OUT={out}"], check=True, capture_output=True)
    assert out.read_bytes() == (REPO / "qmpd" / "firmware" / "qmpd-firmware.bin").read_bytes()


@pytest.mark.slow
def test_wheel_install_and_entrypoint(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--wheel-dir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dist.glob("qmpd-*.whl")
    assert list(dist.glob("aiohttp-*.whl")) and list(dist.glob("unicorn-*.whl")), "dependencies as wheels"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "qmpd/firmware/qmpd-firmware.bin" in names, "the default firmware ships in the wheel"
    assert "qmpd/vcpu/_blockhook.so" in names, "the block hook is compiled into the wheel"
    assert {"qmpd/http/openapi.json", "qmpd/http/static/index.html"} <= names, "the HTTP front's files ship"
    env_dir = tmp_path / "image"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-cache-dir", "--no-index", "--find-links", str(dist), "qmpd"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    clean_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run(  # the cache step
        [str(python), "-m", "qmpd.caches"], check=True, capture_output=True, timeout=120, env=clean_env, cwd=tmp_path
    )
    used = (
        "from qmpd.qapi.schema import Schema; from qmpd.handler_index import registry_for; "
        "from qmpd.cpu.tables import cached; import qmpd.daemon; "
        "schema = Schema.load(); "
        "print(schema.introspection_text is not None, registry_for(schema)[1], cached() is not None, "
        "type(qmpd.daemon.__spec__.loader).__name__)"
    )
    check = subprocess.run([str(python), "-c", used], capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert check.stdout.split() == ["True", "True", "True", "_BundleLoader"], "qmpd starts from its caches"
    workdir = tmp_path / "var-lib-qmpd"
    workdir.mkdir()
    port = free_port()
    command = [arg.replace("/var/lib/qmpd", str(workdir)) for arg in _instruction("ENTRYPOINT") + _instruction("CMD")]
    command = [arg.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for arg in command]
    command[0] = str(env_dir / "bin" / command[0])
    health = [arg.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for arg in _healthcheck()]
    health[0] = str(env_dir / "bin" / health[0])
    with open(tmp_path / "stdout", "wb") as stdout:
        process = subprocess.Popen(command, cwd=workdir, env=clean_env, stdout=stdout, stderr=subprocess.DEVNULL)
    try:
        sock = str(workdir / "qmp.sock")
        wait_for_socket(sock, process)
        with RawClient(sock) as client:
            client.negotiate()
            assert client.execute("query-version")["return"]["package"].startswith("qmpd ")
            schema = client.execute("query-qmp-schema")["return"]
            assert any(entry["name"] == "query-status" for entry in schema), "schema/ ships inside the wheel"
            wait_until(lambda: "CPU 1 (APIC ID 1) online" in _read(workdir / "debugcon.log"))
        wait_until(lambda: subprocess.run(health, capture_output=True, env=clean_env).returncode == 0, timeout=20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    logs = [json.loads(line) for line in (tmp_path / "stdout").read_text().splitlines()]
    assert any(entry["event"] == "qmp.listening" for entry in logs), "JSON logs on stdout"
    assert any(entry["event"] == "http.listening" for entry in logs)
    assert not (workdir / "qmp.sock").exists()
    assert (workdir / "qmpd.state").exists(), "--state-dir: the machine was saved in the volume on SIGTERM"


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
