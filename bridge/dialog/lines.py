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
  to T (requested); T confirmed = the customer's call was answered by T (success); T idle
  without answering = failure;
- A goes idle while T, answered in A's consult, stays confirmed for `SETTLE_SECONDS`: T's call
  outlived the agent's, which in Asterisk only an attended transfer does (success, inferred);
- a `terminated` dialog with `event="replaced"` (PBXs that report per-dialog RFC 4235 state):
  the customer's dialog was replaced (success).

Nothing here proves a blind transfer to a target that rejects at once (Asterisk shows no state
change on the target's line then): the agent's line just goes idle, and the session keeps the
desktop's manual confirmation.
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
from bridge.model import CallState, ConsultState, ReferState, TransferKind
from bridge.timefmt import rfc3339
from bridge.uris import numbers_match

__all__ = ["BLIND_WINDOW_SECONDS", "SETTLE_SECONDS", "DialogLines", "identity_number"]

BLIND_WINDOW_SECONDS = 5.0  # the customer may ring the target this long after the agent's call
SETTLE_SECONDS = 1.5  # the target's line must outlive the agent's call this long
RINGING = frozenset({DialogState.TRYING, DialogState.PROCEEDING, DialogState.EARLY})


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
                replaced = any(d.event == "replaced" for d in dialogs)
                self._ended(line, call, now, replaced)
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
        """Settle inferred attended transfers whose time has come; forget old calls."""
        self._at = rfc3339(now)
        for call in self.recent:
            if call.settle_at is not None and call.settle_at <= now:
                call.settle_at = None
                target = self.lines.get(call.consult_line or "")
                consult = target.call if target is not None else None
                kept = consult is not None and consult.state is CallState.CONNECTED
                if kept and consult is not None and consult.for_call is call and not call.done:
                    call.done = True
                    self._emit(call, TransferRequested(TransferKind.ATTENDED, consult.ext))
                    self._emit(call, TransferSucceeded("target_kept_consult_call"))
        self.recent = [
            c
            for c in self.recent
            if c.settle_at is not None or (c.ended_at or now) + BLIND_WINDOW_SECONDS > now
        ]
        return self._flush()

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
        if call.blind:
            self._emit(agent_call, TransferSucceeded("target_answered_customer"))
        elif agent_call.consult is ConsultState.RINGING:
            agent_call.consult = ConsultState.ANSWERED
            self._emit(agent_call, ConsultChanged(ConsultState.ANSWERED, call.ext))

    def _ended(self, line: Line, call: LineCall, now: float, replaced: bool) -> None:
        line.call = None
        answered = call.state is CallState.CONNECTED
        call.state = CallState.ENDED
        call.ended_at = now
        self._emit(call, CallStateChanged(CallState.ENDED))
        if replaced and not call.done:
            call.done = True
            self._emit(call, TransferRequested(TransferKind.ATTENDED, None))
            self._emit(call, TransferSucceeded("dialog_replaced"))
        agent_call = call.for_call
        if agent_call is not None and call.blind and not answered:
            self._emit(agent_call, TransferFailed("target_not_answered"))
        elif agent_call is not None and not call.blind and not agent_call.done:
            agent_call.settle_at = None
            if agent_call.consult is not ConsultState.ENDED:
                agent_call.consult = ConsultState.ENDED
                self._emit(agent_call, ConsultChanged(ConsultState.ENDED, call.ext))
        if call.consult is ConsultState.ANSWERED and not call.done:
            call.settle_at = now + SETTLE_SECONDS
        self.recent.append(call)
