"""Asterisk Manager Interface: a sans-I/O parser of what Asterisk sends, and action encoding."""

from __future__ import annotations

from bridge.ami.actions import encode_action
from bridge.ami.errors import AmiActionError, AmiError, AmiMessageTooLarge, AmiProtocolError
from bridge.ami.framing import DEFAULT_MAX_MESSAGE_SIZE, AmiParser, decode_fields
from bridge.ami.messages import (
    NEED_DATA,
    AmiBanner,
    AmiConnectionClosed,
    AmiEvent,
    AmiItem,
    AmiResponse,
    Fields,
    NeedData,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "NEED_DATA",
    "AmiActionError",
    "AmiBanner",
    "AmiConnectionClosed",
    "AmiError",
    "AmiEvent",
    "AmiItem",
    "AmiMessageTooLarge",
    "AmiParser",
    "AmiProtocolError",
    "AmiResponse",
    "Fields",
    "NeedData",
    "decode_fields",
    "encode_action",
]
