"""Lexical helpers shared by the header decoders: quoted strings, lists, parameters, numbers."""

from __future__ import annotations

import re

from .errors import SipParseError

__all__ = [
    "Params",
    "find_param",
    "get_param",
    "is_token",
    "parse_params",
    "parse_uint",
    "pct_decode",
    "quoted_end",
    "split_top_level",
    "unescape_quoted",
]

Params = tuple[tuple[str, str | None], ...]
"""Parameters in wire order: lower-cased name, value (``None`` for a flag such as ``;lr``)."""

_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_HEX_PAIRS = {
    a + b: int(a + b, 16) for a in "0123456789abcdefABCDEF" for b in "0123456789abcdefABCDEF"
}
_ASCII_ESCAPES = {pair: chr(value) for pair, value in _HEX_PAIRS.items() if value < 0x80}


def is_token(text: str) -> bool:
    """Return True when ``text`` is an RFC 3261 token (methods, event packages, ...)."""
    return _TOKEN_RE.fullmatch(text) is not None


def quoted_end(text: str, start: int) -> int:
    """Return the index just past the quoted-string whose opening quote is at ``text[start]``."""
    i = start + 1
    while True:
        q = text.find('"', i)
        if q < 0:
            raise SipParseError(f"unterminated quoted string in {text!r}")
        j = q - 1
        while j > start and text[j] == "\\":
            j -= 1
        if (q - 1 - j) % 2 == 0:  # an even run of backslashes leaves the quote unescaped
            return q + 1
        i = q + 1


def unescape_quoted(inner: str) -> str:
    """Undo quoted-pair escapes (``\\"`` and ``\\\\``) inside a quoted string's content."""
    if "\\" not in inner:
        return inner
    return _QUOTED_PAIR_RE.sub(r"\1", inner)


def split_top_level(text: str, sep: str, *, angle: bool) -> list[str]:
    """Split ``text`` on ``sep`` outside quoted strings (and outside ``<...>`` if ``angle``)."""
    if '"' not in text and (not angle or "<" not in text):
        return text.split(sep)
    parts: list[str] = []
    start = 0
    i = 0
    n = len(text)
    in_angle = False
    while i < n:
        ch = text[i]
        if ch == '"':
            i = quoted_end(text, i)
            continue
        if angle and ch == "<":
            in_angle = True
        elif angle and ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_angle:
        raise SipParseError(f"unclosed '<' in {text!r}")
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` text (leading whitespace allowed) into :data:`Params`."""
    if not text or text.isspace():
        return ()
    pieces = split_top_level(text, ";", angle=False)
    if pieces[0].strip():
        raise SipParseError(f"unexpected text {pieces[0].strip()!r} before parameters")
    out: list[tuple[str, str | None]] = []
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not name:
            if not piece.strip():
                continue  # tolerate ";;" and a trailing ";"
            raise SipParseError(f"parameter without a name in {text!r}")
        if not eq:
            out.append((name, None))
            continue
        value = value.strip()
        if value.startswith('"'):
            end = quoted_end(value, 0)
            if value[end:].strip():
                raise SipParseError(f"text after quoted parameter value in {text!r}")
            value = unescape_quoted(value[1 : end - 1])
        out.append((name, value))
    return tuple(out)


def get_param(params: Params, name: str) -> str | None:
    """Return the value of parameter ``name`` (case-insensitive); None if absent or a flag."""
    name = name.lower()
    for key, value in params:
        if key == name:
            return value
    return None


def find_param(text: str, name: str) -> str | None:
    """Return parameter ``name`` (lower-case) from raw ``;a=b`` text without building a tuple.

    A flag parameter yields ``""``; an absent one ``None``.
    """
    if '"' in text:
        for key, value in parse_params(text):
            if key == name:
                return "" if value is None else value
        return None
    for piece in text.split(";")[1:]:
        key, _, value = piece.partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


def parse_uint(text: str, what: str, max_digits: int = 10) -> int:
    """Parse an unsigned decimal made of ASCII digits, or raise :class:`SipParseError`."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    raise SipParseError(f"bad {what}: {text!r}")


def pct_decode(text: str) -> str:
    """Decode %XX escapes as UTF-8 (invalid sequences become U+FFFD, never an exception)."""
    if "%" not in text:
        return text
    pieces = text.split("%")
    out = [pieces[0]]
    ascii_escapes = _ASCII_ESCAPES
    for piece in pieces[1:]:
        char = ascii_escapes.get(piece[:2])
        if char is None:
            if piece[:2] in _HEX_PAIRS:  # an escaped non-ASCII byte: decode as UTF-8 bytes
                return _pct_decode_bytes(pieces)
            out.append("%")  # a stray '%' stays as written
            out.append(piece)
        else:
            out.append(char)
            out.append(piece[2:])
    return "".join(out)


def _pct_decode_bytes(pieces: list[str]) -> str:
    buf = bytearray(pieces[0].encode("utf-8", "replace"))
    for piece in pieces[1:]:
        byte = _HEX_PAIRS.get(piece[:2])
        if byte is None:
            buf += b"%"
            buf += piece.encode("utf-8", "replace")
        else:
            buf.append(byte)
            buf += piece[2:].encode("utf-8", "replace")
    return buf.decode("utf-8", "replace")
