"""The lexer's whole-token shortcut and mutf8's codec-based decoding change no result.

Both were added for speed (fuzz/README.md); the references here are the plain
algorithms they replace: the lexer fed one byte at a time (the shortcut needs the
byte after a token, so it then mostly steps the automaton), and QEMU's
``mod_utf8_codepoint`` loop one code point at a time.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qmpd.qobject import mutf8
from qmpd.qobject.lexer import JSONLexer, Tok
from qmpd.qobject.streamer import JSONMessageStreamer

PIECES = [
    b"{", b"}", b"[", b"]", b":", b",", b" ", b"\n", b"\t", b'"', b"'", b"\\", b"\\u", b"d83d", b'"ab"', b"'x'",
    b"0", b"00", b"-", b"1", b"12", b".", b"5", b"e", b"E", b"+", b"1e5", b"0.5", b"0e3", b"true", b"nul", b"xyz",
    b"\xff", b"\xfe", b"\xc0\x80", b"\xc3\xa9", b"\xed\xa0\x80", b"\xef\xbf\xbe", b"\xef\xb7\x90", b"\xe0\x80\x80",
    b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80", b"\x80", b"\xc3", b"\xf0\x9f",
    b"\x00", b"\x01", b"\x7f", b"@", b'{"execute":"query-status"}',
]  # fmt: skip
inputs = st.lists(st.sampled_from(PIECES) | st.binary(max_size=4), max_size=24).map(b"".join)


def reference_to_text(data: bytes) -> str:
    out: list[str] = []
    pos = 0
    while pos < len(data):
        cp, pos = mutf8.decode_codepoint(data, pos)
        out.append("\ufffd" if cp < 0 else chr(cp))
    return "".join(out)


def reference_string_body(data: bytes) -> str | None:
    out: list[str] = []
    pos = 0
    while pos < len(data):
        cp, pos = mutf8.decode_codepoint(data, pos)
        if cp < 0:
            return None
        out.append(chr(cp))
    return "".join(out)


@settings(max_examples=2000, deadline=None)
@given(inputs)
def test_to_text_decodes_as_qemu_one_code_point_at_a_time(data: bytes) -> None:
    data = data.replace(b"\0", b"")  # QEMU's C strings end there; the callers cut them
    assert mutf8.to_text(data) == reference_to_text(data)


@settings(max_examples=2000, deadline=None)
@given(inputs)
def test_string_bodies_are_judged_as_qemu_does(data: bytes) -> None:
    data = data.replace(b"\0", b"")  # never in a string token (the lexer ends the string there)
    decoded = mutf8.decode_string_body(data, 0, len(data))
    expected = reference_string_body(data)
    assert (decoded[0] if decoded else None) == expected


def test_sequences_python_and_qemu_read_differently() -> None:
    assert mutf8.to_text(b"a\xc0\x80b") == "a\0b"
    assert mutf8.to_text(b"\xed\xa0\x80\xff\xef\xbf\xbe") == "\ufffd\ufffd\ufffd"
    assert mutf8.to_text(b"\xf8\x88\x80\x80\x80x") == "\ufffdx"
    assert mutf8.decode_string_body(b'"\xc0\x80"', 1, 3) == ("\0", 3)
    assert mutf8.decode_string_body(b'"\xef\xb7\x90"', 1, 4) is None


def tokens(chunks: list[bytes], limit: int) -> list[tuple[Tok, bytes]]:
    lexer = JSONLexer(max_token_size=limit)
    out: list[tuple[Tok, bytes]] = []
    for chunk in chunks:
        for _ in lexer.feed(chunk, lambda kind, text: out.append((kind, text))):
            pass
    return out


@settings(max_examples=2000, deadline=None)
@given(inputs, st.sampled_from([1, 2, 3, 5, 8, 256, 64 << 20]))
def test_whole_token_shortcut_gives_the_automatons_tokens(data: bytes, limit: int) -> None:
    bytewise = [data[i : i + 1] for i in range(len(data))]
    assert tokens([data], limit) == tokens(bytewise, limit)


@settings(max_examples=1000, deadline=None)
@given(inputs)
def test_streamer_items_do_not_depend_on_chunking(data: bytes) -> None:
    small = {"max_token_size": 8, "max_token_count": 6, "max_nesting": 2}
    for limits in ({}, small):
        whole = JSONMessageStreamer(**limits)
        bytewise = JSONMessageStreamer(**limits)
        expected = [item for i in range(len(data)) for item in bytewise.feed(data[i : i + 1])]
        assert repr(list(whole.feed(data))) == repr(expected)
