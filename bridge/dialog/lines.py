"""Line states of watched extensions (dialog-info) -> the phone evidence of the other sources.

What Asterisk 22 sends for a hint (recorded in tests/fixtures/dialog/) shapes this module:
one `<dialog id="<exten>">` per line, no Call-ID and no tags, the state of the whole device
(`early` while it rings, `confirmed` while it has any call, `terminated` when idle), and the
caller's identity only while it rings. Hold, the agent's own consult call and the REFER are
not shown on the agent's line. So evidence is read across lines:

- a call of a line gets a key `dialog:<source>:<exten>:<epoch>-<n>` and the caller's number
  (from the ringing state); sessions bind to it by the agent's phone plus that number;
- target line T rings with the agent A's own number while A is on a call: A's consult (ringing,
  answered when T is confirmed, ended when T goes idle);
- T rings with the number of A's customer while A's call is up or just ended: A's blind transfer
  to T (requested);
- A goes idle while T still rings for A's consult, and T keeps ringing `SETTLE_SECONDS`: the
  customer now rings there in the consult's place (semi-attended: requested, nobody has them).

What is proof and what is not:

- strong, target-side (`TransferSucceeded`): T, ringing with the customer's number, confirmed
  (blind; `target_answered`); T, still ringing for A's consult when A left, confirmed
  (semi-attended; `target_answered`); T's consult call, confirmed while A was on it, outlives
  A's call by `SETTLE_SECONDS` (attended; `consult_replaced`, inferred: in Asterisk only an
  attended transfer does that); a dialog `terminated` with `event="replaced"` (PBXs that
  report per-dialog RFC 4235 state; `consult_replaced`, or semi-attended, waiting for T, when T
  was known to still ring for the consult);
- failures (`TransferFailed`): T stops ringing unanswered after a blind or semi-attended
  transfer, with the cause its terminated dialog names (`code=` 486 busy, 603 rejected...;
  `event="rejected"` rejected, `timeout`/`cancelled` no answer), else `transfer_failed`:
  Asterisk's hints name no cause;
- weak: nothing here is a PBX's report of success. A consult that ends with A's call (within
  `SETTLE_SECONDS`) is no transfer at all, and a blind transfer to a target that refuses at
  once leaves no trace on T's line (Asterisk shows no state change; A's line just goes idle):
  the session keeps the desktop's manual confirmation.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.dialog.parse import DialogEntry, DialogState
from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvent,
    PhoneEvidence,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import (
    CallState,
    ConsultState,
    FailureCause,
    ProofGrade,
    ReferState,
    TransferKind,
    failure_cause_of_status,
)
from bridge.timefmt import rfc3339
from bridge.uris import numbers_match

__all__ = ["BLIND_WINDOW_SECONDS", "SETTLE_SECONDS", "DialogLines", "identity_number"]

BLIND_WINDOW_SECONDS = 5.0  # the customer may ring the target this long after the agent's call
SETTLE_SECONDS = 1.5  # the target's line must outlive the agent's call this long
RINGING = frozenset({DialogState.TRYING, DialogState.PROCEEDING, DialogState.EARLY})
# `<state event="...">` of a dialog that ended unanswered (RFC 4235 section 4.1.2)
EVENT_CAUSES = {
    "rejected": FailureCause.TARGET_REJECTED,
    "timeout": FailureCause.TARGET_NO_ANSWER,
    "cancelled": FailureCause.TARGET_NO_ANSWER,
}


def unanswered_cause(dialogs: list[DialogEntry]) -> FailureCause:
    """Why a line stopped ringing without answering, as far as its terminated dialogs tell:
    a SIP `code=` first (486 busy, 603 rejected...), then `event=`. Asterisk's hints tell
    neither: then nothing finer than `transfer_failed`."""
    ended = [d for d in dialogs if d.state is DialogState.TERMINATED]
    for dialog in ended:
        if dialog.code is not None and dialog.code >= 300:
            cause = failure_cause_of_status(dialog.code)
            if cause is not FailureCause.TRANSFER_FAILED:
                return cause
    for dialog in ended:
        named = EVENT_CAUSES.get((dialog.event or "").lower())
        if named is not None:
            return named
    return FailureCause.TRANSFER_FAILED


def identity_number(identity: str | None) -> str | None:
    """`sip:2000@pbx` -> `2000`; `tel:+3490;x=y` -> `+3490`; None if there is none."""
    if not identity:
        return None
    text = identity.strip().strip("<>")
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    user = text.partition("@")[0] if "@" in text else text
    user = user.partition(";")[0].strip()
    return user or None


@dataclass(slots=True)
class LineCall:
    """One call of a watched line, as the line states tell it."""

    key: str
    ext: str
    remote: str | None
    state: CallState
    ended_at: float | None = None
    consult: ConsultState = ConsultState.NONE
    consult_line: str | None = None  # the target line being consulted
    for_call: LineCall | None = None  # on a target line: the agent's call it serves
    blind: bool = False  # for_call is a blind transfer of the customer to this line
    settle_at: float | None = None  # attended transfer inferred if T still connected then
    consult_at_end: ConsultState = ConsultState.NONE  # its consult when this call ended
    semi: bool = False  # a semi-attended transfer of this call waits on the target's line
    done: bool = False  # the transfer of this call is settled


@dataclass(slots=True)
class Line:
    """A watched extension."""

    ext: str
    phone: str
    status: str = "unknown"  # unknown | idle | ringing | confirmed
    call: LineCall | None = None


class DialogLines:
    """Feed each line's dialogs after every NOTIFY; get `PhoneEvent`s for the watched phones."""

    def __init__(self, source: str, epoch: str) -> None:
        self.source = source
        self.epoch = epoch  # makes call keys unique across bridge runs
        self.lines: dict[str, Line] = {}
        self.recent: list[LineCall] = []  # ended calls a blind transfer may still name
        self._count = 0
        self._out: list[PhoneEvent] = []
        self._at = ""
        self.evidence = 0

    def set_phones(self, phones: dict[str, str]) -> None:
        """Watch exactly these extensions (`exten -> the agent's phone URI`)."""
        for ext in list(self.lines):
            if ext not in phones:
                del self.lines[ext]
        for ext, phone in phones.items():
            line = self.lines.get(ext)
            if line is None:
                self.lines[ext] = Line(ext, phone)
            else:
                line.phone = phone

    # --- output -----------------------------------------------------------------------------

    def _emit(self, call: LineCall, obs: Observation) -> None:
        line = self.lines.get(call.ext)
        if line is None:
            return
        evidence = PhoneEvidence(self.source, self._at, obs)
        self._out.append(PhoneEvent(line.phone, evidence, call_id=call.key, remote=call.remote))

    def _flush(self) -> list[PhoneEvent]:
        out, self._out = self._out, []
        self.evidence += len(out)
        return out

    # --- input ------------------------------------------------------------------------------

    def update(self, ext: str, dialogs: list[DialogEntry], now: float) -> list[PhoneEvent]:
        """The line's dialogs as the latest NOTIFY left them (terminated ones included)."""
        line = self.lines.get(ext)
        if line is None:
            return []
        self._at = rfc3339(now)
        live = [d for d in dialogs if d.state is not DialogState.TERMINATED]
        if any(d.state is DialogState.CONFIRMED for d in live):
            status = "confirmed"
        elif any(d.state in RINGING for d in live):
            status = "ringing"
        else:
            status = "idle"
        remote = next((identity_number(d.remote_identity) for d in live if d.remote_identity), None)
        first = line.status == "unknown"
        previous, line.status = line.status, status
        call = line.call
        if status == "idle":
            if call is not None:
                self._ended(line, call, now, dialogs)
            return self._flush()
        if call is None:
            self._count += 1
            call = LineCall(
                f"dialog:{self.source}:{ext}:{self.epoch}-{self._count}",
                ext,
                remote,
                CallState.RINGING if status == "ringing" else CallState.CONNECTED,
            )
            line.call = call
            if first:
                return self._flush()  # a call already up when we subscribed: no news
            self._emit(call, CallStateChanged(call.state))
            self._target_rings(line, call, now)
        elif remote and not call.remote:
            call.remote = remote
        if status == "confirmed" and previous != "confirmed":
            if call.state is not CallState.CONNECTED:
                call.state = CallState.CONNECTED
                self._emit(call, CallStateChanged(CallState.CONNECTED))
            self._target_answered(call)
        return self._flush()

    def expire(self, now: float) -> list[PhoneEvent]:
        """Settle inferred transfers whose time has come; forget old calls."""
        self._at = rfc3339(now)
        for call in self.recent:
            if call.settle_at is not None and call.settle_at <= now:
                call.settle_at = None
                self._settle(call)
        self.recent = [
            c
            for c in self.recent
            if c.settle_at is not None or (c.ended_at or now) + BLIND_WINDOW_SECONDS > now
        ]
        return self._flush()

    def _settle(self, call: LineCall) -> None:
        """The agent's call ended `SETTLE_SECONDS` ago while it consulted the target line."""
        target = self.lines.get(call.consult_line or "")
        consult = target.call if target is not None else None
        if consult is None or consult.for_call is not call or call.done:
            return  # the consult ended with the agent's call: no transfer
        if call.consult_at_end is ConsultState.ANSWERED and consult.state is CallState.CONNECTED:
            # The target's answered consult call outlived the agent's: only an attended
            # transfer does that in Asterisk (the agent spoke to the person who kept it).
            call.done = True
            self._emit(call, TransferRequested(TransferKind.ATTENDED, consult.ext))
            proof = ProofGrade.CONSULT_REPLACED
            self._emit(call, TransferSucceeded("target_kept_consult_call", proof=proof))
        elif (
            call.consult_at_end is ConsultState.RINGING
            and consult.state is CallState.RINGING
            and not call.semi
        ):
            # The agent left while the target still rang for them (semi-attended): the customer
            # now rings there. Nobody has them yet: the target's line settles it.
            call.semi = True
            self._emit(call, TransferRequested(TransferKind.SEMI_ATTENDED, consult.ext))

    def next_deadline(self) -> float | None:
        """When `expire` has something to do."""
        times = [c.settle_at for c in self.recent if c.settle_at is not None]
        times += [c.ended_at + BLIND_WINDOW_SECONDS for c in self.recent if c.ended_at]
        return min(times) if times else None

    # --- across lines -----------------------------------------------------------------------

    def _agent_calls(self, other_than: str) -> list[LineCall]:
        live = [
            line.call
            for line in self.lines.values()
            if line.ext != other_than and line.call is not None and line.call.for_call is None
        ]
        return [*live, *(c for c in self.recent if c.ext != other_than and c.for_call is None)]

    def _target_rings(self, line: Line, call: LineCall, now: float) -> None:
        """A new call on `line`: is it someone's consult, or a customer being transferred?"""
        if call.remote is None:
            return
        for agent_call in self._agent_calls(line.ext):
            if agent_call.done:
                continue
            if call.remote == agent_call.ext and agent_call.state is CallState.CONNECTED:
                if agent_call.consult in (ConsultState.RINGING, ConsultState.ANSWERED):
                    continue
                call.for_call = agent_call
                agent_call.consult = ConsultState.RINGING
                agent_call.consult_line = line.ext
                self._emit(agent_call, ConsultChanged(ConsultState.RINGING, line.ext))
                return
            recent = (
                agent_call.ended_at is None or now - agent_call.ended_at <= BLIND_WINDOW_SECONDS
            )
            if recent and numbers_match(call.remote, agent_call.remote):
                call.for_call = agent_call
                call.blind = True
                agent_call.done = True
                self._emit(agent_call, TransferRequested(TransferKind.BLIND, line.ext))
                self._emit(agent_call, TransferProgressed(ReferState.TRYING))
                return

    def _target_answered(self, call: LineCall) -> None:
        agent_call = call.for_call
        if agent_call is None:
            return
        proof = ProofGrade.TARGET_ANSWERED
        if call.blind:
            # The target's line, ringing with the customer's number, answered: the customer's
            # call, answered by a person at the target.
            self._emit(agent_call, TransferSucceeded("target_answered_customer", proof=proof))
        elif agent_call.state is CallState.ENDED and agent_call.consult is ConsultState.RINGING:
            # The agent left while the target rang for them (semi-attended); the target now
            # answers the customer, whose call Asterisk put in the consult's place.
            if agent_call.done:
                return
            agent_call.done = True
            agent_call.settle_at = None
            if not agent_call.semi:
                self._emit(agent_call, TransferRequested(TransferKind.SEMI_ATTENDED, call.ext))
            agent_call.semi = False
            self._emit(agent_call, TransferSucceeded("target_answered_transfer", proof=proof))
        elif agent_call.consult is ConsultState.RINGING:
            agent_call.consult = ConsultState.ANSWERED
            self._emit(agent_call, ConsultChanged(ConsultState.ANSWERED, call.ext))

    def _ended(self, line: Line, call: LineCall, now: float, dialogs: list[DialogEntry]) -> None:
        line.call = None
        answered = call.state is CallState.CONNECTED
        call.state = CallState.ENDED
        call.ended_at = now
        self._emit(call, CallStateChanged(CallState.ENDED))
        if any(d.event == "replaced" for d in dialogs) and not call.done:
            self._replaced(call)
        agent_call = call.for_call
        if agent_call is not None and call.blind and not answered:
            cause = unanswered_cause(dialogs)
            self._emit(agent_call, TransferFailed("target_not_answered", cause=cause))
        elif agent_call is not None and not call.blind and not agent_call.done:
            agent_call.settle_at = None
            if agent_call.semi and not answered:
                # The customer rang at the target, which never answered.
                agent_call.done = True
                agent_call.semi = False
                cause = unanswered_cause(dialogs)
                self._emit(agent_call, TransferFailed("target_not_answered", cause=cause))
            if agent_call.consult is not ConsultState.ENDED:
                agent_call.consult = ConsultState.ENDED
                self._emit(agent_call, ConsultChanged(ConsultState.ENDED, call.ext))
        call.consult_at_end = call.consult
        if call.consult in (ConsultState.ANSWERED, ConsultState.RINGING) and not call.done:
            call.settle_at = now + SETTLE_SECONDS
        self.recent.append(call)

    def _replaced(self, call: LineCall) -> None:
        """A PBX that reports per-dialog state says the customer's dialog was replaced (RFC
        3891: only a confirmed dialog at the target can be): an attended transfer, unless the
        target's line is known to have still rung for the consult (semi-attended)."""
        if call.consult is ConsultState.RINGING:
            call.semi = True
            self._emit(call, TransferRequested(TransferKind.SEMI_ATTENDED, call.consult_line))
            return
        call.done = True
        self._emit(call, TransferRequested(TransferKind.ATTENDED, None))
        proof = ProofGrade.CONSULT_REPLACED
        self._emit(call, TransferSucceeded("dialog_replaced", proof=proof))
