"""One `SUBSCRIBE Event: dialog` subscription to one extension, as a sans-I/O state machine.

Bytes come in as parsed `SipMessage`s, `now` is passed in, and every call returns what to send
(`Outgoing`) plus the documents that arrived; `next_deadline()` says when to call `timer(now)`
again. The caller owns the socket and the clock (the aioquic model: a sans-I/O core).

    sub = Subscription("1001", settings, now=clock())
    send(sub.start(now))                 # SUBSCRIBE
    step = sub.receive(message, now)     # 401 -> SUBSCRIBE with Authorization, 2xx, NOTIFY ...
    send(step.outgoing); use(step.documents)
    send(sub.timer(now))                 # retransmissions, refresh, re-subscribe after back-off

States: `idle -> subscribing -> active -> (refreshing) -> ...`; a failure, a time-out or a
`Subscription-State: terminated` moves to `waiting` and a new subscription (new Call-ID) starts
when its back-off ends. Every allowed move is in `TRANSITIONS`; any other raises
`SubscriptionStateError`. A 401/407 is answered once per nonce (a second challenge without
`stale=true` is a wrong password: `waiting`, reason `auth_failed`).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from bridge.dialog.digest import DigestSession
from bridge.dialog.errors import SubscriptionError, SubscriptionStateError
from bridge.dialog.notify import read_notify
from bridge.dialog.parse import DialogInfo
from bridge.dialog.requests import Outgoing, SubscriptionSettings, subscribe_request
from bridge.dialog.wire import expires_of, retry_after_of
from bridge.sip import SipMessage, SipParseError

__all__ = ["TRANSITIONS", "Step", "SubEvent", "SubState", "Subscription"]

T1 = 0.5  # RFC 3261 retransmission timers (non-INVITE transaction over UDP)
T2 = 4.0


class SubState(StrEnum):
    """Where a subscription is."""

    IDLE = "idle"
    SUBSCRIBING = "subscribing"
    ACTIVE = "active"
    REFRESHING = "refreshing"
    WAITING = "waiting"
    STOPPED = "stopped"


class SubEvent(StrEnum):
    """What moves a subscription from one state to another."""

    START = "start"  # a new SUBSCRIBE dialog: by the caller, after back-off, or after a 481
    ACCEPTED = "accept"  # a 2xx to our SUBSCRIBE
    REFRESH = "refresh"  # the refresh time came: re-SUBSCRIBE in the same dialog
    FAILED = "fail"  # no answer in time, a rejection, a failed challenge, `Expires: 0`
    TERMINATED = "terminate"  # a NOTIFY with `Subscription-State: terminated`
    STOP = "stop"  # the caller unsubscribes; nothing follows


# The whole state machine: state -> {event -> next state}; a pair not listed is refused. A NOTIFY
# can end the subscription in any live state (even before the answer to our first SUBSCRIBE),
# and `stop` works from anywhere, a second time included.
TRANSITIONS: Final[Mapping[SubState, Mapping[SubEvent, SubState]]] = MappingProxyType(
    {
        SubState.IDLE: MappingProxyType(
            {
                SubEvent.START: SubState.SUBSCRIBING,
                SubEvent.TERMINATED: SubState.WAITING,
                SubEvent.STOP: SubState.STOPPED,
            }
        ),
        SubState.SUBSCRIBING: MappingProxyType(
            {
                SubEvent.ACCEPTED: SubState.ACTIVE,
                SubEvent.FAILED: SubState.WAITING,
                SubEvent.TERMINATED: SubState.WAITING,
                SubEvent.STOP: SubState.STOPPED,
            }
        ),
        SubState.ACTIVE: MappingProxyType(
            {
                SubEvent.REFRESH: SubState.REFRESHING,
                SubEvent.TERMINATED: SubState.WAITING,
                SubEvent.STOP: SubState.STOPPED,
            }
        ),
        SubState.REFRESHING: MappingProxyType(
            {
                SubEvent.ACCEPTED: SubState.ACTIVE,
                SubEvent.FAILED: SubState.WAITING,
                SubEvent.START: SubState.SUBSCRIBING,  # a 481: the PBX forgot the subscription
                SubEvent.TERMINATED: SubState.WAITING,
                SubEvent.STOP: SubState.STOPPED,
            }
        ),
        SubState.WAITING: MappingProxyType(
            {
                SubEvent.START: SubState.SUBSCRIBING,  # the back-off is over
                SubEvent.TERMINATED: SubState.WAITING,
                SubEvent.STOP: SubState.STOPPED,
            }
        ),
        SubState.STOPPED: MappingProxyType({SubEvent.STOP: SubState.STOPPED}),
    }
)


@dataclass(slots=True)
class Step:
    """What one input produced."""

    outgoing: list[Outgoing] = field(default_factory=list)
    documents: list[DialogInfo] = field(default_factory=list)
    new_dialog: bool = False  # the documents start a new subscription (versions restart)
    malformed: int = 0  # NOTIFY bodies that could not be used (counted, answered, dropped)


def _token() -> str:
    return secrets.token_hex(8)


class Subscription:
    """The subscription to one extension's dialog state."""

    def __init__(
        self,
        extension: str,
        settings: SubscriptionSettings,
        *,
        token: Callable[[], str] = _token,
        rng: random.Random | None = None,
    ) -> None:
        if not extension or any(c in extension for c in ' <>@;:\r\n"\\'):
            raise SubscriptionError(f"bad extension {extension!r}")
        self.extension = extension
        self.settings = settings
        self._token = token
        self._rng = rng or random.Random()
        self._state = SubState.IDLE
        self.reason: str | None = None  # why the last attempt failed
        self.failures = 0
        self.call_id = ""
        self.local_tag = ""
        self.remote_tag: str | None = None
        self.cseq = 0
        self.expires_at: float | None = None
        self._deadline: float | None = None  # retransmit / give up / refresh / retry
        self._request: bytes | None = None
        self._branch = ""
        self._sent_at = 0.0
        self._interval = T1
        self._auth = DigestSession()  # this dialog's answers to 401/407 challenges
        self.subscribed_since: float | None = None

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> SubState:
        """Where the subscription is; it changes only through `TRANSITIONS`."""
        return self._state

    def _goto(self, event: SubEvent) -> None:
        """Apply `event` by the table, before any other field changes, or raise."""
        try:
            self._state = TRANSITIONS[self._state][event]
        except KeyError:
            raise SubscriptionStateError(self._state, event) from None

    # --- addresses --------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The watched resource, e.g. `sip:1001@pbx.example`."""
        return f"sip:{self.extension}@{self.settings.domain}"

    def next_deadline(self) -> float | None:
        """When `timer` wants to run next (None: nothing pending)."""
        return self._deadline

    # --- requests ---------------------------------------------------------------------------

    def _new_dialog(self) -> None:
        self.call_id = f"{self._token()}@transfer-bridge"
        self.local_tag = self._token()
        self.remote_tag = None
        self._auth.reset()

    def _subscribe(self, now: float, expires: int | None = None) -> list[Outgoing]:
        self.cseq += 1
        self._branch = "z9hG4bK" + self._token()
        creds = self.settings.credentials
        self._request = subscribe_request(
            self.settings,
            self.uri,
            call_id=self.call_id,
            local_tag=self.local_tag,
            remote_tag=self.remote_tag,
            cseq=self.cseq,
            branch=self._branch,
            expires=self.settings.expires if expires is None else expires,
            auth_line=self._auth.header_line(creds, "SUBSCRIBE", self.uri, self._token),
        )
        self._sent_at = now
        self._interval = T1
        self._deadline = now + T1
        return [Outgoing(self._request)]

    def start(self, now: float) -> list[Outgoing]:
        """Begin a new subscription (new Call-ID); refused unless `idle` or `waiting`."""
        self._goto(SubEvent.START)
        self._new_dialog()
        return self._subscribe(now)

    def stop(self, now: float) -> list[Outgoing]:
        """Unsubscribe (`Expires: 0`) if subscribed; no more retries."""
        was = self.state
        self._goto(SubEvent.STOP)
        self._deadline = None
        if was in (SubState.ACTIVE, SubState.REFRESHING) and self.remote_tag:
            out = self._subscribe(now, expires=0)
            self._deadline = None  # fire and forget
            return out
        return []

    def _fail(
        self,
        now: float,
        reason: str,
        retry_after: float | None = None,
        event: SubEvent = SubEvent.FAILED,
    ) -> list[Outgoing]:
        self._goto(event)
        self.reason = reason
        self.failures += 1
        self.subscribed_since = None
        self.expires_at = None
        self._request = None
        s = self.settings
        if retry_after is None:
            base = min(s.backoff_cap, s.backoff_initial * 2 ** min(self.failures - 1, 16))
            retry_after = base * self._rng.uniform(0.8, 1.2)
            if reason == "auth_failed":
                retry_after = max(retry_after, min(s.backoff_cap, 15.0))
        self._deadline = now + retry_after
        return []

    # --- timers -----------------------------------------------------------------------------

    def timer(self, now: float) -> list[Outgoing]:
        """Retransmit, give up, refresh or re-subscribe, as due."""
        if self._deadline is None or now < self._deadline:
            return []
        if self.state in (SubState.SUBSCRIBING, SubState.REFRESHING):
            if now - self._sent_at >= self.settings.timeout:
                return self._fail(now, "timeout")
            self._interval = min(self._interval * 2, T2)
            self._deadline = min(now + self._interval, self._sent_at + self.settings.timeout)
            assert self._request is not None
            return [Outgoing(self._request)]
        if self.state is SubState.ACTIVE:
            self._goto(SubEvent.REFRESH)
            return self._subscribe(now)
        if self.state is SubState.WAITING:
            return self.start(now)
        self._deadline = None
        return []

    # --- input ------------------------------------------------------------------------------

    def receive(self, message: SipMessage, now: float) -> Step:
        """A response to our SUBSCRIBE or a NOTIFY of this subscription (same Call-ID)."""
        if message.is_request:
            return self._notify(message, now)
        step = Step()
        if self.state not in (SubState.SUBSCRIBING, SubState.REFRESHING):
            return step  # a late retransmitted response
        try:
            cseq = message.cseq
        except SipParseError:
            step.malformed += 1
            return step
        if cseq.number != self.cseq or cseq.method.upper() != "SUBSCRIBE":
            return step
        code = message.status_code or 0
        if code < 200:
            self._deadline = self._sent_at + self.settings.timeout  # stop retransmitting
            return step
        if 200 <= code < 300:
            self._accepted(message, now)
        elif code in (401, 407):
            step.outgoing += self._challenged(message, code, now)
        elif code == 481 and self.state is SubState.REFRESHING:
            step.outgoing += self.start(now)  # the PBX forgot us: a new subscription at once
            step.new_dialog = True
        else:
            retry = retry_after_of(message)
            step.outgoing += self._fail(now, f"rejected_{code}", retry)
        return step

    def _accepted(self, message: SipMessage, now: float) -> None:
        try:
            tag = message.to_tag
        except SipParseError:
            tag = None
        if tag and not self.remote_tag:
            self.remote_tag = tag
        expires = expires_of(message) or self.settings.expires
        if expires <= 0:
            self._fail(now, "expired")
            return
        self._goto(SubEvent.ACCEPTED)
        self.reason = None
        self.failures = 0
        self._request = None
        if self.subscribed_since is None:
            self.subscribed_since = now
        self.expires_at = now + expires
        self._deadline = now + max(expires - min(60.0, expires / 4), 1.0)

    def _challenged(self, message: SipMessage, code: int, now: float) -> list[Outgoing]:
        header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        refused = self._auth.take(code, message.header(header))
        return self._fail(now, refused) if refused else self._subscribe(now)

    def _notify(self, message: SipMessage, now: float) -> Step:
        stopped = self.state is SubState.STOPPED
        notify = read_notify(message, stopped=stopped, remote_tag=self.remote_tag)
        step = Step([Outgoing(notify.reply, True)], notify.documents, malformed=notify.malformed)
        if not notify.accepted:
            return step
        if self.remote_tag is None and notify.from_tag:
            self.remote_tag = notify.from_tag  # the NOTIFY overtook the 200 to our SUBSCRIBE
            step.new_dialog = True
        sub_state = notify.sub_state
        if sub_state is not None and sub_state.is_terminated:
            step.outgoing += self._terminated(sub_state.reason, sub_state.retry_after, now)
        elif (
            sub_state is not None
            and sub_state.expires is not None
            and self.state is SubState.ACTIVE
        ):
            refresh = now + max(sub_state.expires - min(60.0, sub_state.expires / 4), 1.0)
            if self._deadline is None or refresh < self._deadline:
                self._deadline = refresh
        return step

    def _terminated(
        self, reason: str | None, retry_after: int | None, now: float
    ) -> list[Outgoing]:
        """RFC 6665 4.1.3: retry at once after `deactivated`/`timeout`, later otherwise."""
        if reason in ("deactivated", "timeout") and retry_after is None:
            self._goto(SubEvent.TERMINATED)
            self.failures = 0
            self.reason = f"terminated_{reason}"
            self.subscribed_since = None
            return self.start(now)
        delay: float | None = retry_after
        if reason in ("rejected", "noresource", "invariant") and retry_after is None:
            delay = max(self.settings.backoff_cap, 60.0)
        return self._fail(now, f"terminated_{reason or 'unknown'}", delay, SubEvent.TERMINATED)
