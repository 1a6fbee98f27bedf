"""Pure SIP parsing for transfer tracking: messages, addresses, URIs, sipfrag and SDP direction.

``parse_message(data)`` splits a datagram once and indexes its header lines; everything else is
decoded on demand. Malformed input raises :class:`SipParseError` (a ``ValueError``) only.
"""

from .address import NameAddr, ReferTo, parse_name_addr, parse_refer_to
from .errors import SipError, SipParseError
from .headers import (
    CSeq,
    EventHeader,
    ReplacesParams,
    SubscriptionState,
    Via,
    parse_cseq,
    parse_event,
    parse_refer_sub,
    parse_replaces,
    parse_subscription_state,
    parse_via,
)
from .message import SipMessage
from .names import COMPACT_FORMS, canonical_name
from .parser import parse_message
from .sdp import SdpDirection, sdp_direction
from .sipfrag import SipFrag, parse_sipfrag
from .uri import SipUri, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "CSeq",
    "EventHeader",
    "NameAddr",
    "ReferTo",
    "ReplacesParams",
    "SdpDirection",
    "SipError",
    "SipFrag",
    "SipMessage",
    "SipParseError",
    "SipUri",
    "SubscriptionState",
    "Via",
    "canonical_name",
    "parse_cseq",
    "parse_event",
    "parse_message",
    "parse_name_addr",
    "parse_refer_sub",
    "parse_refer_to",
    "parse_replaces",
    "parse_sipfrag",
    "parse_subscription_state",
    "parse_uri",
    "parse_via",
    "sdp_direction",
]
