"""Asterisk's AMI events -> the same phone evidence the SIP path produces. No I/O.

Only channels of watched phones are tracked (`AmiPhones`). Per phone, the first live call is
the customer call; a call the phone places while it has one is the consult call.

What each event is worth (Asterisk 22, checked against the recordings in tests/fixtures/ami/;
docs/evidence.md has the whole picture):

- Strong, target-side (`TransferSucceeded`): after a blind transfer, the customer's channel's
  own `DialEnd DialStatus: ANSWER` (proof `target_answered`; a dialplan's early media or
  announcement before its Dial proves nothing); after a semi-attended transfer, the target's
  channel (`TransferTargetUniqueid`, else the consult's `DialBegin DestUniqueid`) going `Up`
  or a `DialEnd ANSWER` naming it (`target_answered`); `AttendedTransfer Result: Success`
  whose consult was answered before (`consult_replaced`: the agent spoke to the person who
  now has the customer).
- Weak, the PBX's own report (`TransferReported`, never proof): `BlindTransfer Result:
  Success` only means the customer was sent to the dialplan; `AttendedTransfer Result:
  Success` while the consult still rang (semi-attended, `DestType: App`) is a merge done
  before anyone answered, and the customer is dropped if the target then refuses.
- Failures (`TransferFailed` with a `FailureCause`): the customer's dial ending unanswered
  (`DialStatus` BUSY, NOANSWER, CONGESTION/CHANUNAVAIL, CANCEL; a 603 shows as NOANSWER and
  is told apart by the target channel's hangup cause 21), the customer's or the semi-attended
  target's channel hanging up first (Q.850 `Cause`: 17 busy, 21 rejected, 18/19 no answer,
  1/3/27/34/38 unavailable, else the customer went away), the customer hanging up during a
  consult, and any other `Result` (`Fail`, `Invalid`, `Not Permitted`: `transfer_failed`).

A reported transfer is kept as a `Handoff` until the target's side settles it; handoffs expire
on the bridge's own clock (`received_at`), never on Asterisk's `Timestamp:`, which only dates
the evidence.

Evidence carries the SIP Call-ID of the phone's leg with the customer when the PBX tells it, so
that it meets the HEP path's evidence about the same call. Our Asterisk configuration
(docker/asterisk) sets the channel variable `SIPCALLID` from `CHANNEL(pjsip,call-id)` in the
dialplan (the calling channel at priority 1, each dialled channel in a pre-dial handler) and lists
it in manager.conf `channelvars`: AMI shows it as a `VarSet` event and as
`ChanVariable: SIPCALLID=...` on later events. (Listing `CHANNEL(pjsip,call-id)` itself in
`channelvars` froze Asterisk 22.10.1 here.) Until a leg's Call-ID is known its evidence is held
back (at most until the call is answered or ends); a leg whose Call-ID never shows is named
`ami:<Uniqueid>`.
"""

from __future__ import annotations

from collections import OrderedDict

from bridge.ami.channels import (
    AmiCallTrackerStats,
    AmiChannel,
    Handoff,
    cause_code,
    chan_variables,
    dial_failure,
    event_time,
    hangup_failure,
    listing_age,
    number,
    transfer_result,
    variable,
)
from bridge.ami.messages import AmiEvent
from bridge.ami.phones import AmiPhones
from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvent,
    PhoneEvidence,
    TransferFailed,
    TransferReported,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import CallState, ConsultState, FailureCause, ProofGrade, TransferKind
from bridge.timefmt import rfc3339

CALL_ID_VARIABLE = "SIPCALLID"
STATE_RING = "4"  # ChannelState of a channel whose phone is placing the call
CONSULTING = frozenset({ConsultState.DIALING, ConsultState.RINGING, ConsultState.ANSWERED})
RECENT_LEGS = 256  # hung-up legs kept a little for events that name them late
LISTING = frozenset({"CoreShowChannel", "CoreShowChannelsComplete"})
MAX_HELD = 10_000  # events held while a channel list is awaited
HANDOFF_SECONDS = 3600.0  # a reported transfer nothing settled is forgotten after this long
MAX_HANDOFFS = 1024


class AmiCallTracker:
    """Feed AMI events in order; get `PhoneEvent`s for the watched phones."""

    def __init__(
        self, source: str, phones: AmiPhones, *, call_id_variable: str | None = CALL_ID_VARIABLE
    ) -> None:
        self.source = source
        self.phones = phones
        self.call_id_variable = call_id_variable
        self.legs: dict[str, AmiChannel] = {}
        self.peers: dict[str, str] = {}  # other party's Uniqueid -> the phone's customer leg
        # Transfers Asterisk reported that the target's side has not settled yet, by the
        # customer's (transferee's) channel Uniqueid.
        self.handoffs: dict[str, Handoff] = {}
        self.recent: OrderedDict[str, AmiChannel] = OrderedDict()  # hung-up legs, newest last
        self._listing: list[AmiEvent] = []  # CoreShowChannel rows until the list completes
        self._resyncing = False
        self._held: list[tuple[AmiEvent, float]] = []  # events that came in during a resync
        self.stats = AmiCallTrackerStats()
        self._out: list[PhoneEvent] = []
        self._at = ""  # the evidence's time: Asterisk's Timestamp when sane
        self._now = 0.0  # the bridge's own clock (received_at): every expiry uses it

    def reset(self, *, resync: bool = False) -> None:
        """Forget every call (after a reconnect: the events in between are lost).

        With `resync`, the caller has asked Asterisk for its channels (`CoreShowChannels`):
        other events are held until the list is complete, then replayed on top of it, so a
        transfer made while the list is on its way is still understood. Call `resync_failed`
        if the list will not come.
        """
        self.legs.clear()
        self.peers.clear()
        self.handoffs.clear()
        self.recent.clear()
        self._listing.clear()
        self._held.clear()
        self._resyncing = resync
        self.stats.legs = 0

    def resync_failed(self) -> list[PhoneEvent]:
        """The channel list will not come: go on with what was held."""
        return self._release()

    def _release(self) -> list[PhoneEvent]:
        self._resyncing = False
        held, self._held = self._held, []
        out: list[PhoneEvent] = []
        for event, received_at in held:
            out.extend(self.feed(event, received_at))
        return out

    # --- input ------------------------------------------------------------------------------

    def feed(self, event: AmiEvent, received_at: float) -> list[PhoneEvent]:
        """Evidence from one event (usually none)."""
        handler = self._HANDLERS.get(event.name)
        if self._resyncing and event.name not in LISTING:
            if len(self._held) < MAX_HELD:
                self._held.append((event, received_at))
                return []
            self._resyncing = False  # the list is not coming: stop waiting for it
            return [*self._release(), *self.feed(event, received_at)]
        self.stats.events += 1
        if handler is None:
            return []
        self._at = rfc3339(event_time(event.get("Timestamp"), received_at))
        self._now = received_at
        self._expire_handoffs()
        outer, self._out = self._out, []  # re-entrant: a completed resync replays held events
        self._learn_call_ids(event)
        handler(self, event)
        out, self._out = self._out, outer
        self.stats.evidence += len(out)
        return out

    def _learn_call_ids(self, event: AmiEvent) -> None:
        """Pick up SIP Call-IDs from `<Prefix>ChanVariable: SIPCALLID=...`."""
        for prefix, call_id in chan_variables(event, self.call_id_variable):
            self._call_id_known(self._find(event.get(f"{prefix}Uniqueid") or ""), call_id)

    def _call_id_known(self, leg: AmiChannel | None, call_id: str) -> None:
        """A leg's SIP Call-ID, learnt once: what was held back for it goes out."""
        if leg is not None and leg.sip_call_id is None:
            leg.sip_call_id = call_id
            self._flush(leg)

    # --- output -----------------------------------------------------------------------------

    def _emit(self, leg: AmiChannel, obs: Observation) -> None:
        waiting = leg.key is None and leg.sip_call_id is None and not leg.up
        if waiting and self.call_id_variable is not None:
            leg.pending.append((obs, self._at))
            return
        self._send(leg, obs, self._at)

    def _send(self, leg: AmiChannel, obs: Observation, at: str) -> None:
        if leg.key is None:
            leg.key = leg.sip_call_id or f"ami:{leg.uniqueid}"
        evidence = PhoneEvidence(self.source, at, obs)
        self._out.append(PhoneEvent(leg.phone, evidence, call_id=leg.key, remote=leg.remote))

    def _flush(self, leg: AmiChannel) -> None:
        pending, leg.pending = leg.pending, []
        for obs, at in pending:
            self._send(leg, obs, at)

    def _find(self, uniqueid: str) -> AmiChannel | None:
        return self.legs.get(uniqueid) or self.recent.get(uniqueid)

    def _consult(self, leg: AmiChannel, state: ConsultState) -> None:
        customer = self._find(leg.customer_leg or "")
        if customer is None or customer.consult is state:
            return
        customer.consult = state
        self._emit(customer, ConsultChanged(state, leg.remote))

    # --- handlers ---------------------------------------------------------------------------

    def _live_customer(self, phone: str) -> AmiChannel | None:
        for leg in self.legs.values():
            if leg.phone == phone and leg.role == "customer" and not leg.ended:
                return leg
        return None

    def _var_set(self, event: AmiEvent) -> None:
        value = (event.get("Value") or "").strip()
        if event.get("Variable") == self.call_id_variable and value:
            self._call_id_known(self._leg(event), value)

    def _newchannel(self, event: AmiEvent) -> None:
        channel = event.get("Channel") or ""
        uniqueid = event.get("Uniqueid") or ""
        phone = self.phones.phone_of(channel)
        if phone is None or not uniqueid or uniqueid in self.legs:
            return
        self.stats.tracked += 1
        placed = event.get("ChannelState") == STATE_RING
        customer = self._live_customer(phone)
        role = "customer" if customer is None else "consult" if placed else "other"
        remote = number(event.get("Exten")) if placed else number(event.get("ConnectedLineNum"))
        leg = AmiChannel(uniqueid, channel, phone, role, placed, remote)
        self.legs[uniqueid] = leg
        self.stats.legs = len(self.legs)
        if role == "consult" and customer is not None:
            leg.customer_leg = customer.uniqueid
            self._consult(leg, ConsultState.DIALING)
        self._learn_call_ids(event)

    def _leg(self, event: AmiEvent, prefix: str = "") -> AmiChannel | None:
        leg = self._find(event.get(f"{prefix}Uniqueid") or "")
        if leg is not None:
            self.stats.tracked += 1
        return leg

    def _newstate(self, event: AmiEvent) -> None:
        desc = event.get("ChannelStateDesc")
        if desc == "Up":
            self._target_up(event.get("Uniqueid") or "")
        leg = self._leg(event)
        if leg is None:
            return
        if leg.role == "consult" and desc == "Up":
            leg.answered = True  # the phone's consult call was answered
        if leg.role != "customer":
            return
        if desc == "Ringing":
            self._emit(leg, CallStateChanged(CallState.RINGING))
        elif desc == "Up" and not leg.up:
            leg.up = True
            self._emit(leg, CallStateChanged(CallState.CONNECTED))

    def _connected_line(self, event: AmiEvent) -> None:
        leg = self._leg(event)
        if leg is not None and leg.remote is None:
            leg.remote = number(event.get("ConnectedLineNum"))

    def _dial_begin(self, event: AmiEvent) -> None:
        handoff = self.handoffs.get(event.get("Uniqueid") or "")
        if handoff is not None and handoff.blind:
            # The transferred customer's channel dials: the last dial it makes is the target.
            handoff.target = event.get("DestUniqueid") or None
            handoff.target_cause = None
        caller = self._leg(event)
        callee = self._leg(event, "Dest")
        if callee is not None:
            callee.peer = event.get("Uniqueid")
            if callee.remote is None:
                callee.remote = number(event.get("CallerIDNum"))
            if callee.role == "customer" and callee.peer:
                self.peers[callee.peer] = callee.uniqueid
        if caller is not None:
            caller.peer = event.get("DestUniqueid")
            if caller.role == "customer" and caller.peer:
                self.peers[caller.peer] = caller.uniqueid
                self._emit(caller, CallStateChanged(CallState.RINGING))
            elif caller.role == "consult":
                self._consult(caller, ConsultState.DIALING)

    def _dial_state(self, event: AmiEvent) -> None:
        caller = self._leg(event)
        ringing = (event.get("DialStatus") or "").upper() in ("RINGING", "PROGRESS")
        if caller is not None and caller.role == "consult" and ringing:
            self._consult(caller, ConsultState.RINGING)

    def _dial_end(self, event: AmiEvent) -> None:
        status = (event.get("DialStatus") or "").upper()
        uniqueid = event.get("Uniqueid") or ""
        dest = event.get("DestUniqueid") or ""
        handoff = self.handoffs.get(uniqueid)
        if handoff is None or not handoff.blind:
            # A semi-attended transfer: the consult's dial towards the target goes on.
            handoff = self._handoff_of_target(dest)
        if handoff is not None:
            if status == "ANSWER":
                self._settle_answered(handoff)
            else:
                cause = dial_failure(status, handoff.target_cause)
                self._settle_failed(handoff, f"pbx_dial_{status.lower() or 'unknown'}", cause)
        caller = self._leg(event)
        if caller is not None and caller.role == "consult":
            answered = status == "ANSWER"
            caller.answered = caller.answered or answered
            self._consult(caller, ConsultState.ANSWERED if answered else ConsultState.ENDED)

    def _hold(self, event: AmiEvent) -> None:
        leg = self._leg(event)
        if leg is not None and leg.role == "customer":
            state = CallState.ON_HOLD if event.name == "Hold" else CallState.CONNECTED
            self._emit(leg, CallStateChanged(state))

    def _blind_transfer(self, event: AmiEvent) -> None:
        leg = self._leg(event, "Transferer")
        if leg is None or leg.role != "customer":
            return
        result = transfer_result(event.get("Result"))
        target = number(event.get("Extension"))
        self._emit(leg, TransferRequested(TransferKind.BLIND, target))
        if result != "success":
            self._emit(leg, TransferFailed(f"pbx_blind_{result}"))
            return
        # Success only means the customer was sent to the dialplan: ringback, early media or an
        # announcement may follow, and the target may never answer. Its dial settles it.
        self._emit(leg, TransferReported("pbx_blind_transfer"))
        transferee = event.get("TransfereeUniqueid")
        if transferee:
            self._watch(Handoff(leg.uniqueid, transferee, blind=True, since=self._now))

    def _attended_transfer(self, event: AmiEvent) -> None:
        leg = consult = None
        consult_state: str | None = None  # the event's snapshot of the consult-side transferer
        prefixes = ("OrigTransferer", "SecondTransferer")
        for prefix, other in zip(prefixes, reversed(prefixes), strict=True):
            candidate = self._leg(event, prefix)
            if candidate is not None and candidate.role == "customer":
                leg = candidate
                found = self._find(event.get(f"{other}Uniqueid") or "")
                consult = found if found is not None and found.role == "consult" else None
                consult_state = event.get(f"{other}ChannelStateDesc")
                break
        if leg is None:
            return
        if consult is None:
            consult = next((c for c in self.legs.values() if c.customer_leg == leg.uniqueid), None)
        result = transfer_result(event.get("Result"))
        target = number(event.get("TransferTargetCallerIDNum"))
        if target is None and consult is not None:
            target = consult.remote
        # Answered consult: the agent spoke to a person at the target, who now has the customer.
        # A consult that still rang (semi-attended) proves nothing: Asterisk merges at once.
        answered = consult.answered if consult is not None else consult_state == "Up"
        kind = TransferKind.ATTENDED if answered else TransferKind.SEMI_ATTENDED
        self._emit(leg, TransferRequested(kind, target))
        if result != "success":
            self._emit(leg, TransferFailed(f"pbx_attended_{result}"))
        elif answered:
            proof = ProofGrade.CONSULT_REPLACED
            self._emit(leg, TransferSucceeded("pbx_attended_transfer", proof=proof))
        else:
            # Nobody has the customer yet; the target's channel answering (or not) settles it.
            self._emit(leg, TransferReported("pbx_attended_transfer_early"))
            target_channel = event.get("TransferTargetUniqueid") or (
                consult.peer if consult is not None else None
            )
            if target_channel:  # else only the agent's word can settle it
                transferee = event.get("TransfereeUniqueid") or f"semi:{leg.uniqueid}"
                handoff = Handoff(leg.uniqueid, transferee, blind=False, since=self._now)
                handoff.target = target_channel
                self._watch(handoff)

    # --- transfers Asterisk reported, settled by the target's side ---------------------------

    def _watch(self, handoff: Handoff) -> None:
        self.handoffs[handoff.transferee] = handoff
        while len(self.handoffs) > MAX_HANDOFFS:
            del self.handoffs[next(iter(self.handoffs))]

    def _expire_handoffs(self) -> None:
        """Forget reports nothing settled for long (lost events), on the bridge's own clock:
        Asterisk's `Timestamp` may be skewed, and a replayed capture's is old."""
        stale = [k for k, h in self.handoffs.items() if self._now - h.since > HANDOFF_SECONDS]
        for key in stale:
            del self.handoffs[key]

    def _handoff_of_target(self, uniqueid: str) -> Handoff | None:
        if not uniqueid:
            return None
        for handoff in self.handoffs.values():
            if handoff.target == uniqueid:
                return handoff
        return None

    def _settle_answered(self, handoff: Handoff) -> None:
        self.handoffs.pop(handoff.transferee, None)
        leg = self._find(handoff.leg)
        if leg is not None:
            proof = ProofGrade.TARGET_ANSWERED
            self._emit(leg, TransferSucceeded("pbx_target_answered", proof=proof))

    def _settle_failed(self, handoff: Handoff, reason: str, cause: FailureCause) -> None:
        self.handoffs.pop(handoff.transferee, None)
        leg = self._find(handoff.leg)
        if leg is not None:
            self._emit(leg, TransferFailed(reason, cause=cause))

    def _target_up(self, uniqueid: str) -> None:
        """A semi-attended transfer's target channel answered: it has the customer now."""
        handoff = self._handoff_of_target(uniqueid)
        if handoff is not None and not handoff.blind:
            self._settle_answered(handoff)

    def _handoff_hangup(self, event: AmiEvent, final: bool) -> None:
        """A channel a reported transfer waits on asks to hang up (`final`: it is gone)."""
        uniqueid = event.get("Uniqueid") or ""
        cause = cause_code(event.get("Cause"))
        target_of = self._handoff_of_target(uniqueid)
        if target_of is not None and cause:
            target_of.target_cause = cause
        if final and target_of is not None and not target_of.blind:
            # The semi-attended target went away unanswered (a blind transfer's own dial
            # reports it, or the customer's channel does).
            self._settle_failed(target_of, "pbx_target_hung_up", hangup_failure(cause))
        handoff = self.handoffs.get(uniqueid)
        if final and handoff is not None:
            # The customer's channel is gone before the target answered: the target's side
            # (a dialplan's Busy()/Hangup(17) after early media) or the customer hung up.
            why = hangup_failure(handoff.target_cause or cause)
            reason = "customer_hung_up" if why is FailureCause.CUSTOMER_HUNG_UP else "pbx_hangup"
            self._settle_failed(handoff, reason, why)

    # --- hang-ups -------------------------------------------------------------------------------

    def _hangup(self, event: AmiEvent) -> None:
        uniqueid = event.get("Uniqueid") or ""
        self._handoff_hangup(event, final=True)
        self._other_party_gone(uniqueid)
        leg = self.legs.pop(uniqueid, None)
        if leg is None:
            return
        self.stats.tracked += 1
        leg.ended = True
        if leg.role == "consult":
            self._consult(leg, ConsultState.ENDED)
        elif leg.role == "customer":
            leg.up = True  # nothing more will name its Call-ID: send what was held back
            self._flush(leg)
            self._emit(leg, CallStateChanged(CallState.ENDED))
        if leg.peer is not None and self.peers.get(leg.peer) == leg.uniqueid:
            del self.peers[leg.peer]
        self.recent[uniqueid] = leg
        while len(self.recent) > RECENT_LEGS:
            self.recent.popitem(last=False)
        self.stats.legs = len(self.legs)

    def _other_party_gone(self, uniqueid: str) -> None:
        """The customer's side of a phone's call hangs up: during a consult, no transfer."""
        customer = self._find(self.peers.pop(uniqueid, ""))
        consulting = customer is not None and customer.consult in CONSULTING
        if customer is not None and not customer.ended and consulting:
            cause = FailureCause.CUSTOMER_HUNG_UP
            self._emit(customer, TransferFailed("customer_hung_up", cause=cause))

    def _hangup_request(self, event: AmiEvent) -> None:
        # The far end asked to hang up (its BYE), before Asterisk tears the bridge down and
        # hangs up the phone's leg too: the one moment that tells who hung up.
        self._handoff_hangup(event, final=False)
        self._other_party_gone(event.get("Uniqueid") or "")

    # --- resync after (re)connecting: the answer to `Action: CoreShowChannels` ------------------

    def _show_channel(self, event: AmiEvent) -> None:
        if self.phones.phone_of(event.get("Channel") or "") is not None:
            self._listing.append(event)

    def _show_complete(self, event: AmiEvent) -> None:
        """Rebuild the watched phones' calls that were already up when we connected.

        Nothing is emitted: the store already holds what an earlier run concluded; this only
        lets later events (a transfer, a hang-up) be understood. Per phone the oldest channel
        is the customer call; a channel the phone is dialling from (`Application: Dial`)
        next to it is the consult.
        """
        rows, self._listing = self._listing, []

        for row in sorted(rows, key=listing_age):
            uniqueid = row.get("Uniqueid") or ""
            channel = row.get("Channel") or ""
            phone = self.phones.phone_of(channel)
            if phone is None or not uniqueid or uniqueid in self.legs:
                continue
            placed = row.get("Application") == "Dial"
            customer = self._live_customer(phone)
            role = "customer" if customer is None else "consult" if placed else "other"
            up = row.get("ChannelStateDesc") == "Up"
            leg = AmiChannel(
                uniqueid, channel, phone, role, placed, number(row.get("ConnectedLineNum"))
            )
            leg.up = up
            leg.sip_call_id = variable(row, self.call_id_variable)
            leg.key = leg.sip_call_id or f"ami:{uniqueid}"
            if role == "consult" and customer is not None:
                leg.customer_leg = customer.uniqueid
                leg.answered = up
                customer.consult = ConsultState.ANSWERED if up else ConsultState.RINGING
            self.legs[uniqueid] = leg
        self.stats.legs = len(self.legs)
        released = self._release()
        self.stats.evidence -= len(released)  # counted by the replay already
        self._out.extend(released)

    _HANDLERS = {
        "Newchannel": _newchannel,
        "VarSet": _var_set,
        "Newstate": _newstate,
        "NewConnectedLine": _connected_line,
        "DialBegin": _dial_begin,
        "DialState": _dial_state,
        "DialEnd": _dial_end,
        "Hold": _hold,
        "Unhold": _hold,
        "BlindTransfer": _blind_transfer,
        "AttendedTransfer": _attended_transfer,
        "Hangup": _hangup,
        "HangupRequest": _hangup_request,
        "CoreShowChannel": _show_channel,
        "CoreShowChannelsComplete": _show_complete,
    }
