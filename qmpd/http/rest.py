"""The REST API (``/api/v1``): machine and CPU views, resize in Cloud Hypervisor's manner, pause/resume/reset,
the guest's hot-plug policy.

Every change runs as a QMP command through the Dispatcher, as if a monitor had sent it: the same
checks and errors, the big lock, events to every session, a log line.  Errors come back as JSON
``{"error": {"class": ..., "desc": ...}}`` with an HTTP status chosen from the QMP error class.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from qmpd.dispatch import Dispatcher
from qmpd.errors import QMPError, error_to_wire
from qmpd.events import EventBus
from qmpd.http.view import cpu_slots, guest_policy_view, machine_summary
from qmpd.machine.guest_policy import TYPE_NAME as POLICY_TYPE
from qmpd.machine.guest_policy import GuestPolicy, check_value
from qmpd.machine.machine import Machine

#: HTTP status for each QMP error class.
STATUS = {
    "GenericError": 400,
    "CommandNotFound": 404,
    "DeviceNotFound": 404,
    "DeviceNotActive": 409,
    "KVMMissingCap": 400,
}
#: How long vm.resize waits for the guest's acknowledgement, unless the request says otherwise.
RESIZE_TIMEOUT = 10.0


class QMPFailure(Exception):
    """A QMP command answered with an error."""

    def __init__(self, error: Mapping[str, Any], status: int | None = None) -> None:
        super().__init__(error.get("desc"))
        self.error = dict(error)
        self.status = status or STATUS.get(str(error.get("class")), 400)


def error_response(error_class: str, desc: str, status: int) -> web.Response:
    return web.json_response({"error": {"class": error_class, "desc": desc}}, status=status)


class InternalSession:
    """The caller the Dispatcher sees for REST requests: negotiated, no OOB."""

    name = "http"
    negotiated = True
    oob_enabled = False
    allows_host_commands = False

    def negotiate(self, capabilities: Sequence[str]) -> None:
        """Never called: REST requests do not run qmp_capabilities."""


class RestAPI:
    """Handlers for ``/api/v1``."""

    def __init__(self, dispatcher: Dispatcher, events: EventBus, machine: Machine) -> None:
        self._dispatcher = dispatcher
        self._events = events
        self._machine = machine
        self._session = InternalSession()
        #: One resize at a time (each is a sequence of plugs or unplugs and waits).
        self._resizing = asyncio.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/machine", self.get_machine),
            web.get("/api/v1/cpus", self.get_cpus),
            web.put("/api/v1/vm.resize", self.resize),
            web.put("/api/v1/vm.pause", self._command("stop")),
            web.put("/api/v1/vm.resume", self._command("cont")),
            web.put("/api/v1/vm.reset", self._command("system_reset")),
            web.get("/api/v1/guest-policy", self.get_guest_policy),
            web.put("/api/v1/guest-policy", self.put_guest_policy),
            web.delete("/api/v1/guest-policy/{id}", self.delete_guest_policy),
        ]

    async def execute(self, name: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Run one QMP command; its return value, or QMPFailure."""
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = dict(arguments)
        outcome = self._dispatcher.dispatch(request, self._session)
        reply = await outcome if inspect.isawaitable(outcome) else outcome
        if "error" in reply:
            raise QMPFailure(reply["error"])
        return reply["return"]

    async def get_machine(self, request: web.Request) -> web.Response:
        return web.json_response(machine_summary(self._machine))

    async def get_cpus(self, request: web.Request) -> web.Response:
        return web.json_response({"cpus": cpu_slots(self._machine)})

    async def get_guest_policy(self, request: web.Request) -> web.Response:
        return web.json_response(guest_policy_view(self._machine))

    async def put_guest_policy(self, request: web.Request) -> web.Response:
        """``PUT /api/v1/guest-policy {"id": ID, property: value, ...}``: create the policy (object-add)
        or change the given properties (qom-set each, once all of them have passed qom-set's checks,
        so a bad one changes nothing).  Answers with the policy as GET shows it."""
        body = await _json_body(request)
        if not isinstance(body, dict):
            return error_response("GenericError", "the request body must be a JSON object", 400)
        policy_id = body.get("id")
        if not isinstance(policy_id, str):
            return error_response("GenericError", "'id' must be the policy's id, a string", 400)
        props = {key: value for key, value in body.items() if key != "id"}
        existing = self._machine.qom.objects.child(policy_id)
        try:
            if existing is None:
                await self.execute("object-add", {"qom-type": POLICY_TYPE, "id": policy_id, **props})
            elif not isinstance(existing, GuestPolicy):
                raise QMPFailure({"class": "GenericError", "desc": f"object '{policy_id}' is not a {POLICY_TYPE}"})
            else:
                try:
                    for name, value in props.items():
                        check_value(name, value)
                except QMPError as exc:
                    raise QMPFailure(error_to_wire(exc)) from None
                for name, value in props.items():
                    path = f"/objects/{policy_id}"
                    await self.execute("qom-set", {"path": path, "property": name, "value": value})
        except QMPFailure as failure:
            return web.json_response({"error": failure.error}, status=failure.status)
        view = guest_policy_view(self._machine)
        return web.json_response(next(p for p in view["policies"] if p["id"] == policy_id))

    async def delete_guest_policy(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /api/v1/guest-policy/ID``: object-del (the slots go back to the default or another policy)."""
        policy_id = request.match_info["id"]
        if not isinstance(self._machine.qom.objects.child(policy_id), GuestPolicy):
            return error_response("DeviceNotFound", f"no {POLICY_TYPE} '{policy_id}'", 404)
        try:
            await self.execute("object-del", {"id": policy_id})
        except QMPFailure as failure:
            return web.json_response({"error": failure.error}, status=failure.status)
        return web.Response(status=204)

    def _command(self, name: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                await self.execute(name)
            except QMPFailure as failure:
                return web.json_response({"error": failure.error}, status=failure.status)
            return web.Response(status=204)

        return handler

    async def resize(self, request: web.Request) -> web.Response:
        """``PUT /api/v1/vm.resize {"desired_vcpus": N}``: plug or unplug until N CPUs are present.

        Returns once the guest has put every plugged CPU online (_OST) and ejected every unplugged
        one (DEVICE_DELETED), or with 504 after ``timeout`` seconds (body field, default 10).
        """
        body = await _json_body(request)
        if not isinstance(body, dict):
            return error_response("GenericError", "the request body must be a JSON object", 400)
        unknown = sorted(set(body) - {"desired_vcpus", "timeout"})
        if unknown:
            return error_response("GenericError", f"unexpected field '{unknown[0]}'", 400)
        desired = body.get("desired_vcpus")
        timeout = body.get("timeout", RESIZE_TIMEOUT)
        max_cpus = self._machine.spec.smp.max_cpus
        if not isinstance(desired, int) or isinstance(desired, bool) or not 1 <= desired <= max_cpus:
            return error_response("GenericError", f"desired_vcpus must be an integer from 1 to {max_cpus}", 400)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 600:
            return error_response("GenericError", "timeout must be a number of seconds from 0 to 600", 400)
        async with self._resizing:
            try:
                changed = await self._resize(desired, float(timeout))
            except QMPFailure as failure:
                return web.json_response({"error": failure.error}, status=failure.status)
        present = [slot["slot"] for slot in cpu_slots(self._machine) if slot["present"]]
        return web.json_response({"desired_vcpus": desired, "present": present, **changed})

    async def _resize(self, desired: int, timeout: float) -> dict[str, list[int]]:
        slots = cpu_slots(self._machine)
        present = [slot for slot in slots if slot["present"]]
        plugged: list[int] = []
        unplugged: list[int] = []
        if desired > len(present):
            free = [slot for slot in slots if not slot["present"]][: desired - len(present)]
            for slot in free:
                arguments = {"driver": slot["type"], **slot["props"]}
                await self._change_and_wait("device_add", arguments, _online(slot["slot"]), timeout)
                plugged.append(slot["slot"])
        elif desired < len(present):
            removable = sorted((s for s in present if s["hotpluggable"]), key=lambda s: -s["slot"])
            if len(present) - desired > len(removable):
                raise QMPFailure(
                    {"class": "GenericError", "desc": f"cannot go below {len(present) - len(removable)} vCPUs"}
                )
            for slot in removable[: len(present) - desired]:
                await self._change_and_wait("device_del", {"id": slot["qom_path"]}, _deleted(slot["qom_path"]), timeout)
                unplugged.append(slot["slot"])
        return {"plugged": plugged, "unplugged": unplugged}

    async def _change_and_wait(
        self,
        command: str,
        arguments: dict[str, Any],
        done: Callable[[str, Mapping[str, Any] | None], bool],
        timeout: float,
    ) -> None:
        acknowledged = asyncio.Event()

        def observe(name: str, data: Mapping[str, Any] | None) -> None:
            if done(name, data):
                acknowledged.set()

        self._events.observers.append(observe)
        try:
            await self.execute(command, arguments)
            try:
                await asyncio.wait_for(acknowledged.wait(), timeout)
            except TimeoutError:
                desc = f"{command} {json.dumps(arguments)}: the guest did not acknowledge it within {timeout:g} s"
                if self._machine.cpu_slots.acpi_legacy_mode:
                    desc += " (it has not enabled the ACPI CPU hot-plug interface)"
                raise QMPFailure({"class": "GenericError", "desc": desc}, status=504) from None
        finally:
            self._events.observers.remove(observe)


async def _json_body(request: web.Request) -> object:
    """The body as JSON, or None when it is not UTF-8 JSON.  Nesting too deep for the parser
    (60,000 ``[`` fit in a 64 KiB body) is a bad body like any other, not a qmpd failure."""
    try:
        return json.loads((await request.read()).decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _online(index: int) -> Callable[[str, Mapping[str, Any] | None], bool]:
    def match(name: str, data: Mapping[str, Any] | None) -> bool:
        info = (data or {}).get("info", {})
        return (
            name == "ACPI_DEVICE_OST"
            and info.get("slot") == str(index)
            and info.get("source") == 1
            and info.get("status") == 0
        )

    return match


def _deleted(path: str) -> Callable[[str, Mapping[str, Any] | None], bool]:
    def match(name: str, data: Mapping[str, Any] | None) -> bool:
        return name == "DEVICE_DELETED" and (data or {}).get("path") == path

    return match
