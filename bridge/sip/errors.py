"""Typed errors raised by the SIP parser.

Every malformed input surfaces as :class:`SipParseError`; callers catch that one type (or the
``ValueError`` / :class:`bridge.errors.BridgeError` it derives from) and count it as bad input.
"""

from __future__ import annotations

from bridge.errors import BridgeError

__all__ = ["SipError", "SipParseError"]


class SipError(BridgeError, ValueError):
    """Base class of every error raised by ``bridge.sip``."""

    code = "sip_error"


class SipParseError(SipError):
    """The bytes, or one header of them, are not a well-formed SIP message."""

    code = "sip_parse_error"
