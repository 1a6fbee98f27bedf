"""Asterisk's AMI events -> the same phone evidence the SIP path produces. No I/O.

Only channels of watched phones are tracked (`AmiPhones`). Per phone, every incoming call is a
customer call (a second one while the first is up is call waiting: which one a session is about
is for the binding to decide); a call the phone places while it has one is the consult call of
its first live customer call.

What transfer events are worth and how a transfer Asterisk only reported is settled by the
target's side is `bridge.ami.handoffs`; rebuilding the calls after a reconnect is
`bridge.ami.resync`. This module dispatches the events and keeps the legs.

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

from bridge.ami import handoffs
from bridge.ami.channels import (
    AmiCallTrackerStats,
    AmiChannel,
    chan_variables,
    event_time,
    live_customer,
    number,
)
from bridge.ami.handoffs import Handoffs, Reported, Settled
from bridge.ami.messages import AmiEvent
from bridge.ami.phones import AmiPhones
from bridge.ami.resync import LISTING, Resync, rebuild_legs
from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvent,
    PhoneEvidence,
    TransferFailed,
)
from bridge.model import CallState, ConsultState, FailureCause
from bridge.timefmt import rfc3339

__all__ = ["CALL_ID_VARIABLE", "AmiCallTracker"]

CALL_ID_VARIABLE = "SIPCALLID"
STATE_RING = "4"  # ChannelState of a channel whose phone is placing the call
CONSULTING = frozenset({ConsultState.DIALING, ConsultState.RINGING, ConsultState.ANSWERED})
RECENT_LEGS = 256  # hung-up legs kept a little for events that name them late


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
        self.handoffs: Handoffs = {}
        self.recent: OrderedDict[str, AmiChannel] = OrderedDict()  # hung-up legs, newest last
        self._resync = Resync()  # the channel list and the events held while it comes
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
        self._resync.reset(active=resync)
        self.stats.legs = 0

    def resync_failed(self) -> list[PhoneEvent]:
        """The channel list will not come: go on with what was held."""
        return self._release()

    def _release(self) -> list[PhoneEvent]:
        out: list[PhoneEvent] = []
        for event, received_at in self._resync.release():
            out.extend(self.feed(event, received_at))
        return out

    # --- input ------------------------------------------------------------------------------

    def feed(self, event: AmiEvent, received_at: float) -> list[PhoneEvent]:
        """Evidence from one event (usually none)."""
        handler = self._HANDLERS.get(event.name)
        if self._resync.active and event.name not in LISTING:
            if self._resync.hold(event, received_at):
                return []
            # the list is not coming: stop waiting for it
            return [*self._release(), *self.feed(event, received_at)]
        self.stats.events += 1
        if handler is None:
            return []
        self._at = rfc3339(event_time(event.get("Timestamp"), received_at))
        self._now = received_at
        handoffs.expire(self.handoffs, self._now)
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

    def _settle(self, settled: list[Settled]) -> None:
        """Evidence of handoffs the target's side settled, to each agent's customer leg."""
        for uniqueid, obs in settled:
            leg = self._find(uniqueid)
            if leg is not None:
                self._emit(leg, obs)

    def _report(self, leg: AmiChannel, reported: Reported) -> None:
        """A transfer event's evidence for `leg`, and the handoff it leaves to watch."""
        for obs in reported.evidence:
            self._emit(leg, obs)
        if reported.handoff is not None:
            handoffs.watch(self.handoffs, reported.handoff)

    def _find(self, uniqueid: str) -> AmiChannel | None:
        return self.legs.get(uniqueid) or self.recent.get(uniqueid)

    def _consult(self, leg: AmiChannel, state: ConsultState) -> None:
        customer = self._find(leg.customer_leg or "")
        if customer is None or customer.consult is state:
            return
        customer.consult = state
        self._emit(customer, ConsultChanged(state, leg.remote))

    # --- handlers ---------------------------------------------------------------------------

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
        customer = live_customer(self.legs.values(), phone)
        role = "consult" if placed and customer is not None else "customer"
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
            self._settle(handoffs.target_up(self.handoffs, event.get("Uniqueid") or ""))
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
        handoffs.dial_begin(self.handoffs, event)
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
        self._settle(handoffs.dial_end(self.handoffs, event))
        caller = self._leg(event)
        if caller is not None and caller.role == "consult":
            answered = (event.get("DialStatus") or "").upper() == "ANSWER"
            caller.answered = caller.answered or answered
            self._consult(caller, ConsultState.ANSWERED if answered else ConsultState.ENDED)

    def _hold(self, event: AmiEvent) -> None:
        leg = self._leg(event)
        if leg is not None and leg.role == "customer":
            state = CallState.ON_HOLD if event.name == "Hold" else CallState.CONNECTED
            self._emit(leg, CallStateChanged(state))

    def _blind_transfer(self, event: AmiEvent) -> None:
        leg = self._leg(event, "Transferer")
        if leg is not None and leg.role == "customer":
            self._report(leg, handoffs.blind_transfer(event, leg, self._now))

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
        reported = handoffs.attended_transfer(event, leg, consult, consult_state, self._now)
        self._report(leg, reported)

    # --- hang-ups -------------------------------------------------------------------------------

    def _hangup(self, event: AmiEvent) -> None:
        uniqueid = event.get("Uniqueid") or ""
        self._settle(handoffs.hangup(self.handoffs, event, final=True))
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
        self._settle(handoffs.hangup(self.handoffs, event, final=False))
        self._other_party_gone(event.get("Uniqueid") or "")

    # --- resync after (re)connecting: the answer to `Action: CoreShowChannels` ------------------

    def _show_channel(self, event: AmiEvent) -> None:
        watched = self.phones.phone_of(event.get("Channel") or "") is not None
        self._resync.listed(event, watched)

    def _show_complete(self, event: AmiEvent) -> None:
        """Rebuild the calls already up when we connected (`rebuild_legs`), then replay."""
        rows, dialled = self._resync.take_rows()
        rebuild_legs(rows, self.phones, self.legs, self.call_id_variable, dialled)
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
