"""The atheris fuzz targets in fuzz/ run for a bounded time from the seed corpus without a crash."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
TARGETS = ["fuzz_stream.py", "fuzz_session.py"]
#: Seconds each target fuzzes; both run at once, so the test takes about this plus start-up.
SECONDS = 25


@pytest.fixture(scope="module")
def atheris_available() -> None:
    if importlib.util.find_spec("atheris") is None:
        if os.environ.get("QMPD_REQUIRE_FUZZ") == "1":
            pytest.fail("atheris is required (QMPD_REQUIRE_FUZZ=1)")
        pytest.skip("atheris is not installed")


#: Inputs per target beyond the corpus (each target runs at ~60-170 inputs/s here).
RUNS = {"fuzz_stream.py": 3000, "fuzz_session.py": 1000}


def test_fuzz_targets_survive_a_bounded_run(atheris_available: None, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    runs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for target in TARGETS:
        work = tmp_path / target.removesuffix(".py")
        corpus = work / "corpus"
        shutil.copytree(FUZZ / "corpus", corpus)
        log = work / "log"
        command = [
            sys.executable,
            str(FUZZ / target),
            f"-dict={FUZZ / 'qmp.dict'}",
            # A fixed seed and a fixed number of inputs: the same inputs on every CI run (time only caps it).
            f"-runs={RUNS[target]}",
            f"-max_total_time={SECONDS}",
            "-max_len=1024",
            "-timeout=30",
            "-rss_limit_mb=2048",
            "-seed=1",
            f"-artifact_prefix={work}/",
            str(corpus),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        runs.append((target, process, log))
    failures = []
    for target, process, log in runs:
        try:
            code = process.wait(timeout=SECONDS + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        if code != 0:
            lines = [line for line in log.read_text(errors="replace").splitlines() if "Instrumenting" not in line]
            failures.append(f"{target}: exit {code}\n" + "\n".join(lines[-40:]))
    assert not failures, "\n\n".join(failures)
