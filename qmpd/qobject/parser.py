"""JSON tokens to Python values, with QEMU's parser rules and error texts.

Mirrors qobject/json-parser.c: the first error wins; keys may only be strings
(but are parsed as full values first); duplicate keys are an error; integers
become int64, else uint64, else a double; strings are checked as modified
UTF-8 with QEMU's notion of valid code points.  The parser is iterative so
that the streamer's nesting limit (1024), not Python's recursion limit, is
what bounds depth.
"""

# Annotations are not postponed here: its NamedTuple is made at every start (tests/unit/test_startup_imports.py).

from collections.abc import Sequence
from typing import NamedTuple, Union

from qmpd.qobject import mutf8
from qmpd.qobject.lexer import Tok

#: A parsed JSON value as QEMU would hold it (int, float, str, bool, None, list, dict).
JSONValue = Union[None, bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"]]  # noqa: UP007 (recursive alias)

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1
#: QEMU formats parser messages into a 1024-byte buffer.
_MESSAGE_BYTES = 1023

_SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX = frozenset(b"0123456789abcdefABCDEF")


class JSONParseError(NamedTuple):
    """A message that could not be parsed; ``desc`` is QEMU's error text."""

    desc: str


class _Fail(Exception):
    def __init__(self, message: bytes) -> None:
        super().__init__()
        self.message = message


def _fail(message: bytes) -> _Fail:
    return _Fail(message)


def error_from_message(message: bytes) -> JSONParseError:
    """Format a parser message as QEMU does (truncated, then shown as text)."""
    return JSONParseError(mutf8.to_text(b"JSON parse error, " + message[:_MESSAGE_BYTES]))


def _cvt4hex(tok: bytes, pos: int) -> int:
    if pos + 4 > len(tok):
        return -1
    digits = tok[pos : pos + 4]
    for b in digits:
        if b not in _HEX:
            return -1
    return int(digits, 16)


def parse_string(tok: bytes) -> str:
    """Decode a string token (with its quotes), raising _Fail on QEMU's errors."""
    end = len(tok) - 1
    if tok.find(b"\\", 1, end) < 0:
        decoded = mutf8.decode_string_body(tok, 1, end)
        if decoded is None:
            raise _fail(b"invalid UTF-8 sequence in string")
        return decoded[0]
    out: list[str] = []
    pos = 1
    while pos < end:
        bs = tok.find(b"\\", pos, end)
        stop = end if bs < 0 else bs
        if stop > pos:
            decoded = mutf8.decode_string_body(tok, pos, stop)
            if decoded is None:
                raise _fail(b"invalid UTF-8 sequence in string")
            out.append(decoded[0])
            pos = stop
        if bs < 0:
            break
        begin = pos
        esc = tok[pos + 1]
        pos += 2
        simple = _SIMPLE_ESCAPES.get(esc)
        if simple is not None:
            out.append(simple)
            continue
        if esc != ord("u"):
            raise _fail(b"invalid escape sequence in string")
        cp = _cvt4hex(tok, pos)
        pos += 4
        if 0xD800 <= cp <= 0xDBFF and tok[pos : pos + 2] == b"\\u":
            cp = 0x10000 + ((cp & 0x3FF) << 10)
            trailing = _cvt4hex(tok, pos + 2)
            if 0xDC00 <= trailing <= 0xDFFF:
                cp |= trailing & 0x3FF
                pos += 6
            else:
                cp = -1
        if not mutf8.is_valid_codepoint(cp):
            # QEMU prints the escape with %.*s: it stops at the end of the token.
            shown = tok[begin:pos].split(b"\0", 1)[0]
            raise _fail(shown + b" is not a valid Unicode character")
        out.append(chr(cp))
    return "".join(out)


def parse_number(tok: bytes, kind: Tok) -> int | float:
    """int64 if it fits, else uint64 (non-negative), else a double, as QEMU."""
    if kind is Tok.INTEGER and len(tok) <= 21:
        value = int(tok)
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
        if value >= 0 and value <= _UINT64_MAX:
            return value
    return float(tok)


def _scalar(kind: int, text: bytes) -> JSONValue:
    if kind == Tok.STRING:
        return parse_string(text)
    if kind == Tok.INTEGER:
        return parse_number(text, Tok.INTEGER)
    if kind == Tok.FLOAT:
        return parse_number(text, Tok.FLOAT)
    if text == b"true":
        return True
    if text == b"false":
        return False
    if text == b"null":
        return None
    raise _fail(b"invalid keyword '" + text + b"'")


# Frame states for the explicit parse stack.
_OBJ_KEY = 0  # waiting for a key value
_OBJ_VALUE = 1  # waiting for the value of `key`
_ARR_VALUE = 2  # waiting for an element


def parse(kinds: bytearray | bytes, texts: Sequence[bytes | None]) -> JSONValue | JSONParseError:
    """Parse one complete message's tokens into a value, or QEMU's parse error."""
    try:
        return _parse(kinds, texts)
    except _Fail as exc:
        return error_from_message(exc.message)


def _parse(kinds: bytearray | bytes, texts: Sequence[bytes | None]) -> JSONValue:
    n = len(kinds)
    pos = 0
    # Each frame: [container, state, pending key]
    stack: list[list[object]] = []
    while True:
        # --- parse a value starting at pos ---
        if pos >= n:
            raise _fail(b"premature EOI")
        kind = kinds[pos]
        value: JSONValue
        if kind == Tok.LCURLY:
            pos += 1
            if pos >= n:
                raise _fail(b"premature EOI")
            if kinds[pos] == Tok.RCURLY:
                pos += 1
                value = {}
            else:
                stack.append([{}, _OBJ_KEY, None])
                continue
        elif kind == Tok.LSQUARE:
            pos += 1
            if pos >= n:
                raise _fail(b"premature EOI")
            if kinds[pos] == Tok.RSQUARE:
                pos += 1
                value = []
            else:
                stack.append([[], _ARR_VALUE, None])
                continue
        elif kind >= Tok.INTEGER and kind <= Tok.STRING:
            text = texts[pos]
            assert text is not None
            value = _scalar(kind, text)
            pos += 1
        else:
            raise _fail(b"expecting value")
        # --- deliver the finished value to the enclosing containers ---
        while True:
            if not stack:
                return value
            frame = stack[-1]
            state = frame[1]
            if state == _OBJ_KEY:
                if not isinstance(value, str):
                    raise _fail(b"key is not a string in object")
                if pos >= n:
                    raise _fail(b"premature EOI")
                if kinds[pos] != Tok.COLON:
                    raise _fail(b"missing : in object pair")
                pos += 1
                frame[1] = _OBJ_VALUE
                frame[2] = value
                break
            if state == _OBJ_VALUE:
                obj = frame[0]
                assert isinstance(obj, dict)
                key = frame[2]
                assert isinstance(key, str)
                if key in obj:
                    raise _fail(b"duplicate key")
                obj[key] = value
                if pos >= n:
                    raise _fail(b"premature EOI")
                sep = kinds[pos]
                pos += 1
                if sep == Tok.RCURLY:
                    stack.pop()
                    value = obj
                    continue
                if sep != Tok.COMMA:
                    raise _fail(b"expected separator in dict")
                frame[1] = _OBJ_KEY
                break
            arr = frame[0]
            assert isinstance(arr, list)
            arr.append(value)
            if pos >= n:
                raise _fail(b"premature EOI")
            sep = kinds[pos]
            pos += 1
            if sep == Tok.RSQUARE:
                stack.pop()
                value = arr
                continue
            if sep != Tok.COMMA:
                raise _fail(b"expected separator in list")
            break
