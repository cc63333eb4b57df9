"""The human monitor behind ``human-monitor-command``: lookup, parsing, output.

Commands are declared like QEMU's hmp-commands.hx entries (names with
``|`` aliases, an ``args_type`` string, a parameter synopsis and a help line).
Output is text; like QEMU's monitor every ``\\n`` goes out as ``\\r\\n``.  A
handler's QMP error is printed as ``Error: <desc>``; unknown commands are
reported in the reply text, not as a QMP error, as QEMU does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from qmpd.commands.base import CommandContext
from qmpd.errors import QMPError
from qmpd.hmp.parser import HMPSyntaxError, parse_args_type, parse_arguments

#: Output longer than this (characters) gets its CRLF line ends in a worker thread.
BIG_OUTPUT = 1 << 20
#: A handler returns its text (or None), directly or from a coroutine (commands that wait for vCPUs).
HMPHandler = Callable[..., str | Awaitable[str | None] | None]


@dataclass(frozen=True)
class HMPCommand:
    """One HMP command (or ``info`` subcommand)."""

    names: str
    args_type: str
    params: str
    help: str
    handler: HMPHandler
    #: Sub-commands (only ``info`` has them).
    sub: dict[str, HMPCommand] = field(default_factory=dict)

    @property
    def aliases(self) -> list[str]:
        """Every name the command answers to."""
        return self.names.split("|")

    def help_line(self, prefix: str = "") -> str:
        """``name params -- help`` as QEMU prints it."""
        return f"{prefix}{self.names} {self.params} -- {self.help}\n"


class HMPTable:
    """Top-level commands and ``info`` subcommands."""

    def __init__(self) -> None:
        self.commands: list[HMPCommand] = []
        self.info: list[HMPCommand] = []
        #: Reads the ``$name`` values of the monitor's current CPU (None: no CPU); set with the commands.
        self.registers: Callable[[CommandContext], Awaitable[Mapping[str, int] | None]] | None = None

    def command(
        self, names: str, args_type: str = "", params: str = "", help: str = ""
    ) -> Callable[[HMPHandler], HMPHandler]:
        """Declare a top-level command."""

        def register(handler: HMPHandler) -> HMPHandler:
            self.commands.append(HMPCommand(names, args_type, params, help, handler))
            return handler

        return register

    def info_command(
        self, names: str, args_type: str = "", params: str = "", help: str = ""
    ) -> Callable[[HMPHandler], HMPHandler]:
        """Declare an ``info`` subcommand."""

        def register(handler: HMPHandler) -> HMPHandler:
            self.info.append(HMPCommand(names, args_type, params, help, handler))
            return handler

        return register

    @staticmethod
    def _find(table: list[HMPCommand], name: str) -> HMPCommand | None:
        for entry in table:
            if name in entry.aliases:
                return entry
        return None

    def help_text(self, topic: str | None) -> str:
        """``help [command [subcommand]]``."""
        if not topic:
            lines = [entry.help_line() for entry in sorted(self.commands, key=lambda e: e.names)]
            return "".join(lines)
        words = topic.split()
        if words[0] == "info":
            if len(words) == 1:
                return "".join(entry.help_line("info ") for entry in sorted(self.info, key=lambda e: e.names))
            sub = self._find(self.info, words[1])
            return sub.help_line("info ") if sub else f"unknown command: 'info {words[1]}'\n"
        entry = self._find(self.commands, words[0])
        return entry.help_line() if entry else f"unknown command: '{words[0]}'\n"

    async def execute(self, ctx: CommandContext, line: str) -> str:
        """Run one command line; return its output with CRLF line ends."""
        text = await self._execute(ctx, line)
        if len(text) > BIG_OUTPUT:  # a long x/xp: copying it would hold the event loop for tens of ms
            return await ctx.in_worker(partial(_crlf, text))
        return _crlf(text)

    async def _execute(self, ctx: CommandContext, line: str) -> str:
        text = line.strip()
        if not text:
            return ""
        name, _, rest = text.partition(" ")
        entry = self._find(self.commands, name)
        if entry is None:
            return f"unknown command: '{name}'\n"
        typed = name
        if entry.names == "info":
            rest = rest.strip()
            if not rest:
                return self.help_text("info")
            sub_name, _, rest = rest.partition(" ")
            sub = self._find(self.info, sub_name)
            if sub is None:
                return f"unknown command: 'info {sub_name}'\n"
            entry, typed = sub, f"info {sub_name}"
        registers = await self.registers(ctx) if "$" in rest and self.registers is not None else None
        try:
            args = parse_arguments(entry.names, parse_args_type(entry.args_type), rest, registers)
        except HMPSyntaxError as exc:
            return f'{exc}\nTry "help {typed}" for more information\n'
        try:
            result = entry.handler(ctx, **args)
            if inspect.isawaitable(result):
                result = await result
            return result or ""
        except QMPError as error:
            return f"Error: {error.desc}\n"


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


#: The HMP command table; qmpd.hmp.commands fills it.
HMP = HMPTable()
