"""Wall-clock time as the API shows it (RFC 3339, UTC, milliseconds)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """Now, e.g. `2026-11-25T11:05:42.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
