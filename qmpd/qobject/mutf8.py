"""QEMU's view of text: modified UTF-8 with its validity rules.

QEMU keeps strings as modified UTF-8 C strings (NUL is written ``C0 80``) and
rejects noncharacters and surrogates as code points.  The JSON parser and the
JSON writer both judge bytes by those rules, so error texts and echoed strings
only match QEMU's if we decode exactly as it does (Python's UTF-8 codec is
stricter about ``C0 80`` and more lenient about noncharacters).
"""

from __future__ import annotations

import codecs
import re

#: Smallest code point that may be encoded with a sequence of 2, 3, 4, 5, 6 bytes.
_MIN_CP = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)

#: A character class of every Unicode noncharacter (U+FDD0..U+FDEF and U+xxFFFE/U+xxFFFF).
NONCHARACTERS = "[\ufdd0-\ufdef" + "".join(chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(17)) + "]"
_NONCHARACTER = re.compile(NONCHARACTERS)


def is_valid_codepoint(cp: int) -> bool:
    """QEMU's rule: inside Unicode, not a noncharacter, not a surrogate."""
    if cp < 0 or cp > 0x10FFFF:
        return False
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return False
    return not 0xD800 <= cp <= 0xDFFF


def decode_codepoint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode one modified-UTF-8 sequence at ``pos``: (code point or -1, next position).

    Like QEMU's ``mod_utf8_codepoint`` with an unbounded length: an invalid
    sequence yields -1 and the position after the bytes that were examined
    as part of it.
    """
    n = len(data)
    if pos >= n or data[pos] == 0:
        return -1, pos
    byte = data[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    if byte >= 0xFE or not byte & 0x40:
        return -1, pos
    length = 0
    mask = 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    cp = byte & (mask - 1)
    for _ in range(1, length):
        cont = data[pos] if pos < n else 0
        if cont & 0xC0 != 0x80:
            return -1, pos
        pos += 1
        cp = (cp << 6) | (cont & 0x3F)
    if not is_valid_codepoint(cp):
        return -1, pos
    if cp < _MIN_CP[length - 2] and not (cp == 0 and length == 2):
        return -1, pos
    return cp, pos


def _qemu_replace(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: one invalid sequence as QEMU reads it (U+FFFD, or NUL for ``C0 80``)."""
    assert isinstance(exc, UnicodeDecodeError)
    cp, nxt = decode_codepoint(exc.object, exc.start)
    return ("\ufffd" if cp < 0 else chr(cp)), nxt


def _qemu_strict(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: accept only what QEMU accepts beyond UTF-8 (``C0 80``), else stop."""
    assert isinstance(exc, UnicodeDecodeError)
    cp, nxt = decode_codepoint(exc.object, exc.start)
    if cp < 0:
        raise exc
    return chr(cp), nxt


codecs.register_error("qmpd-mutf8-replace", _qemu_replace)
codecs.register_error("qmpd-mutf8-strict", _qemu_strict)


def to_text(data: bytes) -> str:
    """Bytes as QEMU's JSON writer would show them: invalid sequences become U+FFFD.

    Python's UTF-8 decoder does the valid stretches; at each byte it rejects, the
    handler decodes one sequence the way QEMU does (so ``C0 80`` is NUL, an overlong
    or surrogate sequence is one U+FFFD) and decoding resumes where QEMU's would.
    Every sequence Python accepts is read by QEMU with the same length, so the
    sequence boundaries agree; the noncharacters it lets through are QEMU's U+FFFD.
    """
    text = data.decode("utf-8", "qmpd-mutf8-replace")
    if _NONCHARACTER.search(text):
        return _NONCHARACTER.sub("\ufffd", text)
    return text


def decode_string_body(data: bytes, pos: int, end: int) -> tuple[str, int] | None:
    """Decode raw (unescaped) bytes ``data[pos:end]`` strictly, QEMU's way.

    Returns the text and ``end`` on success, or None when some sequence is
    invalid (the caller then reports "invalid UTF-8 sequence in string").
    """
    chunk = data[pos:end]
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError:
        # QEMU's reading stops at a NUL byte (the lexer never puts one in a string token).
        if b"\0" in chunk:
            return None
        try:
            # Modified UTF-8 also allows C0 80 for NUL, which Python rejects: the handler takes it.
            text = chunk.decode("utf-8", "qmpd-mutf8-strict")
        except UnicodeDecodeError:
            return None
    if _NONCHARACTER.search(text):
        return None
    return text, end
