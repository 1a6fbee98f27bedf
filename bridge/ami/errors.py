"""Typed errors raised by the AMI framing layer."""

from __future__ import annotations

from bridge.errors import BridgeError

__all__ = ["AmiActionError", "AmiError", "AmiMessageTooLarge", "AmiProtocolError"]


class AmiError(BridgeError, ValueError):
    """Base class of every error raised by ``bridge.ami``."""

    code = "ami_error"


class AmiProtocolError(AmiError):
    """The bytes from Asterisk are not well-formed AMI.

    ``recoverable`` is true when only the offending message was dropped and the parser can go on;
    otherwise the stream is unusable and every later ``next_event`` raises this error again.
    """

    code = "ami_protocol_error"

    def __init__(self, message: str, *, recoverable: bool = False) -> None:
        super().__init__(message)
        self.recoverable = recoverable


class AmiMessageTooLarge(AmiProtocolError):
    """A banner or message grew past the parser's size limit (never recoverable)."""

    code = "ami_message_too_large"


class AmiActionError(AmiError):
    """An action could not be encoded safely (e.g. a CR or LF that would inject a header)."""

    code = "ami_action_error"
