"""Typed errors of the dialog-state (RFC 4235) core."""

from __future__ import annotations

from bridge.errors import BridgeError

__all__ = [
    "DialogInfoError",
    "DigestError",
    "HostileXml",
    "SubscriptionError",
    "SubscriptionStateError",
]


class DialogInfoError(BridgeError, ValueError):
    """A dialog-info+xml body that cannot be used (malformed, too large, wrong document)."""


class HostileXml(DialogInfoError):
    """A body with a DTD or entity declaration: refused before any XML parser sees it."""


class DigestError(BridgeError, ValueError):
    """A digest challenge the client cannot answer (unknown algorithm or qop, missing nonce)."""


class SubscriptionError(BridgeError, ValueError):
    """A subscription was asked for something it cannot do (bad extension, bad settings)."""


class SubscriptionStateError(SubscriptionError):
    """A move the subscription's transition table does not allow (e.g. `start` while active)."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"cannot {event} a subscription that is {state}")
        self.state = state
        self.event = event
