"""One guest image, two emulators: the bundled firmware under qemu-system-x86_64 7.2 and under qmpd.

The same ROM boots on both (QEMU runs its real-mode stub; qmpd starts its 64-bit code, see
qmpd/vcpu/loader.py), finds the chipset through PCI configuration space, and answers CPU hot-plug
over QEMU's ACPI registers.  The same commands must give the same console text and the same QMP
events.  Known differences, asserted as such:
- DEVICE_DELETED for an ejected CPU itself: qmpd sends it; QEMU 7.2 sends it when the CPU object is
  finalized, after an RCU grace period, which never ends while this firmware keeps the boot CPU in
  one long run of translated code (only the lapic's event comes).
- A CPU plugged under -S (before the guest switched the ACPI block to its modern interface): qmpd
  keeps its insert event and the guest acknowledges it; QEMU drops it (README, deliberate differences).
The guest reads its options from fw_cfg (-fw_cfg name=opt/qmpd/work,...) on both; the FWCFG_DUMP
variant shows that it reads the same items there, and the unplug scenarios run with and without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, RawClient, Server, firmware_variant, start_qemu, start_qmpd

pytestmark = pytest.mark.qemu
FIRMWARE = REPO / "qmpd" / "firmware" / "qmpd-firmware.bin"
MACHINES = ["pc", "q35"]


def _negotiated(server: Server) -> RawClient:
    """A negotiated client.  Once in a while, on a loaded machine, QEMU (which serves one monitor client at a
    time) closes a client that connected while it was still busy with the start-up probe's connection (see
    tests.helpers.wait_for_socket): connect once more then."""
    for attempt in range(2):
        client = RawClient(server.socket_path, timeout=20)
        try:
            client.negotiate()
            return client
        except EOFError:
            client.close()
            if attempt:
                raise
    raise AssertionError("unreachable")


class Run:
    """One emulator running the firmware: its console and the events it sent."""

    def __init__(self, server: Server, console: Path) -> None:
        self.server = server
        self.console_path = console
        try:
            self.client = _negotiated(server)
        except BaseException:
            server.stop()  # never leave an emulator running behind a failed start
            raise
        self.events: list[tuple[str, Any]] = []

    def console(self) -> str:
        return self.console_path.read_text() if self.console_path.exists() else ""

    def until(self, condition: Callable[[], bool], timeout: float = 20) -> None:
        """Collect events until ``condition`` holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; console:\n{self.console()}\nevents: {self.events}"
            self._take(0.05)

    def event(self, name: str, **match: Any) -> None:
        def seen() -> bool:
            return any(e == name and all((d or {}).get("info", d or {}).get(k) == v for k, v in match.items())
                       for e, d in self.events)  # fmt: skip

        self.until(seen)

    def execute(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        self.client.sock.settimeout(20)  # not the 50 ms _take left: a slower reply is no failure
        reply = self.client.execute(name, arguments)
        self._stash()
        return reply

    def settle(self, seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._take(0.05)

    def _take(self, timeout: float) -> None:
        self._stash()
        try:
            message = self.client.message(timeout=timeout)
        except TimeoutError:
            return
        if "event" in message:
            self.events.append((message["event"], message.get("data")))

    def _stash(self) -> None:
        while self.client.events:
            message = self.client.events.pop(0)
            self.events.append((message["event"], message.get("data")))

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def _start(kind: str, machine: str, tmp_path: Path, *extra: str, image: Path = FIRMWARE) -> Run:
    console = tmp_path / f"{kind}-{machine}.debugcon"
    argv = ["-machine", f"{machine},accel=tcg", "-nodefaults", "-cpu", "Haswell", "-smp", "1,maxcpus=4", "-m", "128",
            "-bios", str(image), "-debugcon", f"file:{console}", *extra]  # fmt: skip
    server = (start_qemu if kind == "qemu" else start_qmpd)(argv, tmp_path / kind)
    return Run(server, console)


def _cpu(index: int) -> dict[str, Any]:
    return {"driver": "Haswell-x86_64-cpu", "id": f"cpu{index}", "socket-id": 0, "core-id": index, "thread-id": 0}


def _plug_reset_unplug(run: Run) -> None:
    """Plug two CPUs, reset the machine with them, unplug one.  (The other order, a reset after an
    eject, makes QEMU 7.2 abort with a heap corruption while this guest keeps its CPUs busy.)"""
    run.until(lambda: "CPU 0 (APIC ID 0) online" in run.console())
    for index in (1, 2):
        assert run.execute("device_add", _cpu(index)) == {"return": {}}
        run.event("ACPI_DEVICE_OST", source=1, slot=str(index))
        run.until(lambda index=index: f"CPU {index} (APIC ID {index}) online" in run.console())
    assert run.execute("system_reset") == {"return": {}}
    run.until(lambda: run.console().count("CPU 2 (APIC ID 2) online") == 2)
    assert run.execute("device_del", {"id": "cpu1"}) == {"return": {}}
    run.event("DEVICE_DELETED", path="/machine/peripheral/cpu1/lapic")
    assert len(run.execute("query-cpus-fast")["return"]) == 2
    run.settle()


def _both(
    tmp_path: Path, machine: str, scenario: Callable[[Run], None], *extra: str, image: Path = FIRMWARE
) -> tuple[Run, Run]:
    runs = []
    for kind in ("qemu", "qmpd"):
        (tmp_path / kind).mkdir(exist_ok=True)
        run = _start(kind, machine, tmp_path, *extra, image=image)
        try:
            scenario(run)
        finally:
            run.close()
        runs.append(run)
    return runs[0], runs[1]


@pytest.mark.parametrize("machine", MACHINES)
def test_boot_plug_reset_and_unplug_look_the_same(tmp_path: Path, machine: str) -> None:
    qemu, qmpd = _both(tmp_path, machine, _plug_reset_unplug)
    assert qmpd.console() == qemu.console()
    assert qmpd.console().count("qmpd firmware: booting") == 2 and "CPU 1 (APIC ID 1) parked" in qmpd.console()
    cpu_deleted = ("DEVICE_DELETED", {"device": "cpu1", "path": "/machine/peripheral/cpu1"})
    assert cpu_deleted in qmpd.events and cpu_deleted not in qemu.events
    assert [e for e in qmpd.events if e != cpu_deleted] == qemu.events


@pytest.mark.parametrize("machine", MACHINES)
def test_a_plug_under_prelaunch(tmp_path: Path, machine: str) -> None:
    def scenario(run: Run) -> None:
        assert run.execute("device_add", _cpu(1)) == {"return": {}}
        assert run.execute("cont") == {"return": {}}
        run.until(lambda: "CPU 1 (APIC ID 1) online" in run.console())
        run.settle()

    qemu, qmpd = _both(tmp_path, machine, scenario, "-S")
    assert qmpd.console() == qemu.console()
    acknowledged = ("ACPI_DEVICE_OST", {"info": {"device": "cpu1", "source": 1, "status": 0, "slot": "1",
                                                 "slot-type": "CPU"}})  # fmt: skip
    assert qmpd.events == [("RESUME", None), acknowledged]
    assert qemu.events == [("RESUME", None)]


def _pci_dump_image(tmp_path: Path) -> Path:
    return firmware_variant(tmp_path, PCI_DUMP=1)


@pytest.mark.parametrize("machine", MACHINES)
def test_pci_configuration_space_reads_the_same(tmp_path: Path, machine: str) -> None:
    image = _pci_dump_image(tmp_path)
    dumps = []
    for kind in ("qemu", "qmpd"):
        (tmp_path / kind).mkdir()
        run = _start(kind, machine, tmp_path, image=image)
        try:
            run.until(lambda run=run: "CPU 0 (APIC ID 0) online" in run.console())
        finally:
            run.close()
        dumps.append([line for line in run.console().splitlines() if line.startswith("pci ")])
    assert len(dumps[0]) == 3 and all(len(line.split()) == 66 for line in dumps[0])
    assert dumps[1] == dumps[0]


@pytest.mark.parametrize("machine", MACHINES)
def test_the_idle_work_mode_looks_the_same(tmp_path: Path, machine: str) -> None:
    """CPUs halt after their banner; the SCI (through the I/O APIC) and IPIs wake them on both."""

    def scenario(run: Run) -> None:
        _plug_reset_unplug(run)
        assert run.execute("system_powerdown") == {"return": {}}
        run.event("SHUTDOWN")

    qemu, qmpd = _both(tmp_path, machine, scenario, "-fw_cfg", "name=opt/qmpd/work,string=idle")
    assert qmpd.console() == qemu.console()
    assert "CPU 1 (APIC ID 1) parked" in qmpd.console() and "did not park" not in qmpd.console()
    assert qmpd.console().endswith("qmpd firmware: power button: entering S5\n")
    cpu_deleted = ("DEVICE_DELETED", {"device": "cpu1", "path": "/machine/peripheral/cpu1"})
    assert cpu_deleted in qmpd.events and cpu_deleted not in qemu.events
    assert [e for e in qmpd.events if e != cpu_deleted] == qemu.events


#: Where the firmware keeps the work mode it read from fw_cfg (examples/firmware/fwcfg.S).
WORK_MODE = 0x20B018


@pytest.mark.parametrize("machine", MACHINES)
def test_fw_cfg_reads_the_same(tmp_path: Path, machine: str) -> None:
    """Items, directory, DMA (a good and a bad target) and odd port widths, read by the FWCFG_DUMP variant."""
    image = firmware_variant(tmp_path, FWCFG_DUMP=1)
    dumps = []
    for kind in ("qemu", "qmpd"):
        (tmp_path / kind).mkdir()
        uuid = ("-uuid", "0f7e1b42-0001-0203-0405-06070809abcd")
        extra = ("-nographic", *uuid, "-fw_cfg", "name=opt/qmpd/work,string=idle")  # QEMU has -nographic anyway
        run = _start(kind, machine, tmp_path, *extra, image=image)
        try:
            run.until(lambda run=run: "CPU 0 (APIC ID 0) online" in run.console())
        finally:
            run.close()
        dumps.append([line for line in run.console().splitlines() if line.startswith("fw_cfg ")])
    assert dumps[1] == dumps[0]
    assert dumps[0][0] == "fw_cfg item 00 51 45 4d 55"  # "QEMU"
    assert dumps[0][1] == "fw_cfg item 01 03 00 00 00"  # traditional interface and DMA
    assert dumps[0][2] == "fw_cfg item 02 0f 7e 1b 42 00 01 02 03 04 05 06 07 08 09 ab cd"  # -uuid, in its order
    assert dumps[0][4] == "fw_cfg item 04 01 00"  # NOGRAPHIC: -nographic
    assert "fw_cfg opt/qmpd/work size 04000000" in dumps[0]
    dma = [line for line in dumps[0] if line.startswith("fw_cfg dma control")]
    assert dma == ["fw_cfg dma control, data 00000000 51454d55"] + ["fw_cfg dma control, data 00000001 00000000"] * 2
    assert "fw_cfg at the end of RAM 51450000" in dumps[0]  # "QE": the part in RAM is written, with the error bit


def _work_mode(run: Run) -> int:
    text = run.execute("human-monitor-command", {"command-line": f"xp /1bx {WORK_MODE:#x}"})["return"]
    return int(text.split()[-1], 16)


@pytest.mark.parametrize(("value", "mode"), [(None, 0), ("count", 0), ("idle", 1), ("sleepy", 0)])
def test_the_firmware_reads_its_work_mode_from_fw_cfg(tmp_path: Path, value: str | None, mode: int) -> None:
    extra = () if value is None else ("-fw_cfg", f"name=opt/qmpd/work,string={value}")
    modes = []

    def scenario(run: Run) -> None:
        run.until(lambda: "CPU 0 (APIC ID 0) online" in run.console())
        modes.append(_work_mode(run))

    qemu, qmpd = _both(tmp_path, "pc", scenario, *extra)
    assert modes == [mode, mode]
    assert qmpd.console() == qemu.console()
    unknown = "qmpd firmware: opt/qmpd/work: unknown value, counting\n"
    assert (unknown in qemu.console()) == (value == "sleepy")


# -- stop and cont during an unplug ---------------------------------------------------------------

#: -fw_cfg absent, and present (the work mode a management stack would pass).
FW_CFG_CASES = {"no-fw_cfg": (), "fw_cfg-idle": ("-fw_cfg", "name=opt/qmpd/work,string=idle")}
CPU1_DELETED = ("DEVICE_DELETED", {"device": "cpu1", "path": "/machine/peripheral/cpu1"})
LAPIC1_DELETED = ("DEVICE_DELETED", {"path": "/machine/peripheral/cpu1/lapic"})


def _plugged(run: Run) -> None:
    run.until(lambda: "CPU 0 (APIC ID 0) online" in run.console())
    assert run.execute("device_add", _cpu(1)) == {"return": {}}
    run.event("ACPI_DEVICE_OST", source=1, slot="1")
    run.until(lambda: "CPU 1 (APIC ID 1) online" in run.console())


def _unplugged(run: Run) -> None:
    run.event("DEVICE_DELETED", path="/machine/peripheral/cpu1/lapic")
    assert [cpu["cpu-index"] for cpu in run.execute("query-cpus-fast")["return"]] == [0]
    run.settle()


def _comparable(run: Run) -> list[tuple[str, Any]]:
    """The events without the ejected CPU's own DEVICE_DELETED (see the module docstring)."""
    return [event for event in run.events if event != CPU1_DELETED]


@pytest.mark.parametrize("fw_cfg", FW_CFG_CASES)
@pytest.mark.parametrize("machine", MACHINES)
def test_device_del_while_stopped_ejects_at_cont(tmp_path: Path, machine: str, fw_cfg: str) -> None:
    transcript: dict[int, list[Any]] = {}

    def scenario(run: Run) -> None:
        _plugged(run)
        replies = [run.execute("stop"), run.execute("device_del", {"id": "cpu1"})]
        run.settle(1.0)  # stopped: the guest cannot eject
        replies.append(run.execute("query-status"))
        replies.append(len(run.execute("query-cpus-fast")["return"]))
        stopped = list(run.events)
        replies.append(run.execute("cont"))
        _unplugged(run)
        transcript[id(run)] = [replies, stopped]

    qemu, qmpd = _both(tmp_path, machine, scenario, *FW_CFG_CASES[fw_cfg])
    assert transcript[id(qmpd)] == transcript[id(qemu)]
    replies, stopped = transcript[id(qemu)]
    assert replies[2]["return"]["status"] == "paused" and replies[3] == 2, "nothing ejected while stopped"
    assert not any(name == "DEVICE_DELETED" for name, _ in stopped)
    assert qmpd.console() == qemu.console()
    assert "CPU 1 (APIC ID 1) parked" in qemu.console()
    assert CPU1_DELETED in qmpd.events and LAPIC1_DELETED in qmpd.events
    assert _comparable(qmpd) == _comparable(qemu)


#: The counting guest looks at GPE0 every 4096 iterations, which leaves stop its window.  The idle guest
#: is woken by the SCI at once: QEMU 7.2 itself then ejects before the stop in some runs (1 of 5
#: measured), so that race has no one answer to compare.
class _RaceLost(Exception):
    """The guest acted before the scenario's stop did."""


COUNTING_FW_CFG_CASES = {"no-fw_cfg": (), "fw_cfg-count": ("-fw_cfg", "name=opt/qmpd/work,string=count")}


@pytest.mark.parametrize("fw_cfg", COUNTING_FW_CFG_CASES)
@pytest.mark.parametrize("machine", MACHINES)
def test_stop_between_device_del_and_the_eject(tmp_path: Path, machine: str, fw_cfg: str) -> None:
    """device_del and stop in one write: both are answered before the counting guest could see the SCI,
    scan the hot-plug block, park the CPU and eject it, so the eject happens after cont on both emulators."""

    def scenario(run: Run) -> None:
        _plugged(run)
        before = len(run.events)
        run.client.send(b'{"execute": "device_del", "arguments": {"id": "cpu1"}}{"execute": "stop"}')
        replies = []
        while len(replies) < 2:
            message = run.client.message(timeout=20)
            if "event" in message:
                run.events.append((message["event"], message.get("data")))
            else:
                replies.append(message)
        assert replies == [{"return": {}}, {"return": {}}]
        assert run.execute("query-status")["return"]["status"] == "paused"
        run.settle(1.0)
        if any(name == "DEVICE_DELETED" for name, _ in run.events):
            raise _RaceLost  # the guest ejected before stop took effect: not this scenario
        names = [name for name, _ in run.events[before:]]
        if "ACPI_DEVICE_OST" in names[: names.index("STOP") if "STOP" in names else len(names)]:
            raise _RaceLost  # the guest answered the eject request (_OST) before stop took effect: the same
        assert run.execute("cont") == {"return": {}}
        _unplugged(run)

    # Nothing orders the guest's eject (or its _OST for the request) after the stop: on a loaded machine (or on
    # QEMU, now and then) the guest wins. Such a run tests nothing here, so it is run again, at most three times.
    for attempt in range(3):
        directory = tmp_path / f"attempt{attempt}"
        directory.mkdir()
        try:
            qemu, qmpd = _both(directory, machine, scenario, *COUNTING_FW_CFG_CASES[fw_cfg])
            break
        except _RaceLost:
            continue
    else:
        pytest.fail("the guest ejected before stop took effect in three runs")
    assert qmpd.console() == qemu.console()
    assert "CPU 1 (APIC ID 1) parked" in qemu.console()
    assert _comparable(qmpd) == _comparable(qemu)
