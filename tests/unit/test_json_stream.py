"""The JSON byte stream: QEMU's lexer, streamer and parser rules (no sockets)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmpd.qobject.parser import JSONParseError
from qmpd.qobject.streamer import JSONMessageStreamer, StreamItem, _fast_parse


def feed(data: bytes, chunk: int = 0, **limits: int) -> list[StreamItem]:
    streamer = JSONMessageStreamer(**limits)
    if not chunk:
        return list(streamer.feed(data))
    out: list[StreamItem] = []
    for i in range(0, len(data), chunk):
        out += streamer.feed(data[i : i + chunk])
    return out


def descs(items: list[StreamItem]) -> list[object]:
    return [item.desc if isinstance(item, JSONParseError) else item for item in items]


E = "JSON parse error, "

#: (input, expected outputs) — texts observed from QEMU 7.2 (qemu-observed.md and our own runs).
CASES = [
    (b'{"execute":"query-status","id":1}', [{"execute": "query-status", "id": 1}]),
    (b'{"execute": }', [E + "expecting value"]),
    (b'{"execute":"query-status",}', [E + "expecting value"]),
    (b"}", [E + "expecting value"]),
    (b'{"execute" "query-status"}', [E + "missing : in object pair"]),
    (b'{execute: "x"}', [E + "invalid keyword 'execute'"]),
    (b"nonsense\n", [E + "invalid keyword 'nonsense'"]),
    (b'{"execute": "query-status"]', [E + "expected separator in dict"]),
    (b'{"id": 0x10}', [E + "expected separator in dict"]),
    (b'{"id": 01}', [E + "stray '01'", E + "expecting value"]),
    (b'{"id": "a\\qb"}', [E + "invalid escape sequence in string"]),
    (b'{"id": "a\x01"}', [E + "stray '\"a\x01'", E + "expecting value"]),
    (b'{"id": \xff}', [E + "stray '\ufffd'", E + "expecting value"]),
    (b'{"id": %d}', [E + "stray '%'", E + "expecting value"]),
    (b'{"id": NaN}', [E + "stray 'N'", E + "expecting value"]),
    (b'{"id": "\xc3"}', [E + "invalid UTF-8 sequence in string"]),
    (b'{"id": "\\ud83d"}', [E + "\\ud83d is not a valid Unicode character"]),
    (b'{"id": "\\u12"}', [E + '\\u12" is not a valid Unicode character']),
    (b'"unterminated\n', [E + "stray '\"unterminated\n'"]),
    (b'{"id":1,"id":2}', [E + "duplicate key"]),
    (b"{1:2}", [E + "key is not a string in object"]),
    (b"[1 2]", [E + "expected separator in list"]),
    (b"\x00", [E + "stray ''"]),
    (b"{}{}", [{}, {}]),
    (b'{"a":1} 5\n', [{"a": 1}, 5]),
    (b"{'sq': 'it\\'s'}", [{"sq": "it's"}]),
    (b'["\xc0\x80", "\\u0000", "\\/", "\\ud83d\\ude00"]', [["\0", "\0", "/", "\U0001f600"]]),
    (
        b"[-0, 1e3, 18446744073709551615, -9223372036854775809]",
        [[0, 1000.0, 18446744073709551615, -9.223372036854776e18]],
    ),
    (b" \t\r\n", []),
]


@pytest.mark.parametrize(("data", "expected"), CASES, ids=[repr(c[0])[:40] for c in CASES])
@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_qemu_parse_results(data: bytes, expected: list[object], chunk: int) -> None:
    assert descs(feed(data, chunk)) == expected


def test_recovery_after_lexical_error_skips_to_a_structural_character() -> None:
    # After "stray", bytes are skipped until '{', so "garbage" makes no error of its own.
    items = feed(b'{"a": 01 garbage {"execute":"x"}')
    assert descs(items) == [E + "stray '01'", {"execute": "x"}]


def test_unclosed_object_swallows_following_commands_until_0xff() -> None:
    items = feed(b'{"execute":"query-status" {"execute":"query-name"}\xff{"execute":"x"}')
    assert descs(items) == [E + "stray '\ufffd'", {"execute": "x"}]


def test_nesting_limit_is_1024() -> None:
    ok = b"[" * 1024 + b"]" * 1024
    assert len(feed(ok)) == 1 and isinstance(feed(ok)[0], list)
    bad = feed(b"[" * 1025 + b"]" * 1025)
    assert descs(bad)[0] == "JSON nesting depth limit exceeded"
    assert descs(bad)[1:] == [E + "expecting value"] * 1025


def test_token_count_limit() -> None:
    count = 64
    ok = b"[" + b"1," * ((count - 3) // 2) + b"1]"  # 63 tokens
    assert isinstance(feed(ok, max_token_count=count)[0], list)
    over = b"[" + b"1," * ((count - 1) // 2) + b"1]"  # 65 tokens
    assert descs(feed(over, max_token_count=count))[0] == "JSON token count limit exceeded"


def test_token_size_limit_cuts_a_long_string_like_qemu() -> None:
    limit = 4096
    data = b'{"execute":"x","id":"' + b"w" * (limit + 100) + b'"}\n'
    items = descs(feed(data, 1000, max_token_size=limit))
    assert items[0] == "JSON token size limit exceeded"
    assert isinstance(items[1], str) and items[1].startswith(E + "invalid keyword 'www")
    assert items[2] == E + "stray '\"}\n'"


@pytest.mark.slow
def test_real_limits_64mib_token_and_2mi_tokens() -> None:
    big = b'{"execute":"x","id":"' + b"w" * ((64 << 20) + 10) + b'"}\n'
    items = descs(feed(big, 1 << 20))
    assert items[0] == "JSON token size limit exceeded"
    many = b'{"execute":"x","id":[' + b"1," * (1 << 20) + b"1]}"
    assert descs(feed(many, 1 << 20))[0] == "JSON token count limit exceeded"


def test_numbers_follow_qemu_int64_uint64_double() -> None:
    assert feed(b"[9223372036854775807, 9223372036854775808, 18446744073709551616]")[0] == [
        9223372036854775807,
        9223372036854775808,
        1.8446744073709552e19,
    ]
    value = feed(b"[1e400]")[0]
    assert isinstance(value, list) and math.isinf(value[0])


FRAGMENTS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b'"execute"',
    b'"query-status"',
    b"'sq'",
    b'"\\u00e9"',
    b'"\\ud83d"',
    b"01",
    b"-",
    b"1.5e3",
    b"true",
    b"nul",
    b" ",
    b"\n",
    b"\xff",
    b"\x01",
    b"\xc3\xa9",
    b"\xc3",
    b'"\\',
    b'{"execute":"x","id":1}',
    b"%",
    b"\\",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30), st.integers(min_value=1, max_value=7))
def test_chunking_never_changes_the_result(parts: list[bytes], chunk: int) -> None:
    data = b"".join(parts)
    assert descs(feed(data, chunk)) == descs(feed(data))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30))
def test_fast_path_agrees_with_exact_path(parts: list[bytes]) -> None:
    data = b"".join(parts)
    fast = _fast_parse(data, 1024)
    if fast is not None:
        exact = list(JSONMessageStreamer()._feed_exact(data))
        assert descs(fast) == descs(exact)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
        max_leaves=12,
    )
)
def test_fast_path_values_equal_exact_values(value: object) -> None:
    import json

    data = json.dumps({"id": value}).encode()
    fast = _fast_parse(data, 1024)
    exact = list(JSONMessageStreamer()._feed_exact(data))
    if fast is not None:
        assert fast == exact


def test_feeding_before_the_previous_items_are_pulled_keeps_the_stream_order() -> None:
    # Found by fuzz/fuzz_stream.py in lazy mode (corpus: regression-lazy-feed-before-drain); fixed in 6f52acf.
    streamer = JSONMessageStreamer()
    first = streamer.feed(b'{"execute":"x"} {"a":')
    second = streamer.feed(b'{"b":1}')
    third = streamer.feed(b"}")
    assert [*first, *second, *third] == [{"execute": "x"}, {"a": {"b": 1}}]


@pytest.mark.parametrize("number", [b"0e3", b"-0E1", b"0e+2"])
def test_zero_with_an_exponent_is_not_a_number_as_in_qemu(number: bytes) -> None:
    # Found by fuzz/fuzz_stream.py: Python's json (the fast path) reads 0e3 as 0.0; QEMU's lexer refuses it.
    data = b'{"execute":"query-status","id":' + number + b"}"
    fast = list(JSONMessageStreamer().feed(data))
    exact = list(JSONMessageStreamer()._feed_exact(data))
    assert repr(fast) == repr(exact)
    assert any(isinstance(item, JSONParseError) for item in fast)
