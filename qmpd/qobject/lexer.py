"""Bytes to JSON tokens, with QEMU's lexical rules and its error recovery.

QMP input is a byte stream, not lines.  QEMU's lexer (qobject/json-lexer.c) is
a DFA: it accepts single-quoted strings, reports any byte that cannot start or
continue a token as a "stray" token, and after such an error skips input until
a structural character, a control character or a 0xFE/0xFF byte.  We follow
the same automaton so that every error text and every recovery point match.

Speed comes from consuming the DFA's self-loops (string bodies, digit runs,
whitespace, keyword letters, bytes skipped in recovery) with one regular
expression match each, instead of one Python step per byte.  The table and
those expressions are built with the first feed (_automaton): ordinary input
never gets here (qobject/streamer.py's fast path), and building them took
~2 ms of every start.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

_T = TypeVar("_T")


class Tok(enum.IntEnum):
    """Token types handed to the streamer."""

    ERROR = 0
    LCURLY = 1
    RCURLY = 2
    LSQUARE = 3
    RSQUARE = 4
    COLON = 5
    COMMA = 6
    INTEGER = 7
    FLOAT = 8
    KEYWORD = 9
    STRING = 10
    #: A token that outgrew the size limit inside the lexer (QEMU hands the
    #: streamer the lexer state as its type; the streamer can only reject it).
    OVERSIZE = 11


class _S:
    """Lexer states (QEMU's IN_* states): plain integers, not an enum, which would cost every start ~0.2 ms."""

    START = 0
    RECOVERY = 1
    DQ_STRING = 2
    DQ_STRING_ESCAPE = 3
    SQ_STRING = 4
    SQ_STRING_ESCAPE = 5
    ZERO = 6
    SIGN = 7
    DIGITS = 8
    MANTISSA = 9
    MANTISSA_DIGITS = 10
    EXP_E = 11
    EXP_SIGN = 12
    EXP_DIGITS = 13
    KEYWORD = 14


#: How many states there are.
_STATES = 15
#: Transition encoding: values below _TOKEN are states; _TOKEN + Tok are tokens.
_TOKEN = 32
#: Flag: the transition did not consume the byte (QEMU's LOOKAHEAD).
_LOOKAHEAD = 64
_ERROR = _TOKEN + Tok.ERROR

MAX_TOKEN_SIZE = 64 << 20


def _build_table() -> list[list[int]]:
    table = [[_ERROR] * 256 for _ in range(_STATES)]

    def fill(state: int, chars: range | bytes | str, target: int) -> None:
        if isinstance(chars, str):
            chars = chars.encode("latin-1")
        for ch in chars:
            table[state][ch] = target

    def terminal(state: int, tok: Tok) -> None:
        fill(state, range(256), _TOKEN + tok | _LOOKAHEAD)

    structural = b"[]{}:,"
    fill(_S.RECOVERY, range(0x00, 0x20), _S.START | _LOOKAHEAD)
    fill(_S.RECOVERY, range(0x20, 0xFE), _S.RECOVERY)
    fill(_S.RECOVERY, range(0xFE, 0x100), _S.START | _LOOKAHEAD)
    fill(_S.RECOVERY, "\t", _S.RECOVERY)
    fill(_S.RECOVERY, structural, _S.START | _LOOKAHEAD)

    for body, escape, quote in (
        (_S.DQ_STRING, _S.DQ_STRING_ESCAPE, '"'),
        (_S.SQ_STRING, _S.SQ_STRING_ESCAPE, "'"),
    ):
        fill(escape, range(0x20, 0xFE), body)
        fill(body, range(0x20, 0xFE), body)
        fill(body, "\\", escape)
        fill(body, quote, _TOKEN + Tok.STRING)

    terminal(_S.ZERO, Tok.INTEGER)
    fill(_S.ZERO, "0123456789", _ERROR)
    fill(_S.ZERO, ".", _S.MANTISSA)

    terminal(_S.EXP_DIGITS, Tok.FLOAT)
    fill(_S.EXP_DIGITS, "0123456789", _S.EXP_DIGITS)
    fill(_S.EXP_SIGN, "0123456789", _S.EXP_DIGITS)
    fill(_S.EXP_E, "-+", _S.EXP_SIGN)
    fill(_S.EXP_E, "0123456789", _S.EXP_DIGITS)

    terminal(_S.MANTISSA_DIGITS, Tok.FLOAT)
    fill(_S.MANTISSA_DIGITS, "0123456789", _S.MANTISSA_DIGITS)
    fill(_S.MANTISSA_DIGITS, "eE", _S.EXP_E)
    fill(_S.MANTISSA, "0123456789", _S.MANTISSA_DIGITS)

    terminal(_S.DIGITS, Tok.INTEGER)
    fill(_S.DIGITS, "0123456789", _S.DIGITS)
    fill(_S.DIGITS, "eE", _S.EXP_E)
    fill(_S.DIGITS, ".", _S.MANTISSA)

    fill(_S.SIGN, "0", _S.ZERO)
    fill(_S.SIGN, "123456789", _S.DIGITS)

    terminal(_S.KEYWORD, Tok.KEYWORD)
    fill(_S.KEYWORD, "abcdefghijklmnopqrstuvwxyz", _S.KEYWORD)

    fill(_S.START, '"', _S.DQ_STRING)
    fill(_S.START, "'", _S.SQ_STRING)
    fill(_S.START, "0", _S.ZERO)
    fill(_S.START, "123456789", _S.DIGITS)
    fill(_S.START, "-", _S.SIGN)
    for ch, tok in zip("{}[]:,", (Tok.LCURLY, Tok.RCURLY, Tok.LSQUARE, Tok.RSQUARE, Tok.COLON, Tok.COMMA), strict=True):
        fill(_S.START, ch, _TOKEN + tok)
    fill(_S.START, "abcdefghijklmnopqrstuvwxyz", _S.KEYWORD)
    fill(_S.START, " \t\r\n", _S.START)
    return table


class _Automaton:
    """The transition table and the regular expressions that shortcut it."""

    __slots__ = ("recovery_run", "runs", "table", "whole_token")

    def __init__(self) -> None:
        self.table = _build_table()
        #: Bytes that keep each state where it is (the DFA's self-loops), as one regex per state.
        self.runs: dict[int, re.Pattern[bytes]] = {
            _S.START: re.compile(rb"[ \t\r\n]+"),
            _S.RECOVERY: re.compile(rb"[\t\x20-\x2b\x2d-\x39\x3b-\x5a\x5c\x5e-\x7a\x7c\x7e-\xfd]+"),
            _S.DQ_STRING: re.compile(rb"[\x20\x21\x23-\x5b\x5d-\xfd]+"),
            _S.SQ_STRING: re.compile(rb"[\x20-\x26\x28-\x5b\x5d-\xfd]+"),
            _S.DIGITS: re.compile(rb"[0-9]+"),
            _S.MANTISSA_DIGITS: re.compile(rb"[0-9]+"),
            _S.EXP_DIGITS: re.compile(rb"[0-9]+"),
            _S.KEYWORD: re.compile(rb"[a-z]+"),
        }
        self.recovery_run = self.runs[_S.RECOVERY]
        #: One whole token at the start state, optionally after whitespace: a structural character, a
        #: complete string, a number or keyword whose end is decided by the byte after it (present in
        #: the data, not consumed), or a byte that cannot start a token.  This is only a shortcut
        #: through the table (which handles everything else: tokens cut by the end of the data,
        #: malformed numbers, bytes that end strings, oversize tokens) and yields what it would.
        self.whole_token = re.compile(
            rb"[ \t\r\n]*(?:"
            rb"([\x7b\x7d\x5b\x5d:,])"
            rb'|("[\x20\x21\x23-\x5b\x5d-\xfd]*(?:\\[\x20-\xfd][\x20\x21\x23-\x5b\x5d-\xfd]*)*")'
            rb"|('[\x20-\x26\x28-\x5b\x5d-\xfd]*(?:\\[\x20-\xfd][\x20-\x26\x28-\x5b\x5d-\xfd]*)*')"
            rb"|(-?(?:0(?=[^0-9.])|[1-9][0-9]*(?=[^0-9eE.])))"
            rb"|(-?(?:(?:0|[1-9][0-9]*)\.[0-9]+(?=[^0-9eE])"
            rb"|(?:[1-9][0-9]*|(?:0|[1-9][0-9]*)\.[0-9]+)[eE][-+]?[0-9]+(?=[^0-9])))"
            rb"|([a-z]+(?=[^a-z]))"
            rb"|([^\"'0-9\x2da-z\x7b\x7d\x5b\x5d:, \t\r\n])"
            rb")"
        )


@functools.cache
def _automaton() -> _Automaton:
    """The automaton, built with the first feed that needs it."""
    return _Automaton()


#: Token type by whole_token group (group 1, structural, goes by the byte).
_GROUP_TOKEN = (Tok.ERROR, Tok.ERROR, Tok.STRING, Tok.STRING, Tok.INTEGER, Tok.FLOAT, Tok.KEYWORD, Tok.ERROR)
_ERROR_GROUP = 7
_STRUCTURAL = {
    ord(ch): tok
    for ch, tok in zip("{}[]:,", (Tok.LCURLY, Tok.RCURLY, Tok.LSQUARE, Tok.RSQUARE, Tok.COLON, Tok.COMMA), strict=True)
}
_TOKS = tuple(Tok)
_START = int(_S.START)
_RECOVERY = int(_S.RECOVERY)

#: States whose self-loop bytes are dropped instead of collected into a token.
_DISCARDING = frozenset({_S.START, _S.RECOVERY})


class JSONLexer:
    """Incremental lexer: feed bytes, get (token type, token bytes) pairs.

    ``feed`` is a generator over whatever ``on_token`` returns for completed
    tokens (None results are skipped), so a consumer can stop pulling, keep
    the generator, and resume later exactly where input processing paused.
    """

    def __init__(self, *, max_token_size: int = MAX_TOKEN_SIZE) -> None:
        #: Longest single token before it is cut off and reported (QEMU: 64 MiB).
        self.max_token_size = max_token_size
        self._state: int = _S.START
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def idle(self) -> bool:
        """True between tokens, outside error recovery."""
        return self._state == _S.START and not self._parts

    def reset(self) -> None:
        """Forget any partial token (a new connection starts clean)."""
        self._state = _S.START
        self._parts.clear()
        self._size = 0

    def _take(self) -> bytes:
        token = b"".join(self._parts) if len(self._parts) != 1 else self._parts[0]
        self._parts.clear()
        self._size = 0
        return token

    def feed(self, data: bytes, on_token: Callable[[Tok, bytes], _T | None]) -> Iterator[_T]:
        """Lex ``data``; yield each non-None result of ``on_token``."""
        automaton = _automaton()
        runs = automaton.runs
        whole = automaton.whole_token.match
        recovery_run = automaton.recovery_run
        table = automaton.table
        limit = self.max_token_size
        pos = 0
        n = len(data)
        while pos < n:
            state = self._state
            if state == _START:
                # At the start state nothing is collected yet (self._parts is empty).
                m = whole(data, pos)
                if m is not None:
                    group = m.lastindex
                    assert group is not None
                    start = m.start(group)
                    end = m.end()
                    if end - start <= limit:
                        pos = end
                        if group == 1:
                            tok = _STRUCTURAL[data[start]]
                        else:
                            tok = _GROUP_TOKEN[group]
                            if group == _ERROR_GROUP:
                                self._state = _RECOVERY
                        result = on_token(tok, data[start:end])
                        if result is not None:
                            yield result
                        continue
            elif state == _RECOVERY:
                # Recovery drops bytes up to one it does not take, which goes back to the start state.
                m = recovery_run.match(data, pos)
                if m is not None:
                    pos = m.end()
                if pos < n:
                    self._state = _START
                continue
            run = runs.get(state)
            if run is not None:
                m = run.match(data, pos)
                if m is not None:
                    end = m.end()
                    if state not in _DISCARDING:
                        room = limit + 1 - self._size
                        if end - pos >= room:
                            # QEMU cuts a token off once it outgrows the limit.
                            self._parts.append(data[pos : pos + room])
                            pos += room
                            self._state = _S.START
                            result = on_token(Tok.OVERSIZE, self._take())
                            if result is not None:
                                yield result
                            continue
                        self._parts.append(data[pos:end])
                        self._size += end - pos
                    pos = end
                    continue
            results = self._step(table, data, pos, on_token)
            pos += 1
            if results is not None:
                yield from results
            if self._size > limit:
                self._state = _S.START
                result = on_token(Tok.OVERSIZE, self._take())
                if result is not None:
                    yield result

    def _step(
        self, table: list[list[int]], data: bytes, pos: int, on_token: Callable[[Tok, bytes], _T | None]
    ) -> list[_T] | None:
        """Run one byte through the automaton (several transitions on lookahead)."""
        ch = data[pos]
        results: list[_T] | None = None
        consumed = False
        while not consumed:
            target = table[self._state][ch]
            consumed = not target & _LOOKAHEAD
            target &= ~_LOOKAHEAD
            if consumed:
                self._parts.append(data[pos : pos + 1])
                self._size += 1
            if target < _TOKEN:
                if target == _S.START or target == _S.RECOVERY:
                    self._parts.clear()
                    self._size = 0
                self._state = target
                continue
            tok = _TOKS[target - _TOKEN]
            result = on_token(tok, self._take())
            self._state = _RECOVERY if tok is Tok.ERROR else _START
            if result is not None:
                if results is None:
                    results = [result]
                else:
                    results.append(result)
        return results
