"""Time formats shared by every source and the API: RFC 3339 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["Rfc3339Stamps", "rfc3339"]


def rfc3339(at: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC with milliseconds: ``2026-11-25T11:05:42.123Z``."""
    second, ms = divmod(round(at * 1000), 1000)
    text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms:03d}Z"


class Rfc3339Stamps:
    """:func:`rfc3339` for the hot path: the date is formatted once a day, the rest by hand."""

    __slots__ = ("date", "day", "prefix", "second")

    def __init__(self) -> None:
        self.day = self.second = -1
        self.date = self.prefix = ""

    def __call__(self, at: float) -> str:
        second, ms = divmod(round(at * 1000), 1000)
        if second != self.second:
            self.second = second
            day, rest = divmod(second, 86400)
            if day != self.day:
                self.day = day
                self.date = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%dT")
            hours, rest = divmod(rest, 3600)
            minutes, rest = divmod(rest, 60)
            self.prefix = f"{self.date}{hours:02d}:{minutes:02d}:{rest:02d}"
        return f"{self.prefix}.{ms:03d}Z"
