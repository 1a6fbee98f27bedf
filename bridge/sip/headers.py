"""Decoders for single SIP header values: CSeq, Via, Replaces, Event, Subscription-State, ..."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SipParseError
from .syntax import Params, get_param, is_token, parse_params, parse_uint
from .uri import split_hostport

__all__ = [
    "CSeq",
    "EventHeader",
    "ReplacesParams",
    "SubscriptionState",
    "Via",
    "parse_cseq",
    "parse_event",
    "parse_refer_sub",
    "parse_replaces",
    "parse_subscription_state",
    "parse_via",
]

_MAX_CSEQ = 2**31 - 1


@dataclass(frozen=True, slots=True)
class CSeq:
    """A CSeq value: sequence number and method."""

    number: int
    method: str


@dataclass(frozen=True, slots=True)
class Via:
    """One Via entry: transport, sent-by host and port, and parameters (branch, rport, ...)."""

    transport: str
    host: str
    port: int | None
    params: Params = ()

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (``z9hG4bK...`` for RFC 3261 agents)."""
        return get_param(self.params, "branch")

    def param(self, name: str) -> str | None:
        """Return parameter ``name`` (case-insensitive); None if absent or a flag."""
        return get_param(self.params, name)


@dataclass(frozen=True, slots=True)
class ReplacesParams:
    """The dialog named by a Replaces header or an escaped ``?Replaces=`` (RFC 3891)."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False


@dataclass(frozen=True, slots=True)
class EventHeader:
    """An Event header: package (lower-cased, e.g. ``refer``), optional ``id``, parameters."""

    package: str
    id: str | None = None
    params: Params = ()


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A Subscription-State header (RFC 6665): state, reason, expires, retry-after."""

    state: str
    reason: str | None = None
    expires: int | None = None
    retry_after: int | None = None

    @property
    def is_terminated(self) -> bool:
        """True when the subscription (e.g. the implicit REFER one) has ended."""
        return self.state == "terminated"


def parse_cseq(value: str) -> CSeq:
    """Parse ``"4711 INVITE"`` into :class:`CSeq`."""
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"bad CSeq {value!r}")
    text = parts[0]
    if 0 < len(text) <= 10 and text.isdigit() and text.isascii():  # parse_uint, inlined
        number = int(text)
    else:
        number = parse_uint(text, "CSeq number")
    if number > _MAX_CSEQ:
        raise SipParseError(f"CSeq number out of range: {number}")
    method = parts[1]
    if not (method.isascii() and method.isalpha()) and not is_token(method):
        raise SipParseError(f"bad CSeq method {method!r}")
    return CSeq(number, parts[1])


def parse_via(value: str) -> Via:
    """Parse one Via entry such as ``SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1``."""
    sent, _, params_text = value.partition(";")
    words = sent.split()
    if len(words) < 2:
        raise SipParseError(f"bad Via {value!r}")
    protocol = "".join(words[:-1]).split("/")  # LWS is allowed around the slashes
    if len(protocol) != 3 or not all(protocol):
        raise SipParseError(f"bad Via sent-protocol in {value!r}")
    host, port = split_hostport(words[-1])
    params = parse_params(";" + params_text) if params_text else ()
    return Via(protocol[2].upper(), host, port, params)


def parse_replaces(value: str) -> ReplacesParams:
    """Parse ``call-id;to-tag=x;from-tag=y[;early-only]`` (header or unescaped URI header)."""
    call_id, semi, rest = value.strip().partition(";")
    call_id = call_id.strip()
    if not call_id or " " in call_id:
        raise SipParseError(f"bad Replaces call-id in {value!r}")
    params = parse_params(semi + rest)
    to_tag = get_param(params, "to-tag")
    from_tag = get_param(params, "from-tag")
    if not to_tag or not from_tag:
        raise SipParseError(f"Replaces without to-tag and from-tag: {value!r}")
    early_only = any(name == "early-only" for name, _ in params)
    return ReplacesParams(call_id, to_tag, from_tag, early_only)


def parse_event(value: str) -> EventHeader:
    """Parse an Event header such as ``refer;id=93809824``."""
    package, semi, rest = value.partition(";")
    package = package.strip().lower()
    if not is_token(package):
        raise SipParseError(f"bad event package in {value!r}")
    params = parse_params(semi + rest)
    return EventHeader(package, get_param(params, "id"), params)


def parse_subscription_state(value: str) -> SubscriptionState:
    """Parse ``terminated;reason=noresource`` or ``active;expires=180``."""
    state, semi, rest = value.partition(";")
    state = state.strip().lower()
    if not is_token(state):
        raise SipParseError(f"bad subscription state in {value!r}")
    params = parse_params(semi + rest)
    reason = get_param(params, "reason")
    expires = get_param(params, "expires")
    retry_after = get_param(params, "retry-after")
    return SubscriptionState(
        state,
        None if reason is None else reason.lower(),
        None if expires is None else parse_uint(expires, "expires"),
        None if retry_after is None else parse_uint(retry_after, "retry-after"),
    )


def parse_refer_sub(value: str) -> bool:
    """Parse Refer-Sub (RFC 4488): ``true`` or ``false``, parameters ignored."""
    word = value.partition(";")[0].strip().lower()
    if word == "true":
        return True
    if word == "false":
        return False
    raise SipParseError(f"bad Refer-Sub {value!r}")
