"""What the AMI parser yields: small immutable values."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "NEED_DATA",
    "AmiBanner",
    "AmiConnectionClosed",
    "AmiEvent",
    "AmiItem",
    "AmiResponse",
    "Fields",
    "NeedData",
]

Fields = tuple[tuple[str, str], ...]


class _FieldAccess:
    """Look-ups over ordered ``(key, value)`` pairs in which a key may repeat."""

    __slots__ = ()
    fields: Fields

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key``; an exact spelling wins, then any letter case."""
        for k, v in self.fields:
            if k == key:
                return v
        # Asterisk spells some keys inconsistently across events (Uniqueid / UniqueID).
        folded = key.casefold()
        for k, v in self.fields:
            if k.casefold() == folded:
                return v
        return default

    def get_all(self, key: str) -> tuple[str, ...]:
        """Every value of ``key`` in wire order (e.g. repeated ``ChanVariable``), any case."""
        folded = key.casefold()
        return tuple(v for k, v in self.fields if k == key or k.casefold() == folded)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None


@dataclass(frozen=True, slots=True)
class AmiBanner:
    """The one greeting line, e.g. ``Asterisk Call Manager/11.0.0``."""

    product: str
    version: str


@dataclass(frozen=True, slots=True)
class AmiEvent(_FieldAccess):
    """An unsolicited ``Event:`` message; ``fields`` includes the ``Event`` pair itself."""

    name: str
    fields: Fields


@dataclass(frozen=True, slots=True)
class AmiResponse(_FieldAccess):
    """The answer to an action; ``output`` holds command output (``Follows`` or ``Output:``)."""

    response: str
    action_id: str | None
    fields: Fields
    output: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True for ``Success`` and ``Follows``; false for ``Error`` and anything else."""
        return self.response in ("Success", "Follows")


@dataclass(frozen=True, slots=True)
class AmiConnectionClosed:
    """The peer closed the stream (``receive_data(b"")``) at a message boundary."""


@dataclass(frozen=True, slots=True)
class NeedData:
    """No complete item is buffered yet: feed more bytes with ``receive_data``."""


NEED_DATA = NeedData()

AmiItem = AmiBanner | AmiEvent | AmiResponse | AmiConnectionClosed | NeedData
