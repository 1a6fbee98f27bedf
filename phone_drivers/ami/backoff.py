"""How long an AMI source waits before it tries again, and how long it waits for Asterisk."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["AmiTimeouts", "Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with jitter: ``initial`` doubling (``factor``) up to ``cap`` seconds.

    A connection that stayed up ``stable_after`` seconds starts the sequence again; after a
    refused login the wait is at least ``auth_failed_min`` (a wrong secret should not hammer
    Asterisk, yet a corrected one is picked up without a restart).
    """

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]
    stable_after: float = 30.0
    auth_failed_min: float = 15.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.cap < self.initial or self.factor < 1:
            raise ValueError("back-off needs 0 < initial <= cap and factor >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("back-off jitter must be in [0, 1)")

    def delay(self, failures: int, rng: random.Random, *, auth_failed: bool = False) -> float:
        """Seconds to wait after ``failures`` failed attempts in a row (1 for the first)."""
        base = min(self.cap, self.initial * self.factor ** max(0, min(failures - 1, 64)))
        wait = base * rng.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else base
        if auth_failed:
            wait = max(wait, self.auth_failed_min)
        return wait


@dataclass(frozen=True, slots=True)
class AmiTimeouts:
    """Bounded waits, in seconds, of one AMI connection."""

    connect: float = 5.0  # TCP connect
    banner: float = 5.0  # the greeting line after connecting
    login: float = 5.0  # the answer to Action: Login
    action: float = 10.0  # default for AmiClient.action
    ping_interval: float = 20.0  # keep-alive Action: Ping every so often ...
    ping_timeout: float = 10.0  # ... and a connection with no Pong within this is dead

    def __post_init__(self) -> None:
        for name in ("connect", "banner", "login", "action", "ping_interval", "ping_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AMI timeout {name} must be > 0")
