"""Desk-phone events, normalised across vendors, and what each one proves.

A desk phone (Yealink, Poly, Snom) reports its own calls over HTTP. The vendor modules turn a
request into `DeskPhoneEvent`s; `DeviceCalls` keeps a small per-device memory so that replayed,
repeated and out-of-order events change nothing, and turns the rest into `PhoneEvent`s for the
session machine.

What a desk phone's word is worth:

- strong: nothing. No vendor reports that the target answered, so this module never emits
  `TransferSucceeded` (nor `TransferReported`: it is not the PBX);
- weak: "transfer finished" only says the phone handed the transfer over (its REFER was
  accepted or its NOTIFY said so), which is progress (`TransferProgressed(accepted)`), not
  proof; the target-side sources or the agent's Yes/No settle the transfer;
- failures: "transfer failed" is taken as a failure, with no finer cause than
  `transfer_failed` (vendors do not say whether the target was busy, refused or absent).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from bridge.errors import InvalidInput
from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvent,
    PhoneEvidence,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
)
from bridge.model import CallState, ConsultState, FailureCause, ReferState, TransferKind
from bridge.uris import phone_key

SECRET_LENGTH = 26  # base32 characters: 130 bits
MAX_LIVE_CALLS = 16
MAX_ENDED_CALLS = 64


class DeskEventKind(StrEnum):
    """What a desk phone says happened, in the same words for every vendor."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    ESTABLISHED = "established"
    TERMINATED = "terminated"
    HOLD = "hold"
    UNHOLD = "unhold"
    TRANSFER = "transfer"
    BLIND_TRANSFER = "blind_transfer"
    ATTENDED_TRANSFER = "attended_transfer"
    TRANSFER_FINISHED = "transfer_finished"
    TRANSFER_FAILED = "transfer_failed"


TRANSFER_KINDS = frozenset(
    {
        DeskEventKind.TRANSFER,
        DeskEventKind.BLIND_TRANSFER,
        DeskEventKind.ATTENDED_TRANSFER,
        DeskEventKind.TRANSFER_FINISHED,
        DeskEventKind.TRANSFER_FAILED,
    }
)
# How far a call has come; an event that would move a call back is late and dropped.
RANK = {
    DeskEventKind.INCOMING: 1,
    DeskEventKind.OUTGOING: 1,
    DeskEventKind.ESTABLISHED: 2,
    DeskEventKind.HOLD: 2,
    DeskEventKind.UNHOLD: 2,
    DeskEventKind.TERMINATED: 3,
}
# What a call event says about the agent's customer call, and (fewer kinds) about a consult call.
CUSTOMER_STATE = {
    DeskEventKind.INCOMING: CallState.RINGING,
    DeskEventKind.OUTGOING: CallState.RINGING,
    DeskEventKind.ESTABLISHED: CallState.CONNECTED,
    DeskEventKind.HOLD: CallState.ON_HOLD,
    DeskEventKind.UNHOLD: CallState.CONNECTED,
    DeskEventKind.TERMINATED: CallState.ENDED,
}
CONSULT_STATE = {
    DeskEventKind.OUTGOING: ConsultState.DIALING,
    DeskEventKind.ESTABLISHED: ConsultState.ANSWERED,
    DeskEventKind.TERMINATED: ConsultState.ENDED,
}


class DeskEventOutcome(StrEnum):
    """What became of one desk-phone event (counted per vendor in /metrics)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    NO_CALL = "no_call"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class DeskPhoneEvent:
    """One event a desk phone reported, normalised.

    `call_id` is the phone's own call identifier ($call_id, $call-id, CallReference), `remote`
    the other party's number (the user part of the SIP URI), `observed` the phone's own time
    stamp (POSIX seconds) when it sends one.
    """

    vendor: str
    kind: DeskEventKind
    mac: str | None = None
    ip: str | None = None
    call_id: str | None = None
    remote: str | None = None
    local: str | None = None
    observed: float | None = None


def clean(value: str | None) -> str | None:
    """A value the phone filled in, or None (empty, or a `$variable` it left unsubstituted)."""
    if value is None:
        return None
    value = value.strip()
    if not value or value.startswith("$"):
        return None
    return value


def normalise_mac(value: str | None, pointer: str = "/query/mac") -> str | None:
    """`00:15:65:AB:CD:EF`, `0015.65ab.cdef` and `001565abcdef` are the same device."""
    value = clean(value)
    if value is None:
        return None
    mac = "".join(ch for ch in value.lower() if ch not in ":-. ")
    if len(mac) != 12 or any(ch not in "0123456789abcdef" for ch in mac):
        raise InvalidInput("invalid_parameter", "mac is not a MAC address", field=pointer)
    return mac


def number_of(uri: str | None) -> str | None:
    """The user part of a SIP URI (`sip:+34900000001@pbx` -> `+34900000001`), or the value."""
    uri = clean(uri)
    if uri is None:
        return None
    text = uri
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.rindex(">")]
    user, at, _ = phone_key(text).partition("@")
    return (user if at else text) or None


def from_action_url(vendor: str, kind: DeskEventKind, query: Mapping[str, str]) -> DeskPhoneEvent:
    """An event from an action-URL query: both Yealink and Snom send the same fields (our
    templates name them `mac`, `ip`, `call_id`, `remote`, `local`)."""
    return DeskPhoneEvent(
        vendor=vendor,
        kind=kind,
        mac=normalise_mac(query.get("mac")),
        ip=clean(query.get("ip")),
        call_id=clean(query.get("call_id")),
        remote=number_of(query.get("remote")),
        local=number_of(query.get("local")),
    )


def device_identity(mac: str | None, ip: str | None) -> str:
    """What the per-device secret is derived from: the MAC when known, else the IP."""
    if mac:
        return mac
    if ip:
        return ip.lower()
    raise ValueError("a device needs a MAC or an IP")


def derive_secret(device_key: str, account_id: str, identity: str) -> str:
    """The device's URL secret: base32(HMAC-SHA256(device_key, account/identity))[:26].

    Derived, not stored: rotating `device_key` rotates every device's secret at once.
    """
    digest = hmac.new(
        device_key.encode(), f"{account_id}/{identity}".encode(), hashlib.sha256
    ).digest()
    return base64.b32encode(digest).decode()[:SECRET_LENGTH]


def secret_matches(expected: str, given: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(slots=True)
class TrackedCall:
    """One call of the device as its events described it so far."""

    call_id: str
    role: str  # "customer", "consult" (the agent dialled out during a call) or "other"
    remote: str | None
    rank: int = 0
    last: tuple[str, str | None] | None = None
    observed: float | None = None
    requested: TransferKind | None = None
    final: bool = False


@dataclass(slots=True)
class DeviceCalls:
    """Per-device memory: live calls, recently ended ones, and which call is the customer's."""

    live: OrderedDict[str, TrackedCall] = field(default_factory=OrderedDict)
    ended: OrderedDict[str, TrackedCall] = field(default_factory=OrderedDict)
    customer: str | None = None

    def _find(self, call_id: str) -> TrackedCall | None:
        return self.live.get(call_id) or self.ended.get(call_id)

    def _customer_call(self) -> TrackedCall | None:
        return None if self.customer is None else self._find(self.customer)

    def _consult_call(self) -> TrackedCall | None:
        consults = [c for c in self.live.values() if c.role == "consult"]
        if consults:
            return consults[-1]
        ended = [c for c in self.ended.values() if c.role == "consult"]
        return ended[-1] if ended else None

    def _new_call(self, event: DeskPhoneEvent, call_id: str) -> TrackedCall:
        customer = self._customer_call()
        customer_live = customer is not None and customer.call_id in self.live
        if not customer_live:
            role = "customer"
        elif event.kind is DeskEventKind.OUTGOING:
            role = "consult"
        else:
            role = "other"  # a second incoming call (call waiting) is not the consult
        call = TrackedCall(call_id, role, event.remote)
        self.live[call_id] = call
        if role == "customer":
            self.customer = call_id
        while len(self.live) > MAX_LIVE_CALLS:
            self._retire(next(iter(self.live)))
        return call

    def _retire(self, call_id: str) -> None:
        call = self.live.pop(call_id, None)
        if call is None:
            return
        self.ended[call_id] = call
        while len(self.ended) > MAX_ENDED_CALLS:
            self.ended.popitem(last=False)

    def accept(
        self, event: DeskPhoneEvent, *, phone: str, source: str, at: str
    ) -> tuple[DeskEventOutcome, list[PhoneEvent]]:
        """Decide what one event means for the agent's customer call (pure, no clock)."""
        if event.kind in TRANSFER_KINDS:
            return self._transfer(event, phone=phone, source=source, at=at)
        call_id = event.call_id
        if call_id is None:
            # Some events come without the call's id: only an unambiguous live call can take it.
            if event.kind in (DeskEventKind.INCOMING, DeskEventKind.OUTGOING) or (
                len(self.live) != 1
            ):
                return DeskEventOutcome.NO_CALL, []
            call_id = next(iter(self.live))
        if call_id in self.ended:
            late = event.kind is not DeskEventKind.TERMINATED
            return (DeskEventOutcome.OUT_OF_ORDER if late else DeskEventOutcome.DUPLICATE), []
        call = self.live.get(call_id)
        if call is None:
            if event.kind is DeskEventKind.TERMINATED:
                return DeskEventOutcome.NO_CALL, []
            call = self._new_call(event, call_id)
        fingerprint = (event.kind.value, event.remote)
        if call.last == fingerprint:
            return DeskEventOutcome.DUPLICATE, []
        older = (
            event.observed is not None
            and call.observed is not None
            and event.observed < call.observed
        )
        if older or RANK[event.kind] < call.rank:
            return DeskEventOutcome.OUT_OF_ORDER, []
        call.rank = max(call.rank, RANK[event.kind])
        call.last = fingerprint
        call.observed = event.observed if event.observed is not None else call.observed
        call.remote = call.remote or event.remote
        if event.kind is DeskEventKind.TERMINATED:
            self._retire(call_id)
        observation = self._call_observation(call, event.kind)
        if observation is None:
            return DeskEventOutcome.IGNORED, []
        return DeskEventOutcome.APPLIED, [self._phone_event(phone, source, at, observation)]

    def _call_observation(self, call: TrackedCall, kind: DeskEventKind) -> Observation | None:
        if call.role == "customer":
            return CallStateChanged(CUSTOMER_STATE[kind])
        if call.role == "consult":
            consult = CONSULT_STATE.get(kind)
            return None if consult is None else ConsultChanged(consult, call.remote)
        return None

    def _transfer(
        self, event: DeskPhoneEvent, *, phone: str, source: str, at: str
    ) -> tuple[DeskEventOutcome, list[PhoneEvent]]:
        # Transfer events are about the customer's call, whatever call id the phone put on them,
        # and may come after that call ended (the phone hangs up once the transfer is handed over).
        call = self._customer_call()
        if call is None:
            return DeskEventOutcome.NO_CALL, []
        if call.final:
            return DeskEventOutcome.DUPLICATE, []
        consult = self._consult_call()
        target = consult.remote if consult is not None else None
        observation: Observation
        if event.kind is DeskEventKind.TRANSFER_FINISHED:
            call.final = True
            observation = TransferProgressed(ReferState.ACCEPTED)
        elif event.kind is DeskEventKind.TRANSFER_FAILED:
            call.final = True
            observation = TransferFailed(
                f"{event.vendor} reported the transfer failed", cause=FailureCause.TRANSFER_FAILED
            )
        else:
            if event.kind is DeskEventKind.BLIND_TRANSFER:
                kind = TransferKind.BLIND
            elif event.kind is DeskEventKind.ATTENDED_TRANSFER or consult is not None:
                kind = TransferKind.ATTENDED
            else:
                kind = TransferKind.BLIND
            if call.requested is kind:
                return DeskEventOutcome.DUPLICATE, []
            call.requested = kind
            observation = TransferRequested(kind, target if kind is TransferKind.ATTENDED else None)
        return DeskEventOutcome.APPLIED, [self._phone_event(phone, source, at, observation)]

    def _phone_event(
        self, phone: str, source: str, at: str, observation: Observation
    ) -> PhoneEvent:
        customer = self._customer_call()
        return PhoneEvent(
            phone=phone,
            evidence=PhoneEvidence(source, at, observation),
            call_id=customer.call_id if customer else None,
            remote=customer.remote if customer else None,
        )
