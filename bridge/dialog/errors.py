"""Typed errors of the dialog-state (RFC 4235) core."""

from __future__ import annotations

__all__ = ["DialogInfoError", "DigestError", "HostileXml", "SubscriptionError"]


class DialogInfoError(ValueError):
    """A dialog-info+xml body that cannot be used (malformed, too large, wrong document)."""


class HostileXml(DialogInfoError):
    """A body with a DTD or entity declaration: refused before any XML parser sees it."""


class DigestError(ValueError):
    """A digest challenge the client cannot answer (unknown algorithm or qop, missing nonce)."""


class SubscriptionError(ValueError):
    """A subscription was asked for something it cannot do (bad extension, bad settings)."""
