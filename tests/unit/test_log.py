"""qmpd.log: structlog comes with the first line written, and the lines are structlog's."""

from __future__ import annotations

import json
import subprocess
import sys

from qmpd.log import HELD_LINES_MAX
from tests.helpers import REPO

#: Logs below and at the level in a fresh interpreter; prints whether structlog was loaded before the
#: line that passes, then the line itself goes to stderr.
_SCRIPT = """
import sys
from qmpd.config import LogFormat
from qmpd.log import get_logger, setup_logging
setup_logging(LogFormat.{fmt}, "warning")
log = get_logger("qmpd.test").bind(session="s#1")
log.info("test.quiet", n=1)
log.debug("test.quiet", n=2)
print("structlog" in sys.modules, flush=True)
log.warning("test.loud", n=3)
try:
    raise ValueError("boom")
except ValueError:
    log.exception("test.failed")
"""


def _run(fmt: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(fmt=fmt)], cwd=REPO, capture_output=True, text=True, check=True
    )
    return done.stdout.strip(), done.stderr.splitlines()


def test_lines_below_the_level_do_not_load_structlog_and_the_others_are_its_lines() -> None:
    loaded, lines = _run("CONSOLE")
    assert loaded == "False"
    assert "test.quiet" not in "\n".join(lines)
    assert lines[0].endswith("Z [warning  ] test.loud                      n=3 session=s#1")
    assert "[error    ] test.failed" in lines[1] and "session=s#1" in lines[1]
    assert any(line.startswith("ValueError: boom") for line in lines[2:])  # the traceback, plainly


def test_json_lines_carry_level_timestamp_and_context() -> None:
    _, lines = _run("JSON")
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "test.loud" and first["level"] == "warning" and first["session"] == "s#1"
    assert first["n"] == 3 and first["timestamp"].endswith("Z")
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_a_log_going_to_dev_null_makes_no_lines_and_loads_no_structlog() -> None:
    """-daemonize without --log-file points stderr at /dev/null: nothing would be kept."""
    script = _SCRIPT.format(fmt="CONSOLE") + "\nprint('structlog' in sys.modules, flush=True)\n"
    with open("/dev/null", "w") as null:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=null, text=True, check=True
        )
    assert done.stdout.split() == ["False", "False"]


_HOLD_SCRIPT = """
import sys, time
from qmpd.config import LogFormat
from qmpd import log
log.setup_logging(LogFormat.JSON, "info")
log.hold()
logger = log.get_logger("qmpd.test")
logger.info("test.first", n=1)
try:
    raise ValueError("held")
except ValueError:
    logger.exception("test.failed")
time.sleep(0.05)
print("structlog" in sys.modules, flush=True)
sys.stderr.write("--release--\\n")
log.release()
logger.info("test.after")
log.hold()
for n in range(log.HELD_LINES_MAX + 1):
    logger.info("test.many", n=n)
sys.stderr.write("--end--\\n")
"""


def test_held_lines_are_written_at_release_in_order_with_the_time_they_were_made() -> None:
    done = subprocess.run([sys.executable, "-c", _HOLD_SCRIPT], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", "nothing was written, so structlog was not needed yet"
    before, after = done.stderr.split("--release--\n")
    assert before == ""
    released, rest = after.split("--end--\n")
    first, failed, later, *many = (json.loads(line) for line in released.splitlines())
    assert rest == ""
    assert [first["event"], failed["event"], later["event"]] == ["test.first", "test.failed", "test.after"]
    assert "_qmpd_made" not in first and first["timestamp"].endswith("Z")
    assert first["timestamp"] <= failed["timestamp"] < later["timestamp"], "held lines keep the time they were made"
    assert "ValueError: held" in failed["exception"], "the exception handled when the line was made"
    assert [line["n"] for line in many] == list(range(HELD_LINES_MAX + 1)), "one line past the bound releases them all"
