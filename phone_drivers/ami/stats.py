"""Plain counters of one AMI source, read when /metrics is scraped, and why a link is down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

__all__ = ["AmiHealth", "AmiStats", "AmiStatus", "FailureReason", "count_failure"]


class AmiStatus(StrEnum):
    """What /healthz shows for an AMI source."""

    CONNECTING = "connecting"  # no attempt has failed yet (start-up)
    CONNECTED = "connected"  # logged in, events flowing
    FAILING = "failing"  # the last attempt failed or the link dropped; retrying with back-off
    STOPPED = "stopped"  # closed by its owner (not connecting until started again)


class FailureReason(StrEnum):
    """Why the last connection attempt failed or the connection ended (``health["reason"]``)."""

    UNREACHABLE = "unreachable"  # no TCP connection (refused, no route, connect time-out)
    NO_BANNER = "no_banner"  # connected, but no greeting line in time
    NO_LOGIN_REPLY = "no_login_reply"  # no answer to Action: Login in time
    AUTH_FAILED = "auth_failed"  # Asterisk refused the username or secret
    LOGIN_FAILED = "login_failed"  # Login answered with something other than Success / auth
    PROTOCOL_ERROR = "protocol_error"  # not AMI (bad banner, bytes after the end, ...)
    MESSAGE_TOO_LARGE = "message_too_large"  # a message over the size limit
    PING_TIMEOUT = "ping_timeout"  # no answer to the keep-alive Ping in time
    DISCONNECTED = "disconnected"  # Asterisk closed or reset the connection
    INTERNAL_ERROR = "internal_error"  # a bug in the client (logged with its traceback)


@dataclass
class AmiStats:
    """Counters since start; every attribute is a plain int."""

    attempts: int = 0  # TCP connection attempts
    connects: int = 0  # successful logins
    reconnects: int = 0  # successful logins after the first one
    connect_failures: int = 0  # attempts that got no TCP connection
    auth_failures: int = 0  # logins refused (wrong username or secret)
    timeouts: int = 0  # no banner, no login reply or no Pong in time
    disconnects: int = 0  # established connections that ended (peer closed, reset, ping)
    protocol_errors: int = 0  # fatal framing errors (connection dropped), oversized included
    oversized: int = 0  # ... of which a message over the size limit
    malformed: int = 0  # malformed messages dropped while the connection went on
    unexpected: int = 0  # well-formed but out of place (event before login, unasked response)
    events: int = 0  # events handed to the sink
    sink_errors: int = 0  # events the sink raised on (counted, logged, connection kept)
    hook_errors: int = 0  # on_connected callbacks that raised
    actions: int = 0  # actions sent (Login and Ping included)
    action_timeouts: int = 0  # actions with no response in time (Ping included)
    bytes_received: int = 0
    bytes_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name (for logs, tests and metric collectors)."""
        return asdict(self)


_TIMEOUTS = frozenset(
    {FailureReason.NO_BANNER, FailureReason.NO_LOGIN_REPLY, FailureReason.PING_TIMEOUT}
)


def count_failure(stats: AmiStats, reason: FailureReason, *, was_up: bool) -> None:
    """Count one ended attempt or connection under its reason."""
    if was_up:
        stats.disconnects += 1
    if reason is FailureReason.UNREACHABLE:
        stats.connect_failures += 1
    elif reason is FailureReason.AUTH_FAILED:
        stats.auth_failures += 1
    elif reason in _TIMEOUTS:
        stats.timeouts += 1
    elif reason in (FailureReason.PROTOCOL_ERROR, FailureReason.MESSAGE_TOO_LARGE):
        stats.protocol_errors += 1
        if reason is FailureReason.MESSAGE_TOO_LARGE:
            stats.oversized += 1


class AmiHealth:
    """The status of one source, why it is not connected, and since when (clock time)."""

    def __init__(self, address: str, clock: Callable[[], float]) -> None:
        self.address = address
        self._clock = clock
        self.status = AmiStatus.CONNECTING
        self.reason: FailureReason | None = None
        self.error: str | None = None
        self.since = clock()
        self.retry_in: float | None = None

    def _move(self, status: AmiStatus) -> None:
        if status is not self.status:
            self.since = self._clock()
            self.status = status

    def connected(self) -> None:
        """Logged in."""
        self._move(AmiStatus.CONNECTED)
        self.reason = self.error = self.retry_in = None

    def starting(self) -> None:
        """Started (again): connecting, no attempt failed yet."""
        self._move(AmiStatus.CONNECTING)
        self.reason = self.error = self.retry_in = None

    def stopped(self) -> None:
        """Closed: no connection, none being tried."""
        self._move(AmiStatus.STOPPED)
        self.reason = self.error = self.retry_in = None

    def failing(self, reason: FailureReason, detail: str, retry_in: float) -> None:
        """The last attempt failed (or the link dropped); the next one is in ``retry_in`` s."""
        self._move(AmiStatus.FAILING)
        self.reason, self.error, self.retry_in = reason, f"{reason}: {detail}", retry_in

    def as_dict(self) -> dict[str, Any]:
        """``{"kind": "ami", "status", "address", "reason", "error", "since"[, "retry_in"]}``."""
        health: dict[str, Any] = {
            "kind": "ami",
            "status": str(self.status),
            "address": self.address,
            "reason": str(self.reason) if self.reason else None,
            "error": self.error,
            "since": self.since,
        }
        if self.status is AmiStatus.FAILING and self.retry_in is not None:
            health["retry_in"] = round(self.retry_in, 3)
        return health
