"""QMP output bytes: QDict key order, QEMU's escaping, doubles, CRLF."""

from __future__ import annotations

import collections

import pytest

from qmpd.qobject.writer import encode, qdict_bucket, qdict_order


def test_reply_and_error_key_order_match_qemu() -> None:
    assert encode({"return": {}, "id": "neg"}) == b'{"return": {}, "id": "neg"}\r\n'
    assert encode({"id": 8, "error": {"class": "GenericError", "desc": "x"}}) == (
        b'{"id": 8, "error": {"class": "GenericError", "desc": "x"}}\r\n'
    )
    # Insertion order does not matter, the hash buckets do.
    assert (
        encode({"error": {"desc": "x", "class": "C"}, "id": 8})
        == b'{"id": 8, "error": {"class": "C", "desc": "x"}}\r\n'
    )


def test_same_bucket_keys_come_newest_first() -> None:
    # "status" and "singlestep" share a bucket; QAPI inserts running, singlestep, status.
    assert qdict_bucket("status") == qdict_bucket("singlestep")
    status = {"running": False, "singlestep": False, "status": "prelaunch"}
    assert encode(status) == b'{"status": "prelaunch", "singlestep": false, "running": false}\r\n'
    assert qdict_order(["major", "minor", "micro"]) == ("micro", "minor", "major")


def test_event_layout() -> None:
    event = {
        "event": "RESET",
        "data": {"guest": False, "reason": "host-qmp-system-reset"},
        "timestamp": {"seconds": 1, "microseconds": 2},
    }
    assert encode(event) == (
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", '
        b'"data": {"guest": false, "reason": "host-qmp-system-reset"}}\r\n'
    )


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("\u00fc\u20ac\U0001f600", b'"\\u00FC\\u20AC\\uD83D\\uDE00"'),
        ("/", b'"/"'),
        ("\x00\x1f\x7f", b'"\\u0000\\u001F\\u007F"'),
        ('\t\n\r\b\f"\\', b'"\\t\\n\\r\\b\\f\\"\\\\"'),
        ("\\u00e9", b'"\\\\u00e9"'),
        ("\ufffe", b'"\\uFFFD"'),
        (1000.0, b"1000"),
        (-0.0, b"-0"),
        (3.14, b"3.1400000000000001"),
        (float("inf"), b"inf"),
        (-9.223372036854776e18, b"-9.2233720368547758e+18"),
        (18446744073709551615, b"18446744073709551615"),
        ([1, {"b": 2, "a": 1.5}], b'[1, {"a": 1.5, "b": 2}]'),
        # Doubles deep in objects, and containers that are not plain dicts or lists.
        ({"outer": {"b": 0.5, "a": [2.0]}}, b'{"outer": {"a": [2], "b": 0.5}}'),
        (("a", {"b": 1, "a": 2}), b'["a", {"a": 2, "b": 1}]'),
        (collections.OrderedDict(b=1, a=2), b'{"a": 2, "b": 1}'),
    ],
)
def test_values_as_qemu_writes_them(value: object, wire: bytes) -> None:
    assert encode({"id": value}) == b'{"id": ' + wire + b"}\r\n"


def test_output_is_ascii_and_one_line() -> None:
    line = encode({"return": {"text": "a\nb\u2028c"}})
    assert line.count(b"\n") == 1 and line.endswith(b"\r\n")
    line.decode("ascii")
