#!/usr/bin/env python3
"""Coverage-guided fuzz target for the JSON stream (lexer + streamer + parser), for atheris.

Input layout (shared with fuzz_session.py, see README.md)::

    byte 0      flags: 0x04 = small limits (token size 256, 64 tokens, nesting 16),
                       0x08 = lazy feeding (unless QMPD_FUZZ_LAZY=0, see below)
    byte 1      n = byte % 8 split points
    n bytes     split points, each a fraction (b/256) of the payload length
    rest        the payload, fed to one JSONMessageStreamer in n + 1 chunks

Checked for every input:

- no exception escapes, and every ``feed`` call (with draining its items) returns in bounded time;
- every item is well-formed: a JSONParseError with one of QEMU's texts, or a JSON value
  (None/bool/int64-or-uint64/float/str/list/dict with str keys, nested no deeper than the limit)
  that the reply writer can echo as an id on one CRLF-terminated line;
- the chunked result equals the exact (lexer DFA) path over the whole payload in one go (run on an
  uninstrumented copy of qmpd.qobject, for speed);
- QEMU's recovery: ``\\xff`` then a good command yields one or two leftovers (the last one an
  error) and then exactly that command; after ``reset()`` the command alone yields just itself.

With flag 0x08 the next chunk is fed before the items of the previous ones were pulled
(what Session.feed does while reading is paused); this found the bug fixed in 6f52acf.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import atheris

# The reference parse (the exact path over the whole payload) runs on a separate, uninstrumented
# copy of qmpd.qobject: the same code, checked the same way, but without atheris' per-branch
# callbacks (which made it cost as much as the fuzzed path); its coverage would only repeat the
# fuzzed path's.  The fuzzed modules are then imported afresh, instrumented.
from qmpd.qobject.streamer import JSONMessageStreamer as ReferenceStreamer

for _name in [name for name in sys.modules if name == "qmpd.qobject" or name.startswith("qmpd.qobject.")]:
    del sys.modules[_name]

with atheris.instrument_imports(include=["qmpd.qobject"]):
    from qmpd.qobject.parser import JSONParseError
    from qmpd.qobject.streamer import JSONMessageStreamer, StreamItem
    from qmpd.qobject.writer import encode

#: The good command fed after the fuzzed input, and what it must parse to.
COMMAND = b'{"execute":"query-status","id":"end"}'
COMMAND_VALUE = {"execute": "query-status", "id": "end"}
#: QEMU's way back in sync: 0xFF is an error in every lexer state, and the error drops the partial message.
RECOVERY = b"\xff"

SMALL_LIMITS = {"max_token_size": 256, "max_token_count": 64, "max_nesting": 16}
FLAG_SMALL_LIMITS = 0x04
FLAG_LAZY = 0x08
LAZY = os.environ.get("QMPD_FUZZ_LAZY", "1") == "1"
#: Seconds one feed call (and draining its items) may take; inputs are a few KiB at most.
TIME_LIMIT = float(os.environ.get("QMPD_FUZZ_TIME_LIMIT", "2.0"))

_E = "JSON parse error, "
_LIMIT_ERRORS = (
    "JSON token size limit exceeded",
    "JSON token count limit exceeded",
    "JSON nesting depth limit exceeded",
)
_PARSER_ERRORS = (
    "expecting value",
    "missing : in object pair",
    "expected separator in dict",
    "expected separator in list",
    "invalid escape sequence in string",
    "invalid UTF-8 sequence in string",
    "duplicate key",
    "key is not a string in object",
    "invalid keyword '",
    "stray '",
)


def decode_input(data: bytes) -> tuple[int, list[bytes]]:
    """Split a fuzzer input into (flags, payload chunks); see the module docstring."""
    flags = data[0] if data else 0
    count = data[1] % 8 if len(data) > 1 else 0
    cuts = data[2 : 2 + count]
    payload = data[2 + count :]
    points = sorted(cut * len(payload) // 256 for cut in cuts)
    chunks: list[bytes] = []
    previous = 0
    for point in points:
        chunks.append(payload[previous:point])
        previous = point
    chunks.append(payload[previous:])
    return flags, chunks


def error_kind(desc: str) -> int:
    """Which of QEMU's error texts this is (explicit branches give the fuzzer feedback per kind)."""
    for number, text in enumerate(_LIMIT_ERRORS):
        if desc == text:
            return number
    assert desc.startswith(_E), desc
    rest = desc[len(_E) :]
    for number, text in enumerate(_PARSER_ERRORS):
        if rest.startswith(text):
            return len(_LIMIT_ERRORS) + number
    # "\ud83d is not a valid Unicode character" and the like.
    assert rest.endswith(" is not a valid Unicode character"), desc
    return len(_LIMIT_ERRORS) + len(_PARSER_ERRORS)


def check_value(value: object, max_nesting: int) -> None:
    """A value as QEMU's parser builds it (iterative: values may be nested 1024 deep)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            assert -(1 << 63) <= item < 1 << 64, item
        elif isinstance(item, float):
            assert not math.isnan(item)
        elif isinstance(item, list):
            assert depth < max_nesting, depth
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            assert depth < max_nesting, depth
            for key, child in item.items():
                assert isinstance(key, str), key
                stack.append((child, depth + 1))
        else:
            raise AssertionError(f"not a JSON value: {type(item)!r}")


#: Error texts already checked (a 1025-deep input gives 1025 identical errors).
_checked_errors: set[str] = set()


def check_item(item: StreamItem, max_nesting: int) -> None:
    """One streamer output is a QEMU error text or a JSON value the writer can echo."""
    if isinstance(item, JSONParseError):
        assert isinstance(item.desc, str)
        error_kind(item.desc)
        if item.desc in _checked_errors:
            return
        line = encode({"error": {"class": "GenericError", "desc": item.desc}})
        if len(_checked_errors) < 10_000:
            _checked_errors.add(item.desc)
    else:
        check_value(item, max_nesting)
        line = encode({"return": {}, "id": item})
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1 and line.count(b"\r") == 1, line[-80:]


def _timed(step: Iterator[StreamItem] | None, out: list[StreamItem], started: float) -> None:
    if step is not None:
        out.extend(step)
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_LIMIT, f"feed took {elapsed:.2f}s"


def stream(streamer: JSONMessageStreamer, chunks: list[bytes], lazy: bool) -> list[StreamItem]:
    """Feed the chunks; lazily means leaving each iterator unpulled until the next chunk is in."""
    out: list[StreamItem] = []
    pending: deque[Iterator[StreamItem]] = deque()
    for chunk in chunks:
        started = time.perf_counter()
        iterator = streamer.feed(chunk)
        if lazy:
            pending.append(iterator)
            # Pull one item only, as a session with a full queue does, then feed the next chunk.
            for item in pending[0]:
                out.append(item)
                break
            _timed(None, out, started)
        else:
            _timed(iterator, out, started)
    started = time.perf_counter()
    while pending:
        out.extend(pending.popleft())
    _timed(None, out, started)
    return out


def check_recovery(streamer: JSONMessageStreamer) -> None:
    """After any input, 0xFF and a good command give the command back (QEMU's resync)."""
    started = time.perf_counter()
    out = list(streamer.feed(RECOVERY + COMMAND))
    _timed(None, out, started)
    assert out and out[-1] == COMMAND_VALUE, out[-3:]
    leftovers = out[:-1]
    assert 1 <= len(leftovers) <= 2 and isinstance(leftovers[-1], JSONParseError), leftovers
    streamer.reset()
    assert list(streamer.feed(COMMAND)) == [COMMAND_VALUE]


def test_one_input(data: bytes) -> None:
    flags, chunks = decode_input(data)
    limits: dict[str, Any] = SMALL_LIMITS if flags & FLAG_SMALL_LIMITS else {}
    streamer = JSONMessageStreamer(**limits)
    items = stream(streamer, chunks, lazy=LAZY and bool(flags & FLAG_LAZY))
    for item in items:
        check_item(item, streamer.max_nesting)
    reference = list(ReferenceStreamer(**limits)._feed_exact(b"".join(chunks)))
    # repr: the two copies' JSONParseError classes differ, their reprs do not.
    assert repr(items) == repr(reference), (items[:4], reference[:4])
    check_recovery(streamer)


def main() -> None:
    # repr() and == on values nested 1024 deep need more than the default recursion limit.
    sys.setrecursionlimit(20_000)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
