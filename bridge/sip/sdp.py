"""Media direction of an SDP body (RFC 3264/4566), enough to tell hold from resume."""

from __future__ import annotations

import enum
import re

__all__ = ["SdpDirection", "sdp_direction"]


class SdpDirection(enum.StrEnum):
    """The direction of the first active audio stream, as stated by the SDP's sender."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def is_hold(self) -> bool:
        """True for ``sendonly``/``inactive``: in an offer, its sender puts the call on hold."""
        return self is SdpDirection.SENDONLY or self is SdpDirection.INACTIVE


_DIRECTIONS = {d.value.encode(): d for d in SdpDirection}

# Only m=, c= and the four direction attributes matter; one C-level scan finds just those lines.
_LINES_RE = re.compile(
    rb"\n(?:([mc])=([^\r\n]*)|a=(sendrecv|sendonly|recvonly|inactive)[ \t]*\r?$)", re.M
)


class _Media:
    __slots__ = ("audio", "direction", "null_address", "port")

    def __init__(self, audio: bool, port: int) -> None:
        self.audio = audio
        self.port = port
        self.direction: SdpDirection | None = None
        self.null_address: bool | None = None


def _is_null_connection(value: bytes) -> bool:
    fields = value.split()
    return len(fields) == 3 and fields[2].partition(b"/")[0] == b"0.0.0.0"


def _media_port(value: bytes) -> int:
    fields = value.split()
    if len(fields) < 2:
        return 0
    port = fields[1].partition(b"/")[0]
    return int(port) if port.isdigit() and len(port) <= 5 else 0


def sdp_direction(body: bytes) -> SdpDirection:
    """Return the effective direction of the first audio stream with a non-zero port.

    Media-level ``a=`` and ``c=`` lines override session-level ones; no attribute means
    ``sendrecv``. Old-style hold (``c=IN IP4 0.0.0.0``) reads as ``inactive`` (``sendonly``
    if stated). All streams disabled (port 0) reads as ``inactive``. Never raises.
    """
    session_direction: SdpDirection | None = None
    session_null = False
    media: list[_Media] = []
    current: _Media | None = None
    for kind, value, attribute in _LINES_RE.findall(b"\n" + body):
        if attribute:
            direction = _DIRECTIONS[attribute]
            if current is None:
                session_direction = direction
            else:
                current.direction = direction
        elif kind == b"c":
            null = _is_null_connection(value)
            if current is None:
                session_null = null
            else:
                current.null_address = null
        else:
            current = _Media(value.lstrip().lower().startswith(b"audio"), _media_port(value))
            media.append(current)
    if not media:
        chosen_direction, chosen_null = session_direction, session_null
    else:
        live = [m for m in media if m.port != 0]
        if not live:
            return SdpDirection.INACTIVE
        stream = next((m for m in live if m.audio), live[0])
        chosen_direction = stream.direction or session_direction
        chosen_null = session_null if stream.null_address is None else stream.null_address
    direction = chosen_direction or SdpDirection.SENDRECV
    if chosen_null and direction is not SdpDirection.SENDONLY:
        return SdpDirection.INACTIVE
    return direction
