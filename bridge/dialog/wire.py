"""Small SIP helpers of the subscription: addresses, header values, responses to requests."""

from __future__ import annotations

from bridge.sip import SipMessage
from bridge.untrusted import ascii_uint

__all__ = ["CONTENT_TYPE", "expires_of", "hostport", "response", "retry_after_of"]

CONTENT_TYPE = "application/dialog-info+xml"  # what we accept, and a NOTIFY body must be


def hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def expires_of(message: SipMessage) -> int | None:
    return ascii_uint(message.header("expires"))


def retry_after_of(message: SipMessage) -> float | None:
    value = message.header("retry-after")
    if value is None:
        return None
    word = value.partition(";")[0].partition("(")[0].strip()
    seconds = ascii_uint(word)
    return None if seconds is None else float(seconds)


def response(request: SipMessage, code: int, reason: str) -> bytes:
    """A response to `request`, echoing Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6)."""
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {via}" for via in request.raw_headers("via")]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.header(name)
        if value is not None:
            lines.append(f"{name}: {value}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()
