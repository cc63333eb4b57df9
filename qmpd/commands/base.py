"""What a command handler receives, and how handlers are registered.

A handler is a plain function named after nothing in particular: the
``@qmp_command("name")`` decorator ties it to its schema document, which
holds everything else (arguments, returns, OOB, features).  Its parameters
are the schema's members with ``-`` spelled ``_``; the dispatcher checks at
start-up that the two agree.  Its first argument is the session's
CommandContext, which the dispatcher gets from ``context_factory``.
"""

# Annotations are not postponed here: its NamedTuple is made at every start (tests/unit/test_startup_imports.py).

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

from qmpd.fdstore import SessionFds
from qmpd.qapi.host_tables import in_qemu_order

if TYPE_CHECKING:
    from qmpd.events import EventBus
    from qmpd.machine.machine import Machine
    from qmpd.migration.migrator import Migrator
    from qmpd.qapi.schema import Schema

Handler = Callable[..., Any]
_H = TypeVar("_H", bound=Handler)
_T = TypeVar("_T")
#: Runs blocking work in a worker thread and returns its result (see CommandContext.in_worker).
WorkerRunner = Callable[[Callable[[], Any]], Awaitable[Any]]


class SessionControl(Protocol):
    """The calling QMP session, as commands may see and change it."""

    @property
    def negotiated(self) -> bool: ...

    @property
    def oob_enabled(self) -> bool: ...

    @property
    def allows_host_commands(self) -> bool:
        """False for sessions a web page may have opened (the HTTP front): no exec: migration."""
        ...

    def negotiate(self, capabilities: Sequence[str]) -> None: ...


class DaemonControl(Protocol):
    """The process around the machine (quit ends it)."""

    def request_exit(self) -> None: ...

    def chardevs(self) -> list[dict[str, Any]]:
        """query-chardev's entries for the character devices the daemon owns (monitors, debug consoles)."""
        ...


class CommandContext(NamedTuple):
    """Everything a handler may touch (a NamedTuple: a dataclass took ~0.5 ms to create at every start)."""

    machine: "Machine"
    session: SessionControl
    schema: "Schema"
    events: "EventBus"
    daemon: DaemonControl
    #: The machine's one migration (built by the daemon).
    migrator: "Migrator"
    #: Names of every registered command (for query-commands).
    command_names: Sequence[str]
    #: The human monitor's current CPU (human-monitor-command's cpu-index), if chosen.
    hmp_cpu_index: int | None = None
    #: How in_worker runs work; the dispatcher's also lends out its big lock meanwhile.
    worker: WorkerRunner = asyncio.to_thread

    async def in_worker(self, work: Callable[[], _T]) -> _T:
        """Run blocking ``work`` (file I/O, big outputs) in a worker thread, so the event loop stays free.

        Under the dispatcher, other sessions' commands run meanwhile; QEMU would
        make them wait for its big lock.  ``work`` must not touch machine state
        that commands change: guest RAM and its own arguments only.
        """
        return cast(_T, await self.worker(work))

    @property
    def fds(self) -> SessionFds:
        """The calling session's passed descriptors; an empty table for callers that have none (REST)."""
        table = getattr(self.session, "fds", None)
        return table if isinstance(table, SessionFds) else SessionFds()

    def take_fd(self, name: str) -> int:
        """The descriptor this session passed with ``getfd`` as ``name`` (QEMU's monitor_get_fd).

        It leaves the session's table: the caller owns it and closes it.
        """
        return self.fds.take(name)


def context_factory(
    machine: "Machine", schema: "Schema", events: "EventBus", daemon: DaemonControl, migrator: "Migrator"
) -> Callable[[SessionControl, WorkerRunner], CommandContext]:
    """The daemon's contexts (the dispatcher makes one per session): every session's commands act on ``machine``."""
    command_names = tuple(in_qemu_order(schema.commands, "command_order"))  # query-commands' order is QEMU's

    def make_context(session: SessionControl, worker: WorkerRunner) -> CommandContext:
        return CommandContext(
            machine=machine,
            session=session,
            schema=schema,
            events=events,
            daemon=daemon,
            migrator=migrator,
            command_names=command_names,
            worker=worker,
        )

    return make_context


class CommandRegistry:
    """Handlers by command name; the schema says everything else."""

    def __init__(self) -> None:
        #: The handlers registered so far (their modules imported).
        self.handlers: dict[str, Handler] = {}
        #: Where each handler not imported yet is registered: command -> module (qmpd.handler_index).
        self.modules: dict[str, str] = {}

    def handler(self, name: str) -> Handler:
        """``name``'s handler, its module imported with the command's first use when it is not yet."""
        found = self.handlers.get(name)
        if found is None:
            importlib.import_module(self.modules[name])
            found = self.handlers[name]
        return found

    def command(self, name: str) -> Callable[[_H], _H]:
        """Register the decorated function as the handler of ``name``."""

        def register(function: _H) -> _H:
            if name in self.handlers:
                raise ValueError(f"command {name} registered twice")
            self.handlers[name] = function
            return function

        return register

    def parity_problems(self, schema: "Schema") -> list[str]:
        """Every disagreement between handlers and schema documents."""
        problems: list[str] = []
        for name in sorted(set(schema.commands) - set(self.handlers)):
            problems.append(f"schema/commands/{name}.json has no handler")
        for name in sorted(set(self.handlers) - set(schema.commands)):
            problems.append(f"handler {name} has no schema document")
        for name in sorted(set(schema.commands) & set(self.handlers)):
            spec = schema.commands[name]
            params = list(inspect.signature(self.handlers[name]).parameters.values())[1:]
            named = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
            expected = [member.replace("-", "_") for member in spec.members] if spec.gen else []
            if [p.name for p in named] != expected:
                problems.append(f"{name}: handler parameters {[p.name for p in named]} != schema members {expected}")
            required = set(spec.document.get("required", ())) if spec.gen else set()
            for param, member in zip(named, spec.members, strict=False):
                has_default = param.default is not inspect.Parameter.empty
                if (member in required) == has_default:
                    problems.append(f"{name}: parameter {param.name} default does not match 'required'")
            takes_more = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
            if takes_more != spec.open_arguments:
                problems.append(f"{name}: **kwargs must be present exactly when additionalProperties is allowed")
        return problems


#: The registry every module in qmpd.commands adds its handlers to.
REGISTRY = CommandRegistry()
qmp_command = REGISTRY.command
