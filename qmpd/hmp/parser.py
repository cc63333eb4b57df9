"""HMP argument parsing: QEMU's ``args_type`` strings and its expression syntax.

Each HMP command declares its arguments as QEMU does in hmp-commands.hx,
e.g. ``"index:i"`` or ``"name:S?"``.  Integer arguments are expressions
(``0x10+2*3``, parentheses, ``& | ^ ~``), evaluated with QEMU's grammar and
its error texts ("unexpected end of expression", "invalid char 'x' in
expression").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

#: QEMU's qemu_isdigit/qemu_isspace: ASCII only (str.isdigit() also accepts e.g. '²').
_DIGITS = "0123456789"
_SPACES = " \t\n\v\f\r"


class HMPSyntaxError(Exception):
    """A parse failure; ``str()`` is the line QEMU prints before its "Try help" hint."""


@dataclass(frozen=True)
class ArgSpec:
    """One declared argument: name, type letter, optional flag."""

    name: str
    kind: str
    optional: bool


def parse_args_type(args_type: str) -> list[ArgSpec]:
    """``"index:i,name:s?"`` to ArgSpecs."""
    specs = []
    for item in filter(None, args_type.split(",")):
        name, _, kind = item.partition(":")
        optional = kind.endswith("?")
        specs.append(ArgSpec(name, kind.rstrip("?"), optional))
    return specs


#: A character of a ``$name`` register reference (QEMU: ASCII letters, digits, ``_`` and ``.``).
_REGISTER_NAME = re.compile(r"[A-Za-z0-9_.]")
#: Binding strength of QEMU's binary operators (expr_sum < expr_prod < expr_logic); all left-associative.
_BINARY_LEVELS = {"+": 0, "-": 0, "*": 1, "/": 1, "%": 1, "&": 2, "|": 2, "^": 2}
#: Prefix operators as they sit on the operator stack (distinct from the binary ``+`` and ``-``).
_PREFIXES = {"+": "u+", "-": "u-", "~": "u~"}


class _Expr:
    """QEMU's expression grammar (monitor/hmp.c expr_sum) with an explicit stack instead of recursion.

    QEMU recurses once per parenthesis or prefix operator and crashes beyond
    about 100,000 of them; Python would raise RecursionError after 1,000.
    Here depth costs only list entries, so any nesting QEMU evaluates gives
    its answer, and deeper ones too.  Operators apply when the recursive
    version would apply them, so errors (division by zero, a missing ``)``)
    come out in the same order.
    """

    def __init__(self, text: str, pos: int, registers: Mapping[str, int] | None = None) -> None:
        self.text = text
        self.pos = pos
        #: ``$name`` values: the current CPU's registers (None: there is no CPU).
        self.registers = registers

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _SPACES:
            self.pos += 1

    def _peek(self) -> str:
        self._skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def sum(self) -> int:
        """Evaluate from ``pos``; stop before the first character that cannot continue the expression."""
        values: list[int] = []  # left operands of the pending binary operators
        ops: list[str] = []  # pending binary operators, "(" and prefixes, innermost last
        while True:
            value = self._operand(ops)
            while True:
                value = _apply_prefixes(ops, value)
                ch = self._peek()
                level = _BINARY_LEVELS.get(ch)
                if level is not None:
                    value = _reduce(ops, values, value, level)
                    values.append(value)
                    ops.append(ch)
                    self.pos += 1
                    break
                value = _reduce(ops, values, value, 0)
                if not ops:
                    return value
                if ch != ")":  # ops[-1] is "(": only prefixes and binaries are reduced above
                    raise HMPSyntaxError("')' expected")
                ops.pop()
                self.pos += 1

    def _operand(self, ops: list[str]) -> int:
        """Push prefixes and opening parentheses; return the number that follows them."""
        while True:
            ch = self._peek()
            if ch in _PREFIXES:
                ops.append(_PREFIXES[ch])
            elif ch == "(":
                ops.append("(")
            elif ch == "":
                raise HMPSyntaxError("unexpected end of expression")
            elif ch == "$":
                return self.register()
            else:
                return self.number()
            self.pos += 1

    def register(self) -> int:
        """``$name``: a register of the current CPU, as a signed 64-bit number (QEMU's get_monitor_def)."""
        end = self.pos + 1
        while end < len(self.text) and _REGISTER_NAME.fullmatch(self.text[end]):
            end += 1
        name = self.text[self.pos + 1 : end]
        self.pos = end
        self._skip()
        value = None if self.registers is None else self.registers.get(name)
        if value is None:
            raise HMPSyntaxError("unknown register")
        return value - (1 << 64) if value >= 1 << 63 else value

    def number(self) -> int:
        text = self.text
        start = self.pos
        if text.startswith(("0x", "0X"), start):
            end = start + 2
            while end < len(text) and text[end] in "0123456789abcdefABCDEF":
                end += 1
            digits, base = text[start + 2 : end], 16
        else:
            end = start
            while end < len(text) and text[end] in _DIGITS:
                end += 1
            digits, base = text[start:end], 10
            if len(digits) > 1 and digits.startswith("0"):
                base = 8
        if not digits:
            raise HMPSyntaxError(f"invalid char '{text[start]}' in expression")
        try:
            value = int(digits, base)
        except ValueError:
            raise HMPSyntaxError(f"invalid char '{text[start]}' in expression") from None
        if value >= 1 << 64:
            raise HMPSyntaxError("number too large")
        self.pos = end
        return value


def _apply_prefixes(ops: list[str], value: int) -> int:
    """Apply the prefix operators that directly precede a complete operand, innermost first."""
    while ops and ops[-1].startswith("u"):
        op = ops.pop()
        value = -value if op == "u-" else ~value if op == "u~" else value
    return value


def _reduce(ops: list[str], values: list[int], value: int, level: int) -> int:
    """Apply pending binary operators of ``level`` or stronger (left associativity) down to a ``(``."""
    while ops and _BINARY_LEVELS.get(ops[-1], -1) >= level:
        value = _binary(ops.pop(), values.pop(), value)
    return value


def _binary(op: str, lhs: int, rhs: int) -> int:
    if op == "+":
        return lhs + rhs
    if op == "-":
        return lhs - rhs
    if op == "*":
        return lhs * rhs
    if op == "&":
        return lhs & rhs
    if op == "|":
        return lhs | rhs
    if op == "^":
        return lhs ^ rhs
    if rhs == 0:
        raise HMPSyntaxError("division by zero")
    quotient = abs(lhs) // abs(rhs) * (1 if (lhs < 0) == (rhs < 0) else -1)  # C's: toward zero, exactly
    return quotient if op == "/" else lhs - rhs * quotient


def parse_expression(text: str, pos: int, registers: Mapping[str, int] | None = None) -> tuple[int, int]:
    """Evaluate an HMP integer expression at ``pos``; return (value, new position)."""
    expr = _Expr(text, pos, registers)
    value = expr.sum()
    return value, expr.pos


def _word(text: str, pos: int) -> tuple[str | None, int]:
    while pos < len(text) and text[pos] in _SPACES:
        pos += 1
    if pos >= len(text):
        return None, pos
    if text[pos] == '"':
        out = []
        pos += 1
        while pos < len(text) and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            out.append(text[pos])
            pos += 1
        if pos >= len(text):
            raise HMPSyntaxError("unterminated string")
        return "".join(out), pos + 1
    start = pos
    while pos < len(text) and text[pos] not in _SPACES:
        pos += 1
    return text[start:pos], pos


class FormatDefaults:
    """The ``/fmt`` a bare ``x``/``xp`` uses: the last one given (one per process, as QEMU's)."""

    def __init__(self) -> None:
        self.format = "x"
        self.size = 4


FORMAT_DEFAULTS = FormatDefaults()
_FORMAT_SIZES = {"b": 1, "h": 2, "w": 4, "g": 8, "L": 8}


def _parse_format(cmd_name: str, text: str, pos: int) -> tuple[dict[str, object], int]:
    """``/[count][format][size]`` (QEMU's ``/`` argument type): count, format letter, unit size."""
    defaults = FORMAT_DEFAULTS
    if not text.startswith("/", pos):
        return {"count": 1, "format": defaults.format, "size": -1 if defaults.format == "i" else defaults.size}, pos
    pos += 1
    count = 1
    if pos < len(text) and text[pos] in _DIGITS:
        count = 0
        while pos < len(text) and text[pos] in _DIGITS:
            count = count * 10 + int(text[pos])
            pos += 1
    size = -1
    fmt: str | None = None
    while pos < len(text):
        char = text[pos]
        if char in "oduxic":
            fmt = char
        elif char in _FORMAT_SIZES:
            size = _FORMAT_SIZES[char]
        else:
            break
        pos += 1
    if pos < len(text) and text[pos] not in _SPACES:
        raise HMPSyntaxError(f"invalid char in format: '{text[pos]}'")
    if fmt is None:
        fmt = defaults.format
    if fmt != "i":
        if size < 0:
            size = defaults.size
        defaults.size = size
    defaults.format = fmt
    return {"count": count, "format": fmt, "size": size}, pos


def parse_arguments(
    cmd_name: str, specs: list[ArgSpec], text: str, registers: Mapping[str, int] | None = None
) -> dict[str, object]:
    """Parse ``text`` (what follows the command name) against ``specs``; ``$reg`` in numbers reads ``registers``."""
    args: dict[str, object] = {}
    pos = 0
    for spec in specs:
        while pos < len(text) and text[pos] in _SPACES:
            pos += 1
        at_end = pos >= len(text)
        if spec.kind in ("i", "l"):
            if at_end and spec.optional:
                continue
            value, pos = parse_expression(text, pos, registers)
            if spec.kind == "i" and (value >> 32) & 0xFFFFFFFF:  # QEMU's test: any bit above 31, so no negatives
                raise HMPSyntaxError(f"'{cmd_name}' has failed: integer is for 32-bit values")
            args[spec.name] = value
        elif spec.kind == "s":
            word, pos = _word(text, pos)
            if word is None:
                if spec.optional:
                    continue
                raise HMPSyntaxError(f"{cmd_name}: string expected")
            args[spec.name] = word
        elif spec.kind == "O":  # QemuOpts text: one word (absent: no options at all), parsed by the command
            word, pos = _word(text, pos)
            if word is not None:
                args[spec.name] = word
        elif spec.kind == "S":
            if at_end:
                if spec.optional:
                    continue
                raise HMPSyntaxError(f"{cmd_name}: string expected")
            args[spec.name] = text[pos:].rstrip()
            pos = len(text)
        elif spec.kind == "/":
            values, pos = _parse_format(cmd_name, text, pos)
            args.update(values)
        elif spec.kind.startswith("-"):
            flag = spec.kind[1:2]
            args[spec.name] = False
            if text.startswith("-", pos) and pos + 1 < len(text):
                if text[pos + 1] != flag:
                    raise HMPSyntaxError(f"{cmd_name}: unsupported option -{text[pos + 1]}")
                args[spec.name] = True
                pos += 2
        else:
            raise ValueError(f"unsupported HMP argument type {spec.kind!r}")
    while pos < len(text) and text[pos] in _SPACES:
        pos += 1
    if pos < len(text):
        raise HMPSyntaxError(f"{cmd_name}: extraneous characters at the end of line")
    return args
