"""The Asterisk Manager Interface source: an asyncio client per ``[[sources.ami]]``."""

from __future__ import annotations

from phone_drivers.ami.backoff import AmiTimeouts, Backoff
from phone_drivers.ami.client import AmiClient, AmiNotConnected, ConnectedHook, EventSink
from phone_drivers.ami.stats import AmiStats, AmiStatus, FailureReason

__all__ = [
    "AmiClient",
    "AmiNotConnected",
    "AmiStats",
    "AmiStatus",
    "AmiTimeouts",
    "Backoff",
    "ConnectedHook",
    "EventSink",
    "FailureReason",
]
