"""Tokens to whole messages, with QEMU's three per-message limits.

Mirrors qobject/json-streamer.c: a message is complete when the brace and
bracket counts are back to zero (or one goes negative); a lexical error, or a
message that exceeds the token size, token count or nesting limit, is
reported at once and the collected tokens are dropped, so the stream
resynchronises on the input that follows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from qmpd.qobject.lexer import MAX_TOKEN_SIZE, JSONLexer, Tok
from qmpd.qobject.mutf8 import NONCHARACTERS, to_text
from qmpd.qobject.parser import JSONParseError, JSONValue, parse

#: Most tokens one message may hold (QEMU: 2 Mi).
MAX_TOKEN_COUNT = 2 << 20
#: Deepest nesting of arrays and objects together (QEMU: 1024).
MAX_NESTING = 1 << 10

#: One streamer output: a parsed value or the error that replaced it.
StreamItem = JSONValue | JSONParseError

#: Largest chunk the fast path takes; anything bigger goes through the exact lexer.
FAST_PATH_MAX = 64 << 10

_TOKEN_SIZE_EXCEEDED = JSONParseError("JSON token size limit exceeded")
_TOKEN_COUNT_EXCEEDED = JSONParseError("JSON token count limit exceeded")
_NESTING_EXCEEDED = JSONParseError("JSON nesting depth limit exceeded")

#: What each token type does to the brace and the bracket count.
_BRACE_STEP = tuple(1 if kind == Tok.LCURLY else -1 if kind == Tok.RCURLY else 0 for kind in Tok)
_BRACKET_STEP = tuple(1 if kind == Tok.LSQUARE else -1 if kind == Tok.RSQUARE else 0 for kind in Tok)
#: "stray" errors by token (runs of one bad byte are common; the texts are immutable values).
_STRAY_ERRORS: dict[bytes, JSONParseError] = {}
_STRAY_CACHE_MAX = 4096


class JSONMessageStreamer:
    """Feed bytes, iterate over complete messages (values or parse errors).

    Iteration is lazy: the caller may stop pulling from ``feed``'s iterator
    to apply back-pressure and resume it later; no input is lost or reordered.
    """

    def __init__(
        self,
        *,
        max_token_size: int = MAX_TOKEN_SIZE,
        max_token_count: int = MAX_TOKEN_COUNT,
        max_nesting: int = MAX_NESTING,
    ) -> None:
        self.max_token_size = max_token_size
        self.max_token_count = max_token_count
        self.max_nesting = max_nesting
        self._lexer = JSONLexer(max_token_size=max_token_size)
        self._kinds = bytearray()
        self._texts: list[bytes] = []
        self._size = 0
        self._braces = 0
        #: Exact-path feeds whose items have not all been pulled yet.
        self._unfinished = 0
        self._brackets = 0

    def reset(self) -> None:
        """Drop everything buffered (a fresh connection); unfinished feeds are abandoned."""
        self._lexer.reset()
        self._drop()
        self._unfinished = 0

    def feed(self, data: bytes) -> Iterator[StreamItem]:
        """Consume ``data``; yield every message it completes, in order."""
        # A chunk of n bytes holds at most n tokens of n bytes in all, so with the
        # limits above the chunk size the fast path cannot miss a limit error.
        small = len(data) <= FAST_PATH_MAX and len(data) < min(self.max_token_count, self.max_token_size)
        # The exact path is lazy: bytes of an earlier feed reach the lexer only as its items are
        # pulled.  While such a feed is unfinished the lexer only looks idle; parsing this chunk
        # at once would put it before them (found by fuzz/fuzz_stream.py).
        if small and self._unfinished == 0 and self._lexer.idle and not self._kinds:
            items = _fast_parse(data, self.max_nesting)
            if items is not None:
                return iter(items)
        self._unfinished += 1
        return self._counted(self._feed_exact(data))

    def _counted(self, items: Iterator[StreamItem]) -> Iterator[StreamItem]:
        try:
            yield from items
        finally:
            self._unfinished = max(0, self._unfinished - 1)

    def _feed_exact(self, data: bytes) -> Iterator[StreamItem]:
        for box in self._lexer.feed(data, self._on_token):
            yield box.item

    def _drop(self) -> None:
        self._kinds.clear()
        self._texts.clear()
        self._size = 0
        self._braces = 0
        self._brackets = 0

    def _emit_error(self, error: JSONParseError) -> _Complete:
        self._drop()
        return _Complete(error)

    def _on_token(self, kind: Tok, text: bytes) -> _Complete | None:
        """Collect a token; return the finished message, boxed, or None."""
        if kind == Tok.ERROR:
            return self._emit_error(_stray(text))
        braces = self._braces + _BRACE_STEP[kind]
        brackets = self._brackets + _BRACKET_STEP[kind]
        self._braces = braces
        self._brackets = brackets
        if self._size + len(text) + 1 > self.max_token_size:
            return self._emit_error(_TOKEN_SIZE_EXCEEDED)
        if len(self._kinds) + 1 > self.max_token_count:
            return self._emit_error(_TOKEN_COUNT_EXCEEDED)
        if braces + brackets > self.max_nesting:
            return self._emit_error(_NESTING_EXCEEDED)
        self._kinds.append(kind)
        self._texts.append(text)
        self._size += len(text)
        # Incomplete while one count is open and neither went negative (then both are >= 0
        # and one is > 0, which is what a bitwise or of the two being > 0 says).
        if braces | brackets > 0:
            return None
        result = parse(self._kinds, self._texts)
        self._drop()
        return _Complete(result)


def _stray(text: bytes) -> JSONParseError:
    """QEMU's error for a token the lexer rejected."""
    error = _STRAY_ERRORS.get(text)
    if error is None:
        # QEMU formats the token with %s: it ends at the first NUL byte.
        shown = text.split(b"\0", 1)[0]
        error = JSONParseError(to_text(b"JSON parse error, stray '" + shown + b"'"))
        if len(text) <= 8 and len(_STRAY_ERRORS) < _STRAY_CACHE_MAX:
            _STRAY_ERRORS[text] = error
    return error


class _Complete:
    """Box for a finished message so that JSON null is not mistaken for 'nothing'."""

    __slots__ = ("item",)

    def __init__(self, item: StreamItem) -> None:
        self.item = item


class _Rejected(Exception):
    """The fast path met something it cannot judge exactly (QEMU's rules decide)."""


def _qemu_int(text: str) -> int | float:
    value = int(text)
    if -(1 << 63) <= value < 1 << 64:
        return value
    return float(text)


def _no_duplicates(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Rejected
    return obj


def _no_constants(name: str) -> JSONValue:
    raise _Rejected


_DECODER = json.JSONDecoder(parse_int=_qemu_int, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
_NONCHARACTER = re.compile(NONCHARACTERS)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_WHITESPACE_CHARS = " \t\n\r"


#: A number "0" directly followed by an exponent (maybe inside a string: then the exact path decides).
_ZERO_EXPONENT = re.compile(r"(?<![0-9.])0[eE]")


def _fast_parse(data: bytes, max_nesting: int) -> list[StreamItem] | None:
    """Whole, plain JSON objects in one chunk, parsed in C; None means "use the exact path".

    For input made only of complete, valid JSON objects (or arrays) in UTF-8,
    without backslash-u escapes, single quotes or noncharacters, nested no deeper than
    the limit, QEMU's parser and Python's json give the same values, provided
    that integers outside int64/uint64 become doubles and that duplicate keys
    and NaN/Infinity are refused.  Anything else goes to the exact path, which
    also produces QEMU's error texts.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\\u" in text or "'" in text or (not text.isascii() and _NONCHARACTER.search(text)):
        return None
    # QEMU's lexer has no exponent after a lone 0 ("0e3"); Python's json has.  (The plain
    # substring tests are there because they cost a tenth of the regular expression.)
    if ("0e" in text or "0E" in text) and _ZERO_EXPONENT.search(text):
        return None
    if len(text) > max_nesting and text.count("{") + text.count("[") > max_nesting:
        return None
    items: list[StreamItem] = []
    pos = 0
    end = len(text)
    decode = _DECODER.raw_decode
    skip = _WHITESPACE.match
    while True:
        if pos < end and text[pos] in _WHITESPACE_CHARS:
            match = skip(text, pos)
            assert match is not None
            pos = match.end()
        if pos == end:
            return items
        if text[pos] not in "{[":
            return None
        try:
            value, pos = decode(text, pos)
        except (ValueError, _Rejected, RecursionError):
            return None
        items.append(value)
