"""Prometheus metrics (``/metrics``), with prometheus-client on a registry of qmpd's own.

Counters that change with commands and hot-plug are updated as they happen (Dispatcher and
CPUHotplug observers); what describes the machine now (vCPUs, instructions, sessions) is read at
scrape time by a collector, so a scrape shows the machine as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from qmpd.dispatch import Dispatcher
from qmpd.http.view import cpu_slots
from qmpd.machine.machine import Machine
from qmpd.vcpu.engine import VCPUEngine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _MachineCollector(Collector):
    """vCPUs and sessions, read when scraped."""

    def __init__(self, machine: Machine, sessions_open: Callable[[], int]) -> None:
        self._machine = machine
        self._sessions_open = sessions_open

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        slots = cpu_slots(self._machine)
        yield GaugeMetricFamily("qmpd_vcpus_possible", "CPU slots of the machine (-smp maxcpus)", len(slots))
        yield GaugeMetricFamily("qmpd_vcpus_present", "CPUs plugged in", sum(s["present"] for s in slots))
        yield GaugeMetricFamily(
            "qmpd_vcpus_online", "CPUs the guest has started and not parked", sum(s["online"] for s in slots)
        )
        yield GaugeMetricFamily(
            "qmpd_vcpus_running", "vCPUs executing guest code now", sum(s["state"] == "running" for s in slots)
        )
        instructions = CounterMetricFamily(
            "qmpd_guest_instructions", "Guest instructions executed, per vCPU", labels=["cpu_index", "apic_id"]
        )
        for slot in slots:
            if slot["instructions"] is not None:
                instructions.add_metric([str(slot["slot"]), str(slot["apic_id"])], slot["instructions"])
        yield instructions
        yield GaugeMetricFamily("qmpd_qmp_sessions_open", "QMP sessions connected", self._sessions_open())
        yield GaugeMetricFamily("qmpd_vcpu_threads", "vCPU threads alive", self._machine.cpu_slots.live_vcpu_threads())
        yield GaugeMetricFamily("qmpd_vcpu_engines", "Unicorn engines alive (started vCPUs)", VCPUEngine.live)


class Metrics:
    """qmpd's metrics registry and the observers that feed it."""

    def __init__(self, dispatcher: Dispatcher, machine: Machine, sessions_open: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commands = Counter(
            "qmpd_qmp_commands",
            "QMP commands executed, by command and error class (none: success)",
            ["command", "error_class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "qmpd_qmp_command_duration_seconds",
            "Time from a command's arrival to its reply",
            ["command"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=self.registry,
        )
        self.hotplug_requests = Counter(
            "qmpd_hotplug_operations", "CPU plugs and unplugs asked of the guest", ["operation"], registry=self.registry
        )
        self.hotplug_latency = Histogram(
            "qmpd_hotplug_duration_seconds",
            "From a plug (unplug) request to the guest putting the CPU online (ejecting it)",
            ["operation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.guest_answers = Counter(
            "qmpd_hotplug_guest_answers",
            "How the guest answered plug/unplug requests through the ACPI block: failed (insert _OST not 0), "
            "refused (eject _OST not 0 or 0x84), late (first answer after 1 s), ignored (none after 5 s)",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.registry.register(_MachineCollector(machine, sessions_open))
        dispatcher.observers.append(self._command_done)
        machine.cpu_slots.latency.on_requested.append(lambda operation: self.hotplug_requests.labels(operation).inc())
        machine.cpu_slots.latency.on_completed.append(
            lambda operation, seconds: self.hotplug_latency.labels(operation).observe(seconds)
        )
        machine.cpu_slots.latency.on_answer.append(
            lambda operation, outcome: self.guest_answers.labels(operation, outcome).inc()
        )
        self._latency = machine.cpu_slots.latency

    def _command_done(self, command: str, error_class: str | None, seconds: float) -> None:
        self.commands.labels(command, error_class or "none").inc()
        self.latency.labels(command).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format (unanswered requests past their deadline counted first)."""
        self._latency.sweep()
        return generate_latest(self.registry)
