"""HMP argument parsing: QEMU's ``args_type`` strings and its expression syntax.

Each HMP command declares its arguments as QEMU does in hmp-commands.hx,
e.g. ``"index:i"`` or ``"name:S?"``.  Integer arguments are expressions
(``0x10+2*3``, parentheses, ``& | ^ ~``), evaluated with QEMU's grammar and
its error texts ("unexpected end of expression", "invalid char 'x' in
expression").
"""

from __future__ import annotations

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


class _Expr:
    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _SPACES:
            self.pos += 1

    def _peek(self) -> str:
        self._skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def sum(self) -> int:
        value = self.prod()
        while self._peek() in ("+", "-"):
            op = self.text[self.pos]
            self.pos += 1
            rhs = self.prod()
            value = value + rhs if op == "+" else value - rhs
        return value

    def prod(self) -> int:
        value = self.logic()
        while self._peek() in ("*", "/", "%"):
            op = self.text[self.pos]
            self.pos += 1
            rhs = self.logic()
            if op == "*":
                value *= rhs
            else:
                if rhs == 0:
                    raise HMPSyntaxError("division by zero")
                value = int(value / rhs) if op == "/" else value - rhs * int(value / rhs)
        return value

    def logic(self) -> int:
        value = self.unary()
        while self._peek() in ("&", "|", "^"):
            op = self.text[self.pos]
            self.pos += 1
            rhs = self.unary()
            value = value & rhs if op == "&" else value | rhs if op == "|" else value ^ rhs
        return value

    def unary(self) -> int:
        ch = self._peek()
        if ch == "+":
            self.pos += 1
            return self.unary()
        if ch == "-":
            self.pos += 1
            return -self.unary()
        if ch == "~":
            self.pos += 1
            return ~self.unary()
        if ch == "(":
            self.pos += 1
            value = self.sum()
            if self._peek() != ")":
                raise HMPSyntaxError("')' expected")
            self.pos += 1
            return value
        if ch == "":
            raise HMPSyntaxError("unexpected end of expression")
        return self.number()

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


def parse_expression(text: str, pos: int) -> tuple[int, int]:
    """Evaluate an HMP integer expression at ``pos``; return (value, new position)."""
    expr = _Expr(text, pos)
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


def parse_arguments(cmd_name: str, specs: list[ArgSpec], text: str) -> dict[str, object]:
    """Parse ``text`` (what follows the command name) against ``specs``."""
    args: dict[str, object] = {}
    pos = 0
    for spec in specs:
        while pos < len(text) and text[pos] in _SPACES:
            pos += 1
        at_end = pos >= len(text)
        if spec.kind in ("i", "l"):
            if at_end and spec.optional:
                continue
            value, pos = parse_expression(text, pos)
            if spec.kind == "i" and not -(1 << 31) <= value < 1 << 32:
                raise HMPSyntaxError("integer is for 32-bit values")
            args[spec.name] = value
        elif spec.kind == "s":
            word, pos = _word(text, pos)
            if word is None:
                if spec.optional:
                    continue
                raise HMPSyntaxError(f"{cmd_name}: string expected")
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
