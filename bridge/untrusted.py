"""Strict readings of numbers and XML that arrive from peers (phones, PBXs, capture hosts).

`str.isdigit()` is true for superscripts and other Unicode digits that `int()` refuses
(`"²".isdigit()`), and `xml.etree` raises `LookupError`/`ValueError` for some encoding
declarations and expands internal entities. Every parser of wire data reads numbers and XML
through here, so bad input always ends in the caller's typed error.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET

from bridge.errors import BridgeError

__all__ = ["UntrustedXmlError", "ascii_digits", "ascii_uint", "parse_untrusted_xml"]


def ascii_digits(text: str) -> bool:
    """True when `text` is one or more ASCII digits 0-9 (and nothing else)."""
    return text.isascii() and text.isdigit()


def ascii_uint(text: str | None, max_digits: int = 10) -> int | None:
    """`text` (surrounding blanks allowed) as a whole number, or None if it is not one."""
    if text is None:
        return None
    text = text.strip()
    if 0 < len(text) <= max_digits and ascii_digits(text):
        return int(text)
    return None


class UntrustedXmlError(BridgeError, ValueError):
    """An XML body that cannot be read safely; `hostile` when it declares a DTD or entity."""

    code = "invalid_xml"

    def __init__(self, message: str, *, hostile: bool = False) -> None:
        super().__init__(message)
        self.hostile = hostile


# Encodings a phone or PBX may declare; each is decoded here, before any check or parse.
_ENCODINGS = {
    "utf-8": "utf-8",
    "ascii": "ascii",
    "iso8859-1": "latin-1",
    "iso8859-15": "iso8859-15",
    "cp1252": "cp1252",
    "utf-16": "utf-16",
    "utf-16-le": "utf-16",
    "utf-16-be": "utf-16",
}
_DECLARATION = re.compile(
    r"""^\s*<\?xml\s[^>]*?\bencoding\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE
)
# A DTD (and any markup declaration in it) is what defines entities; none is ever needed.
_HOSTILE = re.compile(r"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)


def _encoding_of(body: bytes) -> tuple[str, bytes]:
    """(codec, bytes to decode with it) from the byte-order mark or the XML declaration."""
    if body.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise UntrustedXmlError("UTF-32 XML is not accepted")
    if body.startswith(codecs.BOM_UTF8):
        return "utf-8", body[len(codecs.BOM_UTF8) :]
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", body  # the codec reads and drops the mark
    if body.startswith(b"<\x00"):
        return "utf-16-le", body
    if body.startswith(b"\x00<"):
        return "utf-16-be", body
    head = body[:256].decode("latin-1")
    match = _DECLARATION.match(head)
    if match is None:
        return "utf-8", body
    declared = match.group(1) if match.group(1) is not None else match.group(2)
    try:
        name = codecs.lookup(declared.strip()).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        raise UntrustedXmlError(f"unknown encoding {declared[:40]!r}") from None
    codec = _ENCODINGS.get(name)
    if codec is None or codec == "utf-16":
        # UTF-16 declared on bytes without a UTF-16 mark or layout contradicts itself.
        raise UntrustedXmlError(f"encoding {declared[:40]!r} is not accepted")
    return codec, body


def parse_untrusted_xml(body: bytes) -> ET.Element:
    """The root element of `body`; `UntrustedXmlError` for anything unusable or hostile.

    The body is decoded first (byte-order mark or declared encoding), the DTD refusal looks at
    the decoded text (a UTF-16 body cannot hide a `<!DOCTYPE`), and the parser is handed UTF-8
    with its declared encoding overridden, so no entity is ever defined or expanded and no
    declaration can make the parser raise anything but a parse error.
    """
    codec, raw = _encoding_of(body)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise UntrustedXmlError(f"not valid {codec}: {exc.reason}") from None
    if _HOSTILE.search(text):
        raise UntrustedXmlError("DTD or entity declaration refused", hostile=True)
    parser = ET.XMLParser(encoding="utf-8")
    try:
        parser.feed(text.encode("utf-8"))
        return parser.close()
    except ET.ParseError as exc:
        raise UntrustedXmlError(f"not well-formed XML: {exc}") from None
    except (LookupError, ValueError) as exc:  # the parser's own refusals, never expected here
        raise UntrustedXmlError(f"XML refused: {exc}") from None
