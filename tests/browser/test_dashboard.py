"""The live dashboard in headless Chromium, against a real qmpd with ``--http``.

The page is driven as a person would: plug a CPU into a free slot, watch the
guest firmware bring it online and its instruction rate appear, unplug it,
pause and resume the machine.  Every update reaches the page over its two
WebSockets (QMP events, live statistics), so this also checks that nothing
needs a reload.  The system Chromium is used (``playwright install`` would
download a browser, which this project's machines cannot).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

try:
    from playwright.sync_api import ConsoleMessage, Error, Locator, Page, expect, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

REPO = Path(__file__).resolve().parents[2]
#: CI sets this so that a missing browser fails the test instead of skipping it.
REQUIRE_BROWSER = os.environ.get("QMPD_REQUIRE_BROWSER") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: The brief's bound for a plugged CPU to show online (the firmware acknowledges within ~10-50 ms).
PLUG_TIMEOUT_MS = 2000
#: Live frames come every 0.5 s and a rate needs two of them.
RATE_TIMEOUT_MS = 3000
STEP_TIMEOUT_MS = 5000


def _require_browser() -> None:
    problems = []
    if not HAVE_PLAYWRIGHT:
        problems.append("the playwright package is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        problems.append("chromium is not installed")
    if problems:
        reason = "; ".join(problems)
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason} (QMPD_REQUIRE_BROWSER=1)")
        pytest.skip(reason)


def _wait_ready(process: subprocess.Popen[bytes], url: str, stderr_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"qmpd exited with {process.returncode}:\n{stderr_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 in {timeout} s:\n{stderr_path.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    """A qmpd with 1 of 4 CPUs (2 sockets x 2 cores) and its HTTP front; the dashboard's URL."""
    _require_browser()
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "qmpd",
        "-machine",
        "pc",
        "-cpu",
        "Haswell",
        "-smp",
        "1,sockets=2,cores=2,threads=1,maxcpus=4",
        "-qmp",
        f"unix:{tmp_path}/qmp.sock,server=on,wait=off",
        "--http",
        f"127.0.0.1:{port}",
    ]
    stderr_path = tmp_path / "qmpd.stderr"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tmp_path
        )
    try:
        _wait_ready(process, f"http://127.0.0.1:{port}/readyz", stderr_path)
        yield f"http://127.0.0.1:{port}/"
    finally:
        _stop(process)


def _slot(page: Page, index: int) -> Locator:
    return page.locator(f'#topology [data-slot="{index}"]')


def _rate(page: Page, index: int) -> float:
    text = _slot(page, index).locator(".rate").get_attribute("data-rate")
    return float(text) if text else 0.0


def test_dashboard_plug_unplug_pause(dashboard_url: str, tmp_path: Path) -> None:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console error: {message.text} ({message.location})")

    def on_page_error(error: Error) -> None:
        errors.append(f"page error: {error}")

    artifacts = Path(os.environ.get("QMPD_ARTIFACTS", str(tmp_path)))
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "dashboard.png"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            page.goto(dashboard_url)
            log = page.locator("#event-log")

            # 2 sockets x 1 die x 2 cores x 1 thread: four slots, only the boot CPU there.
            expect(page.locator("#topology [data-slot]")).to_have_count(4, timeout=STEP_TIMEOUT_MS)
            expect(_slot(page, 0)).to_have_attribute("data-state", "online", timeout=STEP_TIMEOUT_MS)
            for index in (1, 2, 3):
                expect(_slot(page, index)).to_have_attribute("data-state", "absent")
            expect(page.locator("#runstate")).to_have_text("running", timeout=STEP_TIMEOUT_MS)
            # Commands go over the QMP WebSocket: wait for its session before clicking.
            expect(page.locator("#conn-qmp")).to_have_attribute("data-connected", "true", timeout=STEP_TIMEOUT_MS)
            expect(page.locator("#conn-live")).to_have_attribute("data-connected", "true", timeout=STEP_TIMEOUT_MS)

            # Plug: the firmware onlines the new CPU and acknowledges over ACPI.
            _slot(page, 1).locator('[data-action="plug"]').click()
            expect(_slot(page, 1)).to_have_attribute("data-state", "online", timeout=PLUG_TIMEOUT_MS)
            expect(log.locator('li[data-event="ACPI_DEVICE_OST"]').first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            page.wait_for_function(
                "document.querySelector('#topology [data-slot=\"1\"] .rate').dataset.rate > 0",
                timeout=RATE_TIMEOUT_MS,
            )
            assert _rate(page, 1) > 0
            page.screenshot(path=str(screenshot), full_page=True)

            # Unplug: the guest ejects it, then the device is deleted.
            _slot(page, 1).locator('[data-action="unplug"]').click()
            expect(_slot(page, 1)).to_have_attribute("data-state", "absent", timeout=STEP_TIMEOUT_MS)
            expect(log.locator('li[data-event="DEVICE_DELETED"]').first).to_be_visible(timeout=STEP_TIMEOUT_MS)

            page.locator("#pause").click()
            expect(page.locator("#runstate")).to_have_text("paused", timeout=STEP_TIMEOUT_MS)
            expect(log.locator('li[data-event="STOP"]').first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            page.locator("#resume").click()
            expect(page.locator("#runstate")).to_have_text("running", timeout=STEP_TIMEOUT_MS)
            expect(log.locator('li[data-event="RESUME"]').first).to_be_visible(timeout=STEP_TIMEOUT_MS)

            # Every command succeeded: the page marks failed ones (and lost connections) as errors.
            failures = log.locator("li.error").all_inner_texts()
            assert failures == [], failures
        finally:
            browser.close()

    assert errors == [], errors
    assert screenshot.is_file()
    assert screenshot.stat().st_size > 10_000, screenshot.stat().st_size


def test_dashboard_sets_and_resets_a_slots_guest_policy(dashboard_url: str) -> None:
    """Each slot shows its guest hot-plug policy; setting one there makes the firmware ignore the plug."""
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.goto(dashboard_url)
            slot = _slot(page, 1)
            expect(slot.locator(".policy-source")).to_have_text("default", timeout=STEP_TIMEOUT_MS)
            expect(page.locator("#conn-qmp")).to_have_attribute("data-connected", "true", timeout=STEP_TIMEOUT_MS)
            slot.locator('[data-field="on-plug"]').select_option("ignore")
            slot.locator('[data-action="policy"]').click()
            expect(slot.locator(".policy-source")).to_have_text("dashboard-slot1", timeout=STEP_TIMEOUT_MS)
            expect(_slot(page, 2).locator(".policy-source")).to_have_text("default")
            slot.locator('[data-action="plug"]').click()
            expect(slot).to_have_attribute("data-state", "offline", timeout=STEP_TIMEOUT_MS)
            time.sleep(1.0)  # the guest ignores it: still offline, no _OST
            expect(slot).to_have_attribute("data-state", "offline")
            assert page.locator('#event-log li[data-event="ACPI_DEVICE_OST"]').count() == 0
            slot.locator('[data-action="policy-reset"]').click()
            expect(slot.locator(".policy-source")).to_have_text("default", timeout=STEP_TIMEOUT_MS)
            expect(slot.locator('[data-field="on-plug"]')).to_have_value("online")
            assert page.locator("#event-log li.error").all_inner_texts() == []
        finally:
            browser.close()
    assert errors == [], errors
