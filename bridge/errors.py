"""Typed errors of the core; the HTTP layer maps each to a status and an error code once."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the core raises on purpose."""

    code = "bridge_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class TransferNotAllowed(BridgeError):
    """A desktop step or session operation that the seed's rules refuse."""

    def __init__(self, code: str, message: str, *, state: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.state = state


class InvalidInput(BridgeError):
    """Input that does not have the shape the contract asks for."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code
