"""Phone or PBX: who sent a SIP message, told from addresses and dialog direction. No I/O.

Through a back-to-back PBX the agent's identity is on both of the PBX's legs: the customer's
INVITE to the PBX is addressed to the agent (``To: 1001``) just like the PBX's INVITE to the
phone, and the PBX's INVITE toward a consult target carries the agent as caller
(``From: 1001``) just like the phone's own consult INVITE. How a phone spells its Contact says
nothing (linphone writes none, baresip ``1001-0x55...``, a PBX ``asterisk`` or nothing), so the
tracker decides from facts that do not depend on it:

- **who created a request**: the *bottom* Via's sent-by (host and port; a proxy adds its Via on
  top, a back-to-back PBX starts a new request with its own);
- **who sent a response**: the packet's source address in the HEP header (unknown without one);
- **where a request went**: the packet's destination in the HEP header and the Request-URI's
  host and port.

Per watched phone P the tracker remembers the addresses known **not** to be P:

1. the creator of any new INVITE addressed to P (a phone never calls itself: that is a PBX or
   proxy delivering a call, or the caller);
2. where P's own INVITEs went (P's PBX or proxy).

Then: a new INVITE from P is P's own unless its creator is one of those; an in-dialog request
from P likewise; an answer to an INVITE addressed to P is P's unless its source is one of those.
And the B2BUA pair itself: when a new INVITE addressed to P is created by the address an earlier
INVITE addressed to P went to, that address relays P's calls, and the earlier dialog is the
relay's (the customer's dialog with the PBX), not P's.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections import OrderedDict

from bridge.sip import SipMessage, SipParseError, parse_via
from bridge.sip.syntax import split_top_level

__all__ = ["Hop", "OtherSides", "hop", "origin_of", "request_target"]

Hop = tuple[str, int]  # (host as written, lower-case, IPs normalised; port)
MAX_PER_PHONE = 32  # addresses remembered per phone, the least recently seen dropped


def hop(host: str, port: int | None, secure: bool = False) -> Hop | None:
    """A comparable address: IPs normalised (``[::1]`` and ``::1`` alike), the default SIP port
    filled in; None for an empty host or port 0 (a HEP packet without address chunks)."""
    host = host.strip().strip("[]").lower()
    if not host or port == 0:
        return None
    if ":" in host:  # only IPv6 has several spellings; parsing every IPv4 cost 5% of the path
        with contextlib.suppress(ValueError):
            host = str(ipaddress.ip_address(host))
    return host, port if port is not None else (5061 if secure else 5060)


def origin_of(msg: SipMessage) -> Hop | None:
    """Who created a request: the bottom Via's sent-by; None if it cannot be read."""
    last = msg.bottom_via
    if "," in last:
        last = split_top_level(last, ",", angle=False)[-1]
    try:
        via = parse_via(last.strip())
    except SipParseError:
        return None
    return hop(via.host, via.port, via.transport.upper() in ("TLS", "WSS"))


def request_target(msg: SipMessage) -> Hop | None:
    """Where a request is addressed: the Request-URI's host and port; None if not a SIP URI."""
    try:
        uri = msg.request_sip_uri()
    except SipParseError:
        return None
    if uri is None or uri.scheme not in ("sip", "sips"):
        return None
    return hop(uri.host, uri.port, uri.scheme == "sips")


class OtherSides:
    """Per watched phone, the addresses known not to be that phone (bounded, newest kept)."""

    __slots__ = ("_by_phone", "limit")

    def __init__(self, limit: int = MAX_PER_PHONE) -> None:
        self.limit = limit
        self._by_phone: dict[str, OrderedDict[Hop, None]] = {}

    def note(self, phone: str, *hops: Hop | None) -> None:
        """Remember that these addresses are not ``phone``."""
        known = self._by_phone.get(phone)
        if known is None:
            known = self._by_phone[phone] = OrderedDict()
        for item in hops:
            if item is None:
                continue
            known[item] = None
            known.move_to_end(item)
            if len(known) > self.limit:
                known.popitem(last=False)

    def exclude(self, phone: str, item: Hop | None) -> bool:
        """True when ``item`` is known not to be ``phone`` (an unknown address is not)."""
        if item is None:
            return False
        known = self._by_phone.get(phone)
        return known is not None and item in known

    def forget(self, phones: set[str]) -> None:
        """Keep only the phones still watched."""
        for phone in [p for p in self._by_phone if p not in phones]:
            del self._by_phone[phone]

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_phone.values())
