"""Framing and header indexing: bytes in, :class:`SipMessage` out, with as little work as possible.

Speed matters here (every captured packet comes through): the header section is split into lines
once and each line costs one ``partition``, one ``lower`` and one dict insert. Values stay raw
(unstripped) until an accessor asks for them. Compact names, whitespace before the colon and
folded lines are rare, so they are detected after the fact and handled by a second, careful pass.
"""

from __future__ import annotations

from .errors import SipParseError
from .message import SipMessage
from .names import COMPACT_FORMS
from .syntax import parse_uint

__all__ = ["parse_message"]

Index = tuple[dict[str, str], dict[str, list[str]] | None]


def _index_careful(lines: list[str]) -> Index:
    """Index header lines handling compact names, ``Name :`` and obsolete line folding."""
    first: dict[str, str] = {}
    more: dict[str, list[str]] | None = None
    last_key: str | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not line.strip():
                continue
            if last_key is None:
                raise SipParseError("continuation line before any header")
            folded = line.strip()
            if more is not None and last_key in more:
                values = more[last_key]
                values[-1] = f"{values[-1].rstrip()} {folded}"
            else:
                first[last_key] = f"{first[last_key].rstrip()} {folded}"
            continue
        name, colon, value = line.partition(":")
        if not colon:
            if not line.strip():
                continue
            raise SipParseError(f"header line without a colon: {line[:80]!r}")
        key = name.rstrip().lower()
        if not key:
            raise SipParseError(f"header line without a name: {line[:80]!r}")
        if len(key) == 1:
            key = COMPACT_FORMS.get(key, key)
        if key in first:
            if more is None:
                more = {}
            more.setdefault(key, []).append(value)
        else:
            first[key] = value
        last_key = key
    return first, more


def _index_fast(lines: list[str]) -> Index | None:
    """Index well-formed long-form header lines; None when the careful pass is needed."""
    first: dict[str, str] = {}
    more: dict[str, list[str]] | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or line[0] in " \t":
            return None
        key = name.lower()
        if key in first:
            if more is None:
                more = {}
            more.setdefault(key, []).append(value)
        else:
            first[key] = value
    for key in first:
        if len(key) < 2 or key[-1] <= " ":  # compact form, empty name or "Name :"
            return None
    return first, more


def _split_head(data: bytes, start: int) -> tuple[int, int]:
    """Return (end of the header section, start of the body or -1 without a blank line)."""
    nl = data.find(b"\n", start)
    if nl > start and data[nl - 1] == 13:  # CRLF message: one search for the blank line
        end = data.find(b"\r\n\r\n", nl - 1)
        if end >= 0:
            return end, end + 4
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf if crlf >= 0 else len(data))
    if lf >= 0:
        return lf, lf + 2
    if crlf >= 0:
        return crlf, crlf + 3
    return len(data), -1


def parse_message(data: bytes | bytearray | memoryview) -> SipMessage:
    """Parse one SIP message (a UDP datagram or HEP payload).

    Raises :class:`SipParseError` for anything malformed, including a body shorter than
    Content-Length; bytes beyond Content-Length are dropped. CRLF and bare LF both work.
    A ``str`` (or other non-bytes) argument is a programming error: :class:`TypeError`.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"parse_message() wants bytes, not {type(data).__name__}")
        data = bytes(data)
    start = 0
    size = len(data)
    while start < size and data[start] in b"\r\n":  # RFC 3261 7.5: ignore leading CRLFs
        start += 1
    if start == size:
        raise SipParseError("empty message")
    # The usual CRLF message: one search for the blank line (else see _split_head).
    nl = data.find(b"\n", start)
    head_end = data.find(b"\r\n\r\n", nl - 1) if nl > start and data[nl - 1] == 13 else -1
    if head_end >= 0:
        body_start = head_end + 4
    else:
        head_end, body_start = _split_head(data, start)
        if body_start < 0 and data[-1] != 10:
            raise SipParseError("truncated message: no blank line after the headers")
    text = data[start:head_end].decode("utf-8", "replace")
    lines = text.split("\n")
    first, more = _index_fast(lines) or _index_careful(lines)
    body = b"" if body_start < 0 else data[body_start:]
    length_text = first.get("content-length")
    if length_text is not None:
        length_text = length_text.strip()
        if 0 < len(length_text) <= 10 and length_text.isdigit() and length_text.isascii():
            length = int(length_text)
        else:
            length = parse_uint(length_text, "Content-Length")
        if length != len(body):
            if length > len(body):
                raise SipParseError(f"body is {len(body)} bytes, Content-Length says {length}")
            body = body[:length]
    return SipMessage(lines[0].strip(), first, more, body)
