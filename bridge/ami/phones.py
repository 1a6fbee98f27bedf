"""Which Asterisk channels belong to watched phones: `PJSIP/1001-0000000a` -> `sip:1001@pbx`."""

from __future__ import annotations

from collections.abc import Iterable

from bridge.uris import phone_key


def channel_endpoint(channel: str) -> str | None:
    """The endpoint part of a channel name, or None for channels that are not a phone's.

    >>> channel_endpoint("PJSIP/1001-0000000a")
    'PJSIP/1001'
    >>> channel_endpoint("Local/1002@phones-00000001;1") is None
    True
    """
    tech, slash, rest = channel.partition("/")
    if not slash or tech.lower() == "local" or not rest:
        return None
    endpoint, dash, suffix = rest.rpartition("-")
    if not dash or not endpoint or not suffix:
        return None
    return f"{tech}/{endpoint}"


def default_endpoint(sip_uri: str) -> str:
    """The endpoint Asterisk most likely names a phone by: `PJSIP/<user>`."""
    user, _, _ = phone_key(sip_uri).rpartition("@")
    return f"PJSIP/{user or phone_key(sip_uri)}"


class AmiPhones:
    """The watched phones by AMI endpoint (case-insensitive technology, exact endpoint name)."""

    __slots__ = ("_by_endpoint",)

    def __init__(self, phones: Iterable[tuple[str, str | None]] = ()) -> None:
        self._by_endpoint: dict[str, str] = {}
        self.replace(phones)

    @staticmethod
    def _key(endpoint: str) -> str:
        tech, _, name = endpoint.partition("/")
        return f"{tech.upper()}/{name}"

    def replace(self, phones: Iterable[tuple[str, str | None]]) -> None:
        """Watch exactly these phones: `(sip_uri, ami_endpoint or None)` pairs.

        Without an `ami_endpoint` a phone is taken to be `PJSIP/<user part of its URI>`.
        """
        self._by_endpoint = {
            self._key(endpoint or default_endpoint(uri)): uri for uri, endpoint in phones
        }

    def phone_of(self, channel: str) -> str | None:
        """The watched phone's SIP URI for a channel name, or None."""
        endpoint = channel_endpoint(channel)
        if endpoint is None:
            return None
        return self._by_endpoint.get(self._key(endpoint))

    def __len__(self) -> int:
        return len(self._by_endpoint)
