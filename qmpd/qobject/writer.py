"""Python values to QMP wire bytes, byte for byte as QEMU writes them.

QEMU serialises a QDict by walking its 512 hash buckets in order (the bucket
is ``tdb_hash(key) % 512``; within a bucket the newest key comes first), so
``{"return": ..., "id": ...}`` but ``{"id": ..., "error": ...}``.  We compute
the same order for every object, so replies, events and echoed ids match
QEMU's bytes, not just its meaning.  Other QEMU habits reproduced here:
``", "`` and ``": "`` separators, ASCII-only output with upper-case ``\\uXXXX``
escapes (also for DEL and for invalid code points, as U+FFFD), doubles printed
with ``%.17g`` (so ``1e400`` becomes the bare word ``inf``), CRLF line ends.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_BUCKETS = 512

_bucket_cache: dict[str, int] = {}
_order_cache: dict[tuple[str, ...], tuple[str, ...]] = {}

_encoder = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": "), allow_nan=True, check_circular=False)


def _make_fast_encoder() -> Callable[[Any], str]:
    """json's C encoder, built once (JSONEncoder.encode builds a new one per call)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _encoder.encode
    c_encoder = make(None, _encoder.default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)

    def encode_fast(value: Any) -> str:
        return "".join(c_encoder(value, 0))

    return encode_fast


_encode_fast = _make_fast_encoder()
_encode_str = json.encoder.encode_basestring_ascii

_FIXUP = re.compile(r"(\\\\)|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})|\x7f")


def qdict_bucket(key: str) -> int:
    """The QDict bucket of ``key`` (QEMU's tdb_hash over the UTF-8 bytes, mod 512)."""
    bucket = _bucket_cache.get(key)
    if bucket is None:
        raw = key.encode("utf-8", "surrogatepass").replace(b"\0", b"\xc0\x80")
        value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
        for i, byte in enumerate(raw):
            value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
        bucket = ((1103515243 * value + 12345) & 0xFFFFFFFF) % _BUCKETS
        if len(_bucket_cache) < 65536:
            _bucket_cache[key] = bucket
    return bucket


def seed_buckets(buckets: Mapping[str, int]) -> None:
    """Take buckets computed ahead (by qdict_bucket, for keys a reply will likely hold) into the cache."""
    room = 65536 - len(_bucket_cache)
    if room >= len(buckets):
        _bucket_cache.update(buckets)


def qdict_order(keys: Sequence[str]) -> tuple[str, ...]:
    """Keys in the order QEMU's QDict iterates them, given their insertion order."""
    shape = keys if type(keys) is tuple else tuple(keys)
    order = _order_cache.get(shape)
    if order is None:
        indexed = sorted(enumerate(shape), key=lambda item: (qdict_bucket(item[1]), -item[0]))
        order = tuple(key for _, key in indexed)
        if len(_order_cache) < 65536:
            _order_cache[shape] = order
    return order


_PLAIN = frozenset({str, int, bool, type(None)})


class _HasDouble(Exception):
    """A double was met: json's C encoder would print it unlike QEMU's %.17g."""


def _ordered(value: Any, doubles: bool) -> Any:
    """A copy of ``value`` with every dict in QDict order.

    With ``doubles`` False it raises _HasDouble at the first double, so that the
    common case (no doubles) can go to json's C encoder in one piece.
    """
    kind = type(value)
    if kind is dict or (kind not in _PLAIN and isinstance(value, dict)):
        out = {}
        for key in qdict_order(tuple(value)):
            item = value[key]
            out[key] = item if type(item) in _PLAIN else _ordered(item, doubles)
        return out
    if kind is list or kind is tuple or (kind not in _PLAIN and isinstance(value, list | tuple)):
        return [item if type(item) in _PLAIN else _ordered(item, doubles) for item in value]
    if not doubles and isinstance(value, float):
        raise _HasDouble
    return value


def _fix_escape(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1)
    if match.group(2):
        high = int(match.group(2), 16)
        low = int(match.group(3), 16)
        cp = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        if (cp & 0xFFFE) == 0xFFFE:
            return "\\uFFFD"
        return f"\\u{high:04X}\\u{low:04X}"
    if match.group(4):
        cp = int(match.group(4), 16)
        if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE or 0xD800 <= cp <= 0xDFFF:
            return "\\uFFFD"
        return f"\\u{cp:04X}"
    return "\\u007F"


def _qemu_escapes(text: str) -> str:
    if "\\u" in text or "\x7f" in text:
        return _FIXUP.sub(_fix_escape, text)
    return text


def format_double(value: float) -> str:
    """QEMU prints doubles with ``%.17g`` (so inf and nan come out as bare words)."""
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return f"{value:.17g}"


def _encode_slow(value: Any, out: list[str]) -> None:
    """Pure-Python encoder for values that hold doubles (client-sent ids)."""
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(", ")
            first = False
            out.append(_encode_str(key))
            out.append(": ")
            _encode_slow(item, out)
        out.append("}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(", ")
            _encode_slow(item, out)
        out.append("]")
    elif isinstance(value, float):
        out.append(format_double(value))
    else:
        out.append(_encoder.encode(value))


class Encoded:
    """A value already written as QEMU writes it (by :func:`encode_value`): a reply's ``return`` that
    cannot change, such as query-qmp-schema's, is encoded once (or at build time) instead of per reply."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        #: The value's JSON text: QDict order, QEMU's escapes.
        self.text = text


def encode_value(value: Any) -> str:
    """One value as QEMU writes it inside a message."""
    try:
        text = _encode_fast(_ordered(value, doubles=False))
    except _HasDouble:
        parts: list[str] = []
        _encode_slow(_ordered(value, doubles=True), parts)
        text = "".join(parts)
    return _qemu_escapes(text)


def encode(message: Mapping[str, Any]) -> bytes:
    """One QMP message as QEMU writes it: a JSON object, then CRLF."""
    if type(message.get("return")) is Encoded:
        members = []
        for key in qdict_order(tuple(message)):
            value = message[key]
            text = value.text if type(value) is Encoded else encode_value(value)
            members.append(f"{_qemu_escapes(_encode_str(key))}: {text}")
        return ("{" + ", ".join(members) + "}\r\n").encode("ascii")
    return (encode_value(message) + "\r\n").encode("ascii")


def encode_preordered(text: str) -> bytes:
    """Finish a message body produced elsewhere (e.g. a cached schema reply)."""
    return (_qemu_escapes(text) + "\r\n").encode("ascii")


def encode_pretty(value: Any, indent: int = 0) -> str:
    """QEMU's pretty JSON (HMP qom-get): four-space indents, QDict key order."""
    pad = "    " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{pad}{_encode_str(key)}: {encode_pretty(value[key], indent + 1)}" for key in qdict_order(tuple(value))
        ]
        return "{\n" + ",\n".join(items) + "\n" + "    " * indent + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{pad}{encode_pretty(item, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "    " * indent + "]"
    if isinstance(value, float):
        return format_double(value)
    return _qemu_escapes(_encoder.encode(value))
