"""Every vCPU of the machine, as the loop side sees them.

The manager creates a runner (thread) per plugged CPU, starts the boot CPU,
delivers IPIs between CPUs (called from vCPU threads, so it only uses the
runners' thread-safe requests), and offers the machine the operations it
needs: pause all (returns once every vCPU is really out of emu_start),
resume all, reset, remove one, shut down.

The runners are two dicts (by cpu index, by APIC ID) that only the loop
changes, in place: a copy per plug made 1023 plugs O(n^2).  vCPU threads
read them with one ``dict.get`` or take a ``list(...)`` snapshot before they
iterate; both run in C without releasing the GIL, so they never see a dict
in the middle of a change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from qmpd.devices.lapic import DELIVERY_FIXED, DELIVERY_INIT, DELIVERY_STARTUP, DEST_ALL, DEST_ALL_BUT_SELF, DEST_SELF
from qmpd.log import get_logger
from qmpd.vcpu.bridge import LoopBridge
from qmpd.vcpu.loader import STACK_SIZE
from qmpd.vcpu.runner import Entry, Scheduler, VCPURunner, VCPUState

if TYPE_CHECKING:
    from qmpd.vcpu.engine import EngineFactory, VCPUEngine
    from qmpd.vcpu.snapshot import CPUSnapshot

log = get_logger(__name__)


class VCPUManager:
    """The machine's vCPU threads."""

    def __init__(self, bridge: LoopBridge, ram_size: int, *, single_threaded: bool = False, nice: int = 0) -> None:
        self.bridge = bridge
        self.nice = nice
        self.ram_size = ram_size
        self.scheduler = Scheduler() if single_threaded else None
        #: Changed only by the loop thread; see the module docstring for how vCPU threads read them.
        self._by_index: dict[int, VCPURunner] = {}
        self._by_apic: dict[int, VCPURunner] = {}
        #: Called on the loop thread when a vCPU faults: (cpu index, reason).
        self.on_crash: Callable[[int, str], None] = lambda index, reason: None
        #: Called on the loop thread when a vCPU triple-faults: (cpu index, reason).
        self.on_triple_fault: Callable[[int, str], None] = lambda index, reason: None
        #: Called on the loop thread when a hook raised in a vCPU (a device's bug): (cpu index, reason).
        self.on_internal_error: Callable[[int, str], None] = lambda index, reason: None
        #: RDX and RCX at every CPU start: CPU hot-plug block base, GPE0 base.
        self.boot_args = (0, 0)

    @property
    def runners(self) -> Mapping[int, VCPURunner]:
        """Runners by cpu index: a live read-only view, for the loop thread (which alone changes it)."""
        return MappingProxyType(self._by_index)

    def stack_top(self, index: int) -> int:
        """Initial RSP of vCPU ``index``."""
        return self.ram_size - index * STACK_SIZE

    def entry(self, runner: VCPURunner, rip: int) -> Entry:
        """Boot registers: RDI = cpu index, RSI = APIC ID, RDX/RCX = ACPI blocks, a stack of its own."""
        return Entry(rip, self.stack_top(runner.index), runner.index, runner.apic_id, *self.boot_args)

    def add(self, index: int, apic_id: int, make_engine: EngineFactory, *, paused: bool) -> VCPURunner:
        """A runner (thread started, CPU powered off) for a plugged CPU."""
        runner = VCPURunner(
            index,
            apic_id,
            make_engine,
            on_crash=lambda i, reason: self.bridge.post(self.on_crash, i, reason),
            on_triple_fault=lambda i, reason: self.bridge.post(self.on_triple_fault, i, reason),
            on_internal_error=lambda i, reason: self.bridge.post(self.on_internal_error, i, reason),
            scheduler=self.scheduler,
            nice=self.nice,
        )
        runner.start_thread()
        if not paused:
            runner.resume()
        self._by_index[index] = runner
        self._by_apic[apic_id] = runner
        return runner

    def remove(self, index: int) -> None:
        """End a vCPU's thread and forget it (its engine is closed by the thread)."""
        runner = self._by_index.pop(index)
        if self._by_apic.get(runner.apic_id) is runner:
            del self._by_apic[runner.apic_id]
        runner.exit()

    def power_on(self, index: int, rip: int) -> None:
        """Start CPU ``index`` at ``rip`` (the boot CPU at machine start)."""
        runner = self.runners[index]
        runner.power_on(self.entry(runner, rip))

    async def pause_all(self) -> None:
        """Stop every vCPU; return when none is inside emu_start any more."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        pending = 0

        def stopped() -> None:
            nonlocal pending
            pending -= 1
            if pending == 0 and not done.done():
                done.set_result(None)

        def on_stopped() -> None:
            self.bridge.post(stopped)

        for runner in list(self.runners.values()):
            if runner.pause(on_stopped):
                pending += 1
        if pending:
            await done

    def resume_all(self) -> None:
        """Let every vCPU run again."""
        for runner in self.runners.values():
            runner.resume()

    def send_ipi(self, source: int, shorthand: int, destination: int, mode: int, vector: int) -> None:
        """Deliver an IPI (called from the sending vCPU's thread)."""
        if shorthand == DEST_SELF:
            target = self._by_apic.get(source)
            targets = [target] if target is not None else []
        elif shorthand == DEST_ALL:
            targets = list(self._by_index.values())
        elif shorthand == DEST_ALL_BUT_SELF:
            targets = [r for r in list(self._by_index.values()) if r.apic_id != source]
        else:
            target = self._by_apic.get(destination)
            targets = [target] if target is not None else []
        for runner in targets:
            if mode == DELIVERY_INIT:
                runner.init()
            elif mode == DELIVERY_STARTUP:
                runner.startup(self.entry(runner, vector << 12))
            elif mode == DELIVERY_FIXED:
                runner.kick()

    async def snapshot(self, index: int) -> CPUSnapshot:
        """The registers of vCPU ``index``, read in its own thread between two blocks."""
        from qmpd.vcpu.snapshot import CPUSnapshot  # with the first register read, not at every start (~1 ms)

        runner = self.runners[index]
        future: asyncio.Future[CPUSnapshot] = asyncio.get_running_loop().create_future()

        def deliver(result: CPUSnapshot | BaseException) -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        def job(engine: VCPUEngine | None) -> None:
            result: CPUSnapshot | BaseException
            try:
                if engine is None or runner.state is VCPUState.POWERED_OFF:
                    result = CPUSnapshot.powered_off()
                else:
                    result = engine.snapshot(halted=runner.state is VCPUState.HALTED)
            except Exception as exc:
                result = exc
            self.bridge.post(deliver, result)

        if not runner.run_in_thread(job):
            return CPUSnapshot.powered_off()
        return await future

    def nmi(self, index: int) -> bool:
        """An NMI for CPU ``index`` (its local APIC let it through); False if that CPU ignores it now."""
        runner = self._by_index.get(index)
        return runner is not None and runner.nmi()

    def kick_all(self) -> None:
        """A device event every CPU should notice (e.g. an SCI); called from vCPU threads too."""
        for runner in list(self._by_index.values()):
            runner.kick()

    def kick_apic(self, apic_id: int) -> None:
        """A device interrupt routed to one CPU (the I/O APIC's physical destination); none if it is absent."""
        runner = self._by_apic.get(apic_id)
        if runner is not None:
            runner.kick()

    def states(self) -> dict[int, VCPUState]:
        """State of every vCPU."""
        return {index: runner.state for index, runner in self.runners.items()}

    def shutdown(self) -> None:
        """End every vCPU thread (the daemon is exiting)."""
        for index in list(self.runners):
            self.remove(index)
