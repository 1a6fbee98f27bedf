"""What the service raises besides the core's errors (bridge.errors)."""

from __future__ import annotations


class NotFound(Exception):
    """The resource does not exist for this caller (or belongs to another account)."""
