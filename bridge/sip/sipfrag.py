"""``message/sipfrag`` bodies (RFC 3420) as carried by NOTIFY ``Event: refer`` (RFC 3515)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SipParseError
from .syntax import parse_uint

__all__ = ["SipFrag", "parse_sipfrag", "parse_status_line"]


@dataclass(frozen=True, slots=True)
class SipFrag:
    """The status line of a sipfrag body, e.g. ``SIP/2.0 200 OK`` -> (200, "OK")."""

    status_code: int
    reason: str


def parse_status_line(line: str) -> tuple[int, str]:
    """Parse ``SIP/2.0 <code> <reason>`` into (code, reason); the reason may be empty."""
    version, _, rest = line.strip().partition(" ")
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"bad status line {line!r}")
    code_text, _, reason = rest.lstrip().partition(" ")
    code = parse_uint(code_text, "status code", 3)
    if not 100 <= code <= 699:
        raise SipParseError(f"status code out of range in {line!r}")
    return code, reason.strip()


def parse_sipfrag(body: bytes) -> SipFrag:
    """Parse a sipfrag body whose first line is a status line; further lines are ignored."""
    text = body.lstrip(b"\r\n")
    line = text.split(b"\n", 1)[0].decode("utf-8", "replace")
    if not line.strip():
        raise SipParseError("empty sipfrag body")
    code, reason = parse_status_line(line)
    return SipFrag(code, reason)
