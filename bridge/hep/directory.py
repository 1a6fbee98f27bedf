"""Which watched agent phone a SIP address names: exact ``user@host``, or the user part alone.

Phones often appear on the wire under another host than the one configured (the PBX's IP
instead of its name, the phone's own IP in a B2BUA's leg), so a directory may also match by user
part, but only when exactly one watched phone has that user: an ambiguous user matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.sip.syntax import pct_decode
from bridge.uris import phone_key, uri_of_header

__all__ = ["PhoneDirectory"]


class PhoneDirectory:
    """The watched phones, keyed by ``phone_key`` (``user@host``) and optionally by user part.

    Lookups return the phone's SIP URI as configured, which is what evidence carries.
    """

    __slots__ = ("_by_key", "_by_user", "_users", "match_user")

    def __init__(self, phones: Iterable[str] = (), *, match_user: bool = False) -> None:
        self.match_user = match_user
        self._by_key: dict[str, str] = {}
        self._users: dict[str, str] = {}
        self._by_user: dict[str, str | None] = {}
        self.replace(phones)

    def replace(self, phones: Iterable[str]) -> None:
        """Watch exactly these phones (SIP URIs as configured)."""
        self._by_key = {}
        self._users = {}
        for uri in phones:
            key = phone_key(uri)
            user, at, _ = key.rpartition("@")
            self._by_key[key] = uri
            self._users[uri] = pct_decode(user if at else key)
        self._reindex_users()

    def add(self, uri: str) -> None:
        """Start watching one phone."""
        self.replace([*self._by_key.values(), uri])

    def remove(self, uri: str) -> None:
        """Stop watching one phone (by any spelling with the same ``phone_key``)."""
        key = phone_key(uri)
        self.replace(u for k, u in self._by_key.items() if k != key)

    def _reindex_users(self) -> None:
        by_user: dict[str, str | None] = {}
        for uri, user in self._users.items():
            by_user[user] = None if user in by_user else uri  # None marks an ambiguous user
        self._by_user = by_user

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, uri: object) -> bool:
        return isinstance(uri, str) and phone_key(uri) in self._by_key

    @property
    def phones(self) -> list[str]:
        """The watched phones' configured URIs."""
        return list(self._by_key.values())

    def user_of(self, phone: str) -> str | None:
        """The user part of a watched phone's configured URI (None if no longer watched)."""
        return self._users.get(phone)

    def match_uri(self, uri: str) -> str | None:
        """The watched phone this URI names, or None (unknown, or an ambiguous user part)."""
        key = phone_key(uri)
        found = self._by_key.get(key)
        if found is not None or not self.match_user:
            return found
        user, at, _ = key.rpartition("@")
        if not at:
            return None
        return self._by_user.get(pct_decode(user))

    def match_header(self, value: str | None) -> str | None:
        """The watched phone named by a From/To header value, or None."""
        if not value:
            return None
        return self.match_uri(uri_of_header(value))
