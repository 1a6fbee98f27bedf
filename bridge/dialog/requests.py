"""What a subscription sends: its settings, the SUBSCRIBE request, and the datagram type."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.dialog.digest import DigestCredentials
from bridge.dialog.errors import SubscriptionError
from bridge.dialog.wire import CONTENT_TYPE, hostport

__all__ = ["Outgoing", "SubscriptionSettings", "subscribe_request"]


@dataclass(frozen=True, slots=True)
class SubscriptionSettings:
    """Where to subscribe and as whom; `repr` hides the password (inside `credentials`)."""

    pbx: tuple[str, int]
    local: tuple[str, int]  # the address the PBX sends NOTIFYs to (our Contact)
    credentials: DigestCredentials
    domain: str  # host part of the Request-URI, From and To
    expires: int = 600
    timeout: float = 8.0  # no final response within this: failed
    backoff_initial: float = 1.0
    backoff_cap: float = 60.0
    user_agent: str = "transfer-bridge"

    def __post_init__(self) -> None:
        if self.expires < 60:
            raise SubscriptionError("expires must be at least 60 seconds")
        if self.timeout <= 0 or not 0 < self.backoff_initial <= self.backoff_cap:
            raise SubscriptionError("bad timeout or back-off")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A datagram to send: to the PBX, or (`reply`) back to where the request came from."""

    data: bytes
    reply: bool = False


def subscribe_request(
    s: SubscriptionSettings,
    uri: str,
    *,
    call_id: str,
    local_tag: str,
    remote_tag: str | None,
    cseq: int,
    branch: str,
    expires: int,
    auth_line: str | None = None,
) -> bytes:
    """A `SUBSCRIBE Event: dialog` to `uri` in the given dialog (`auth_line`: a digest answer)."""
    to_tag = f";tag={remote_tag}" if remote_tag else ""
    lines = [
        f"SUBSCRIBE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {hostport(s.local)};rport;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:{s.credentials.username}@{s.domain}>;tag={local_tag}",
        f"To: <{uri}>{to_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Contact: <sip:{s.credentials.username}@{hostport(s.local)}>",
        "Event: dialog",
        f"Accept: {CONTENT_TYPE}",
        f"Expires: {expires}",
        f"User-Agent: {s.user_agent}",
    ]
    if auth_line is not None:
        lines.append(auth_line)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()
