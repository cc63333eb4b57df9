"""A parsed request in, a reply out: QEMU's request checks, in QEMU's order.

This is ``qmp_dispatch`` (qapi/qmp-dispatch.c) and ``monitor_qmp_dispatch``:
the input must be an object whose members are checked in QDict order; the
command must exist in the session's current mode (only ``qmp_capabilities``
before negotiation); ``exec-oob`` needs a command that allows it; arguments
are validated against the schema before any side effect; and every failure
becomes ``{"error": {"class", "desc"}}`` with the request's ``id`` when it had
one.  In-band commands are serialised across all sessions by one lock, as
QEMU serialises them under its big lock; out-of-band commands bypass it.
A command that waits for a worker thread (a memory dump, a long HMP output)
lends the lock out meanwhile, so other sessions are not held up by it.

Handlers get a context the dispatcher never looks into: a factory makes one
per session (the daemon's, commands.base.context_factory, holds the machine),
so session and protocol tests run with a smaller one and no machine.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from qmpd.commands.base import CommandRegistry, Handler, SessionControl, WorkerRunner
from qmpd.errors import CommandNotFound, GenericError, QMPError, error_to_wire
from qmpd.log import get_logger
from qmpd.qapi.arguments import check_arguments
from qmpd.qapi.schema import Schema
from qmpd.qobject.writer import qdict_order

log = get_logger(__name__)

#: A reply message, or an awaitable that produces one (async handler, or the lock is busy).
Outcome = dict[str, Any] | Awaitable[dict[str, Any]]

_NEGOTIATION_ONLY = "Expecting capabilities negotiation with 'qmp_capabilities'"
_ABSENT = object()
#: The members of a request that uses none of exec-oob's rules.
_USUAL_MEMBERS = frozenset({"execute", "arguments", "id"})
#: What a request without "arguments" is checked and called with (never mutated).
_NO_ARGUMENTS: dict[str, Any] = {}


class _Lease:
    """Whether the in-band command running in this task holds the big lock right now."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = True


#: The lease of the in-band command that runs in the current task (each task has its own context).
_LEASE: contextvars.ContextVar[_Lease | None] = contextvars.ContextVar("qmpd_bql_lease", default=None)


class BigLock:
    """One in-band command at a time across sessions, taken synchronously when free.

    asyncio.Lock is taken inside a task, one loop turn after dispatch; another
    session's command could slip in between.  This lock is taken in dispatch
    itself, and waiters are served first-come first-served.
    """

    def __init__(self) -> None:
        self._held = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def busy(self) -> bool:
        """Held, or someone is already waiting for it."""
        return self._held or bool(self._waiters)

    def try_acquire(self) -> bool:
        """Take the lock now if nobody holds or waits for it."""
        if self.busy:
            return False
        self._held = True
        return True

    async def acquire(self) -> None:
        """Wait for the lock (FIFO)."""
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Hand the lock to the next waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._held = False


class DispatchSession(SessionControl, Protocol):
    """What dispatch needs to know about the calling session."""

    @property
    def name(self) -> str: ...


#: Makes the context handed to a session's handlers: (session, the dispatcher's worker runner) -> context.
SessionContextFactory = Callable[[DispatchSession, WorkerRunner], object]


class Dispatcher:
    """Runs commands for every session of one machine."""

    def __init__(
        self, schema: Schema, registry: CommandRegistry, make_context: SessionContextFactory, *, checked: bool = False
    ) -> None:
        """``checked``: the registry's parity with ``schema`` was checked already (qmpd.handler_index's
        index was made from these very files); otherwise every handler is there and is checked now."""
        if not checked:
            problems = registry.parity_problems(schema)
            if problems:
                raise ValueError("schema and handlers disagree:\n  " + "\n  ".join(problems))
        self.schema = schema
        self.registry = registry
        self._make_context = make_context
        #: Serialises in-band commands across sessions (QEMU's big lock).
        self.bql = BigLock()
        #: Set once the daemon is going away: no further requests are executed.
        self.closing = False
        #: Whether each command's handler is a coroutine function (filled as commands are first run).
        self._is_async: dict[str, bool] = {}
        self._contexts: weakref.WeakKeyDictionary[DispatchSession, object] = weakref.WeakKeyDictionary()
        #: Whether each command gets its own log line (off below the info level).
        self.log_commands = True
        #: Observers called with (command, error class or None, seconds) after each command.
        self.observers: list[Callable[[str, str | None, float], None]] = []

    def dispatch(self, request: object, session: DispatchSession) -> Outcome:
        """Check and run one request; see the module docstring for the order."""
        started = time.perf_counter()
        if not isinstance(request, dict):
            return self._error(GenericError("QMP input must be a JSON object"), _ABSENT)
        request_id = request.get("id", _ABSENT)
        try:
            name, oob = self._check_request(request, session.oob_enabled)
            spec = self.schema.commands.get(name)
            if spec is None or (not session.negotiated and name != "qmp_capabilities"):
                raise CommandNotFound(f"The command {name} has not been found")
            if oob and not spec.allow_oob:
                raise GenericError(f"The command {name} does not support OOB")
            arguments = request.get("arguments", _NO_ARGUMENTS)
            check_arguments(self.schema, spec, arguments)
        except QMPError as error:
            if isinstance(error, CommandNotFound) and not session.negotiated:
                error = CommandNotFound(_NEGOTIATION_ONLY)
            return self._error(error, request_id)
        handler = self.registry.handler(name)
        kwargs = (
            {key.replace("-", "_") if key in spec.members else key: value for key, value in arguments.items()}
            if arguments
            else {}
        )
        context = self._contexts.get(session)
        if context is None:
            context = self._contexts[session] = self._make_context(session, self._work_unlocked)
        is_async = self._is_async.get(name)
        if is_async is None:
            is_async = self._is_async[name] = inspect.iscoroutinefunction(handler)
        if not oob and (is_async or self.bql.busy):
            held = self.bql.try_acquire()
            return self._run_locked(handler, context, kwargs, name, request_id, session, started, held)
        return self._finish(self._call(handler, context, kwargs, name), name, request_id, session, started)

    def internal_error_reply(self, request: object) -> dict[str, Any]:
        """The reply when qmpd itself failed on ``request`` (keeps the request's id)."""
        request_id = request.get("id", _ABSENT) if isinstance(request, dict) else _ABSENT
        return self._error(GenericError("Internal error in qmpd (see the qmpd log)"), request_id)

    def parse_error_reply(self, desc: str) -> dict[str, Any]:
        """The reply to input that could not be parsed (it never has an id)."""
        return {"error": {"class": "GenericError", "desc": desc}}

    @staticmethod
    def _check_request(request: dict[str, Any], allow_oob: bool) -> tuple[str, bool]:
        """``qmp_dispatch_check_obj``: members checked in QDict order."""
        name = request.get("execute")
        if (
            type(name) is str
            and _USUAL_MEMBERS.issuperset(request)
            and type(request.get("arguments", _NO_ARGUMENTS)) is dict
        ):
            return name, False  # the usual request: no check can fail, whatever the order
        exec_key: str | None = None
        for key in qdict_order(list(request)):
            value = request[key]
            if key == "execute" or (key == "exec-oob" and allow_oob):
                if not isinstance(value, str):
                    raise GenericError(f"QMP input member '{key}' must be a string")
                if exec_key is not None:
                    raise GenericError(f"QMP input member '{key}' clashes with '{exec_key}'")
                exec_key = key
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise GenericError("QMP input member 'arguments' must be an object")
            elif key != "id":
                raise GenericError(f"QMP input member '{key}' is unexpected")
        if exec_key is None:
            raise GenericError("QMP input lacks member 'execute'")
        return request[exec_key], exec_key == "exec-oob"

    @staticmethod
    def _call(handler: Handler, context: object, kwargs: Mapping[str, Any], name: str) -> Any:
        try:
            return _Returned(handler(context, **kwargs))
        except QMPError as error:
            return error
        except Exception as exc:
            return _internal_error(name, exc)

    async def _run_locked(
        self,
        handler: Handler,
        context: object,
        kwargs: Mapping[str, Any],
        name: str,
        request_id: object,
        session: DispatchSession,
        started: float,
        held: bool,
    ) -> dict[str, Any]:
        if not held:
            await self.bql.acquire()
        lease = _Lease()
        token = _LEASE.set(lease)
        try:
            result = handler(context, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            outcome: Any = _Returned(result)
        except QMPError as error:
            outcome = error
        except Exception as exc:  # the one boundary where handler bugs become replies
            outcome = _internal_error(name, exc)
        finally:
            _LEASE.reset(token)
            if lease.held:  # not held only when cancelled while taking it back
                self.bql.release()
        return self._finish(outcome, name, request_id, session, started)

    async def _work_unlocked(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` in a worker thread with the big lock lent out; take it back (FIFO) before returning."""
        lease = _LEASE.get()
        if lease is None or not lease.held:  # out-of-band, or not under the lock: nothing to lend
            return await asyncio.to_thread(work)
        lease.held = False
        self.bql.release()
        try:
            return await asyncio.to_thread(work)
        finally:
            await self.bql.acquire()  # if cancelled here, acquire cleans up and the lease stays released
            lease.held = True

    def _finish(
        self, outcome: Any, name: str, request_id: object, session: DispatchSession, started: float
    ) -> dict[str, Any]:
        elapsed = time.perf_counter() - started
        if isinstance(outcome, _Returned):
            value = outcome.value
            reply: dict[str, Any] = {"return": {} if value is None else value}
            if request_id is not _ABSENT:
                reply["id"] = request_id
            error_class = None
        else:
            reply = self._error(outcome, request_id)
            error_class = outcome.error_class
        if self.log_commands:
            log.info(
                "qmp.command",
                session=session.name,
                command=name,
                id=loggable(request_id),
                duration_ms=round(elapsed * 1000, 3),
                error=error_class,
            )
        for observer in self.observers:
            observer(name, error_class, elapsed)
        return reply

    @staticmethod
    def _error(error: QMPError, request_id: object) -> dict[str, Any]:
        reply: dict[str, Any] = {"error": error_to_wire(error)}
        if request_id is not _ABSENT:
            reply["id"] = request_id
        return reply


def loggable(value: object, limit: int = 80) -> object:
    """A bounded stand-in for client-supplied values in log lines (ids can be huge or deep)."""
    if value is _ABSENT:
        return None
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


class _Returned:
    """A handler's successful result (distinct from an error object)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _internal_error(name: str, exc: Exception) -> QMPError:
    log.exception("qmp.command.bug", command=name, exc_info=exc)
    return GenericError(f"Internal error while executing '{name}' (see the qmpd log)")
