"""Real Asterisk 22 recordings (AMI and HEP of the same calls) through the pure trackers.

`scripts/rig/record_asterisk.py` recorded each case with pjsua2 phones: customer 2000 (2001),
agents 1001 and 1003 (and 1004, with `refer_blind_progress = no`), target 1002. The sidecar
JSON names each phone's SIP Call-ID, so the evidence can be checked against the exact call it
must belong to, and both sources' evidence can be fed to one session to check that they agree
on one outcome. The later recordings (`PROOF_CASES`) carry AMI `Timestamp:`s and the target
phone's own times (`target.calls[].answered_at`): evidence that proves a transfer must never
come before the target answered.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.ami import NEED_DATA, AmiEvent, AmiParser
from bridge.ami.calls import AmiCallTracker
from bridge.ami.handoffs import HANDOFF_SECONDS
from bridge.ami.phones import AmiPhones, channel_endpoint, default_endpoint
from bridge.evidence import PhoneEvent, TransferReported, TransferSucceeded, describe
from bridge.model import Call, CallState, Customer, ProofGrade, Session, TransferState
from bridge.session.outcome import AuditEntry
from bridge.session.phone import apply_evidence
from tests.rig.hepfile import replay_sip

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
AGENTS = ("1001", "1002", "1003", "1004")
CASES = (
    "blind_answered",
    "blind_busy",
    "attended",
    "customer_hangup_consult",
    "consult_abandoned",
    "quick_refer",
    "two_agents",
)


def uri(ext: str) -> str:
    return f"sip:{ext}@127.0.0.1"


def sidecar(case: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "ami" / f"asterisk-{case}.json").read_text()))


def call_id(case: str, phone: str, n: int = 0) -> str:
    legs = [leg for leg in sidecar(case)["legs"] if leg["phone"] == phone]
    return str(legs[n]["call_id"])


def ami_events(case: str) -> list[AmiEvent]:
    parser = AmiParser()
    parser.receive_data((FIXTURES / "ami" / f"asterisk-{case}.ami").read_bytes())
    out = []
    while (item := parser.next_event()) is not NEED_DATA:
        if isinstance(item, AmiEvent):
            out.append(item)
    return out


def ami_evidence(
    case: str, tracker: AmiCallTracker | None = None, at: float = 1.0
) -> list[PhoneEvent]:
    tracker = tracker or AmiCallTracker("ami", AmiPhones([(uri(e), None) for e in AGENTS]))
    out: list[PhoneEvent] = []
    for event in ami_events(case):
        out.extend(tracker.feed(event, at))
    return out


def hep_evidence(case: str) -> list[PhoneEvent]:
    return replay_sip(FIXTURES / "hep" / f"asterisk-{case}.hep", [uri(e) for e in AGENTS])


def of(events: list[PhoneEvent], phone: str) -> list[tuple[str, str | None]]:
    """What one phone's sessions would hear: (type, state or reason), in order."""
    out = []
    for e in events:
        if e.phone != uri(phone):
            continue
        d = describe(e.evidence.observation)
        detail = d.get("state") or d.get("reason") or d.get("kind") or d.get("refer")
        out.append((str(d["type"]), detail))
    return out


def outcome(events: list[PhoneEvent], phone: str) -> dict[str, str | None]:
    """The proof grade or failure cause of a phone's one final transfer evidence."""
    finals = [
        describe(e.evidence.observation)
        for e in events
        if e.phone == uri(phone)
        and describe(e.evidence.observation)["type"] in ("transfer_succeeded", "transfer_failed")
    ]
    assert len(finals) == 1, finals
    return {k: v for k, v in finals[0].items() if k in ("proof", "cause")}


RINGING, CONNECTED, ON_HOLD, ENDED = (
    ("call_state", s) for s in ("ringing", "connected", "on_hold", "ended")
)
CONSULT = [("consult", "dialing"), ("consult", "ringing"), ("consult", "answered")]


class TestAmiRecordings:
    def test_blind_answered_is_proved_by_the_customer_reaching_the_target(self) -> None:
        events = ami_evidence("blind_answered")
        assert of(events, "1001") == [
            RINGING,
            CONNECTED,
            CONNECTED,  # Asterisk's Unhold on the REFER; the session sees a duplicate
            ("transfer_requested", "blind"),
            ("transfer_reported", "pbx_blind_transfer"),  # BlindTransfer Success: no proof
            ENDED,  # Asterisk hangs the agent's channel up before the target answers
            ("transfer_succeeded", "pbx_target_answered"),  # DialEnd ANSWER on the customer
        ]
        assert outcome(events, "1001") == {"proof": "target_answered"}
        agent = call_id("blind_answered", "1001")
        assert {e.call_id for e in events if e.phone == uri("1001")} == {agent}
        assert {e.remote for e in events if e.phone == uri("1001")} == {"2000"}

    def test_blind_to_a_busy_target_fails(self) -> None:
        events = ami_evidence("blind_busy")
        assert of(events, "1001")[-3:] == [
            ("transfer_reported", "pbx_blind_transfer"),
            ENDED,
            ("transfer_failed", "pbx_dial_busy"),
        ]
        assert outcome(events, "1001") == {"cause": "target_busy"}

    def test_attended_transfer_is_proved_by_asterisk_bridging_customer_and_target(self) -> None:
        assert of(ami_evidence("attended"), "1001") == [
            RINGING,
            CONNECTED,
            ON_HOLD,
            *CONSULT,
            CONNECTED,
            ("transfer_requested", "attended"),
            ("transfer_succeeded", "pbx_attended_transfer"),
            ENDED,
            ("consult", "ended"),
        ]
        assert outcome(ami_evidence("attended"), "1001") == {"proof": "consult_replaced"}

    def test_the_customer_hanging_up_during_the_consult_is_a_failed_transfer(self) -> None:
        ami = of(ami_evidence("customer_hangup_consult"), "1001")
        assert ami[-3:] == [("transfer_failed", "customer_hung_up"), ENDED, ("consult", "ended")]
        assert outcome(ami_evidence("customer_hangup_consult"), "1001") == {
            "cause": "customer_hung_up"
        }

    def test_an_abandoned_consult_is_no_transfer(self) -> None:
        ami = of(ami_evidence("consult_abandoned"), "1001")
        assert ami[-3:] == [("consult", "ended"), CONNECTED, ENDED]
        assert not [t for t, _ in ami if t.startswith("transfer")]

    def test_a_refer_racing_the_answer_is_refused(self) -> None:
        assert of(ami_evidence("quick_refer"), "1001") == [
            RINGING,
            CONNECTED,
            ("transfer_requested", "blind"),
            ("transfer_failed", "pbx_blind_invalid"),
            ENDED,
        ]

    def test_two_agents_at_once_each_get_their_own_calls_evidence(self) -> None:
        events = ami_evidence("two_agents")
        for agent, customer in (("1001", "2000"), ("1003", "2001")):
            mine = [e for e in events if e.phone == uri(agent)]
            assert {e.call_id for e in mine} == {call_id("two_agents", agent)}
            assert {e.remote for e in mine} == {customer}
            assert of(events, agent)[-1] == ("transfer_succeeded", "pbx_target_answered")

    @pytest.mark.parametrize("case", CASES)
    def test_nothing_is_left_behind(self, case: str) -> None:
        tracker = AmiCallTracker("ami", AmiPhones([(uri(e), None) for e in AGENTS]))
        ami_evidence(case, tracker)
        assert tracker.legs == {} and tracker.handoffs == {} and tracker.peers == {}

    def test_unwatched_phones_produce_nothing(self) -> None:
        tracker = AmiCallTracker("ami", AmiPhones([(uri("1999"), None)]))
        assert ami_evidence("attended", tracker) == []
        assert tracker.stats.events > 100 and tracker.stats.evidence == 0

    def test_without_the_call_id_variable_calls_are_named_by_channel(self) -> None:
        phones = AmiPhones([(uri("1001"), "PJSIP/1001")])
        tracker = AmiCallTracker("ami", phones, call_id_variable=None)
        events = ami_evidence("blind_answered", tracker)
        assert len({e.call_id for e in events}) == 1
        assert str(events[0].call_id).startswith("ami:")


# --- what proves a transfer: the target's side, never Asterisk's report (real recordings) -------

REPORTED_BLIND = ("transfer_reported", "pbx_blind_transfer")
REPORTED_EARLY = ("transfer_reported", "pbx_attended_transfer_early")
ANSWERED = ("transfer_succeeded", "pbx_target_answered")
# case: (agent, the agent's transfer evidence in order, proof grade or failure cause)
PROOF_CASES: dict[str, tuple[str, list[tuple[str, str | None]], dict[str, str]]] = {
    # 1002 rings 3 s, answers: NOTIFY 200 and DialEnd ANSWER when it answers
    "blind_ring_answer": ("1001", [REPORTED_BLIND, ANSWERED], {"proof": "target_answered"}),
    # 1002 rings 3 s, declines 603: DialEnd NOANSWER, but 1002's channel hung up with cause 21
    "blind_ring_reject": (
        "1001",
        [REPORTED_BLIND, ("transfer_failed", "pbx_dial_noanswer")],
        {"cause": "target_rejected"},
    ),
    # 1002 rings 3 s, answers 486: DialEnd BUSY
    "blind_ring_busy": (
        "1001",
        [REPORTED_BLIND, ("transfer_failed", "pbx_dial_busy")],
        {"cause": "target_busy"},
    ),
    # 1102 dials 1002 for 8 s: DialEnd NOANSWER
    "blind_no_answer": (
        "1001",
        [REPORTED_BLIND, ("transfer_failed", "pbx_dial_noanswer")],
        {"cause": "target_no_answer"},
    ),
    # 8100: early media (NOTIFY 200 at once), busy tone, Hangup(17); no Dial at all
    "blind_early_media_busy": (
        "1001",
        [REPORTED_BLIND, ("transfer_failed", "pbx_hangup")],
        {"cause": "target_busy"},
    ),
    # 8102: 2 s of early media (NOTIFY 200 at once), then Dial 1002, which answers 4 s later
    "blind_early_media_answer": ("1001", [REPORTED_BLIND, ANSWERED], {"proof": "target_answered"}),
    # agent 1004 has refer_blind_progress=no: NOTIFY 200 at once; 1002 answers 486
    "noprogress_busy": (
        "1004",
        [REPORTED_BLIND, ("transfer_failed", "pbx_dial_busy")],
        {"cause": "target_busy"},
    ),
    "noprogress_answer": ("1004", [REPORTED_BLIND, ANSWERED], {"proof": "target_answered"}),
    # REFER with Replaces while the consult rings: AttendedTransfer Success (DestType App, no
    # TransferTarget fields) at once; the customer's channel takes over the consult's Dial
    "semi_attended_answer": ("1001", [REPORTED_EARLY, ANSWERED], {"proof": "target_answered"}),
    "semi_attended_reject": (
        "1001",
        [REPORTED_EARLY, ("transfer_failed", "pbx_dial_noanswer")],
        {"cause": "target_rejected"},
    ),
    "semi_attended_no_answer": (
        "1001",
        [REPORTED_EARLY, ("transfer_failed", "pbx_dial_noanswer")],
        {"cause": "target_no_answer"},
    ),
}


def timed_ami_evidence(case: str) -> list[PhoneEvent]:
    """As the bridge would see it live: each event received at its own `Timestamp:`."""
    tracker = AmiCallTracker("ami", AmiPhones([(uri(e), None) for e in AGENTS]))
    out: list[PhoneEvent] = []
    for event in ami_events(case):
        out.extend(tracker.feed(event, float(event.get("Timestamp") or 0.0)))
    assert tracker.handoffs == {} and tracker.legs == {} and tracker.peers == {}
    return out


def seconds(event: PhoneEvent) -> float:
    return datetime.fromisoformat(event.evidence.at).timestamp()


class TestProofFromRecordings:
    @pytest.mark.parametrize("case", PROOF_CASES)
    def test_each_case_gives_the_exact_evidence(self, case: str) -> None:
        agent, transfer, final = PROOF_CASES[case]
        events = timed_ami_evidence(case)
        kind = "semi_attended" if case.startswith("semi") else "blind"
        steps = [(t, d) for t, d in of(events, agent) if t.startswith("transfer")]
        assert steps == [("transfer_requested", kind), *transfer]
        assert outcome(events, agent) == final
        mine = {e.call_id for e in events if e.phone == uri(agent)}
        assert mine == {call_id(case, agent)}

    @pytest.mark.parametrize("case", PROOF_CASES)
    def test_no_proof_before_the_target_answered(self, case: str) -> None:
        agent, _, final = PROOF_CASES[case]
        events = [e for e in timed_ami_evidence(case) if e.phone == uri(agent)]
        calls = sidecar(case).get("target", {}).get("calls", [])
        answered = [c["answered_at"] for c in calls if c.get("answered_at")]
        succeeded = [e for e in events if isinstance(e.evidence.observation, TransferSucceeded)]
        reported = [e for e in events if isinstance(e.evidence.observation, TransferReported)]
        if "cause" in final:
            assert not answered and not succeeded
            return
        [proof] = succeeded
        assert seconds(proof) >= answered[0]
        # What the PBX reported came before anyone answered: it could never be proof.
        assert seconds(reported[0]) < answered[0]

    @pytest.mark.parametrize("case", PROOF_CASES)
    def test_a_session_is_transferred_only_once_the_target_answered(self, case: str) -> None:
        agent, _, final = PROOF_CASES[case]
        mine = call_id(case, agent)
        session = Session(
            "acme",
            "s-1",
            "a-1",
            Customer("2000"),
            "2026-01-01T00:00:00.000Z",
            call=Call(state=CallState.CONNECTED, sip_call_id=mine),
        )
        for event in timed_ami_evidence(case):
            if event.call_id != mine:
                continue
            observation = event.evidence.observation
            session = apply_evidence(session, event.evidence, now=event.evidence.at).session
            if isinstance(observation, TransferReported):
                assert session.transfer.state is not TransferState.TRANSFERRED
                assert session.transfer.phone.proof is ProofGrade.PBX_REPORTED
        phone = session.transfer.phone
        if "proof" in final:
            assert session.transfer.state is TransferState.TRANSFERRED
            assert phone.proof.value == final["proof"] and phone.handoff_at is not None
        else:
            assert session.transfer.state is TransferState.FAILED
            assert phone.failure is not None and phone.failure.value == final["cause"]


class TestHandoffs:
    """Hand-built events shaped like the recordings, for what they do not cover."""

    def tracker(self) -> AmiCallTracker:
        return AmiCallTracker("ami", AmiPhones([(uri("1001"), None)]), call_id_variable=None)

    def event(self, name: str, **fields: str) -> AmiEvent:
        return AmiEvent(name, (("Event", name), *fields.items()))

    def blind(self, tracker: AmiCallTracker, received_at: float = 10.0) -> list[PhoneEvent]:
        out: list[PhoneEvent] = []
        for name, fields in (
            ("Newchannel", {"Channel": "PJSIP/2000-1", "Uniqueid": "1.1", "ChannelState": "4"}),
            ("Newchannel", {"Channel": "PJSIP/1001-2", "Uniqueid": "1.2", "ChannelState": "0"}),
            ("DialBegin", {"Uniqueid": "1.1", "DestUniqueid": "1.2"}),
            ("Newstate", {"Uniqueid": "1.2", "ChannelStateDesc": "Up"}),
            (
                "BlindTransfer",
                {
                    "Result": "Success",
                    "TransfererUniqueid": "1.2",
                    "TransfereeUniqueid": "1.1",
                    "Extension": "1002",
                    "Timestamp": "1796291371.0",
                },
            ),
            ("Hangup", {"Uniqueid": "1.2", "Cause": "16"}),
        ):
            out.extend(tracker.feed(self.event(name, **fields), received_at))
        return out

    def test_the_customer_hanging_up_while_the_target_rings(self) -> None:
        tracker = self.tracker()
        self.blind(tracker)
        tracker.feed(self.event("DialBegin", Uniqueid="1.1", DestUniqueid="1.3"), 11.0)
        out = tracker.feed(self.event("DialEnd", Uniqueid="1.1", DialStatus="CANCEL"), 12.0)
        assert [describe(e.evidence.observation).get("cause") for e in out] == ["customer_hung_up"]

    @pytest.mark.parametrize(
        ("cause", "expected"),
        [
            ("17", "target_busy"),
            ("21", "target_rejected"),
            ("19", "target_no_answer"),
            ("38", "target_unavailable"),
            ("16", "customer_hung_up"),
            ("", "customer_hung_up"),
        ],
    )
    def test_the_customer_channel_gone_before_any_dial_end(self, cause: str, expected: str) -> None:
        tracker = self.tracker()
        self.blind(tracker)
        out = tracker.feed(self.event("Hangup", Uniqueid="1.1", Cause=cause), 15.0)
        [failed] = [describe(e.evidence.observation) for e in out if e.phone == uri("1001")]
        assert failed["type"] == "transfer_failed" and failed["cause"] == expected

    def test_a_dialplan_answer_before_the_dial_is_not_proof(self) -> None:
        """Early media, then Dial: only the Dial's ANSWER counts, not the target ringing."""
        tracker = self.tracker()
        self.blind(tracker)
        tracker.feed(self.event("Newstate", Uniqueid="1.1", ChannelStateDesc="Up"), 11.0)
        tracker.feed(self.event("DialBegin", Uniqueid="1.1", DestUniqueid="1.3"), 12.0)
        assert (
            tracker.feed(self.event("Newstate", Uniqueid="1.3", ChannelStateDesc="Up"), 13.0) == []
        )
        out = tracker.feed(self.event("DialEnd", Uniqueid="1.1", DialStatus="ANSWER"), 13.0)
        assert [describe(e.evidence.observation).get("proof") for e in out] == ["target_answered"]

    def test_a_waiting_transfer_expires_on_the_bridges_clock_not_asterisks(self) -> None:
        tracker = self.tracker()
        self.blind(tracker, received_at=10.0)
        # Asterisk's clock jumps a day ahead: nothing expires on that.
        later = self.event(
            "Newchannel", Channel="PJSIP/9-1", Uniqueid="9.9", Timestamp="1796377771"
        )
        tracker.feed(later, 11.0)
        assert list(tracker.handoffs) == ["1.1"]
        tracker.feed(later, 10.0 + HANDOFF_SECONDS + 1)
        assert tracker.handoffs == {}

    def test_a_failed_attended_transfer_stays_a_failure(self) -> None:
        tracker = self.tracker()
        for name, fields in (
            ("Newchannel", {"Channel": "PJSIP/1001-1", "Uniqueid": "1.1", "ChannelState": "0"}),
            ("Newchannel", {"Channel": "PJSIP/1001-2", "Uniqueid": "1.2", "ChannelState": "4"}),
            ("DialBegin", {"Uniqueid": "1.2", "DestUniqueid": "1.3"}),
            ("DialEnd", {"Uniqueid": "1.2", "DestUniqueid": "1.3", "DialStatus": "ANSWER"}),
        ):
            tracker.feed(self.event(name, **fields), 1.0)
        transfer = self.event(
            "AttendedTransfer",
            Result="Not Permitted",
            OrigTransfererUniqueid="1.1",
            SecondTransfererUniqueid="1.2",
        )
        out = [describe(e.evidence.observation) for e in tracker.feed(transfer, 2.0)]
        assert [(d["type"], d.get("kind"), d.get("cause")) for d in out] == [
            ("transfer_requested", "attended", None),
            ("transfer_failed", None, "transfer_failed"),
        ]
        assert tracker.handoffs == {}

    def semi(self, tracker: AmiCallTracker, consult_state: str) -> list[PhoneEvent]:
        """The agent's consult leg is not known (e.g. a Local channel): the event's snapshot."""
        for name, fields in (
            ("Newchannel", {"Channel": "PJSIP/2000-1", "Uniqueid": "1.1", "ChannelState": "4"}),
            ("Newchannel", {"Channel": "PJSIP/1001-2", "Uniqueid": "1.2", "ChannelState": "0"}),
            ("DialBegin", {"Uniqueid": "1.1", "DestUniqueid": "1.2"}),
        ):
            tracker.feed(self.event(name, **fields), 1.0)
        transfer = self.event(
            "AttendedTransfer",
            Result="Success",
            OrigTransfererUniqueid="1.2",
            SecondTransfererUniqueid="9.9",
            SecondTransfererChannelStateDesc=consult_state,
            TransfereeUniqueid="1.1",
            TransferTargetUniqueid="1.4",
            TransferTargetCallerIDNum="1002",
        )
        return tracker.feed(transfer, 2.0)

    def test_an_answered_consult_seen_only_in_the_event_is_consult_replaced(self) -> None:
        out = [describe(e.evidence.observation) for e in self.semi(self.tracker(), "Up")]
        assert [(d["type"], d.get("kind") or d.get("proof")) for d in out] == [
            ("transfer_requested", "attended"),
            ("transfer_succeeded", "consult_replaced"),
        ]

    def test_a_semi_attended_target_that_declines(self) -> None:
        tracker = self.tracker()
        out = [describe(e.evidence.observation) for e in self.semi(tracker, "Ring")]
        assert [(d["type"], d.get("kind") or d.get("reason")) for d in out] == [
            ("transfer_requested", "semi_attended"),
            ("transfer_reported", "pbx_attended_transfer_early"),
        ]
        assert tracker.feed(self.event("HangupRequest", Uniqueid="1.4", Cause="21"), 3.0) == []
        out = tracker.feed(self.event("Hangup", Uniqueid="1.4", Cause="21"), 3.0)
        assert [describe(e.evidence.observation).get("cause") for e in out] == ["target_rejected"]
        assert tracker.handoffs == {}

    def test_the_customer_hanging_up_while_a_semi_attended_target_rings(self) -> None:
        tracker = self.tracker()
        self.semi(tracker, "Ring")
        out = tracker.feed(self.event("Hangup", Uniqueid="1.1", Cause="16"), 3.0)
        failed = [describe(e.evidence.observation) for e in out if e.phone == uri("1001")]
        assert [(d["type"], d.get("cause")) for d in failed] == [
            ("transfer_failed", "customer_hung_up")
        ]
        # the target's channel going away later changes nothing
        assert tracker.feed(self.event("Hangup", Uniqueid="1.4", Cause="16"), 3.1) == []


class TestResync:
    """After a (re)connection: `CoreShowChannels` rebuilds the calls already up."""

    def rows(self, *channels: tuple[str, str, str, str]) -> list[AmiEvent]:
        out = []
        for channel, uniqueid, application, call in channels:
            fields = (
                ("Event", "CoreShowChannel"),
                ("Channel", channel),
                ("ChannelStateDesc", "Up"),
                ("ConnectedLineNum", "2000" if application == "AppDial" else "1002"),
                ("Uniqueid", uniqueid),
                ("ChanVariable", f"SIPCALLID={call}"),
                ("Application", application),
            )
            out.append(AmiEvent("CoreShowChannel", fields))
        out.append(AmiEvent("CoreShowChannelsComplete", (("Event", "CoreShowChannelsComplete"),)))
        return out

    def test_a_consult_under_way_is_understood_and_held_events_replayed(self) -> None:
        tracker = AmiCallTracker("ami", AmiPhones([(uri("1001"), None)]))
        tracker.reset(resync=True)
        # The transfer happens while the channel list is on its way.
        transfer = AmiEvent(
            "AttendedTransfer",
            (
                ("Event", "AttendedTransfer"),
                ("Result", "Success"),
                ("OrigTransfererUniqueid", "1795613972.9"),
                ("SecondTransfererUniqueid", "1795613972.10"),
                ("TransferTargetCallerIDNum", "1002"),
            ),
        )
        assert tracker.feed(transfer, 5.0) == []  # held
        out: list[PhoneEvent] = []
        # Listed newest first, and ".10" is newer than ".9" (not a decimal fraction).
        for row in self.rows(
            ("PJSIP/1001-0000000b", "1795613972.10", "Dial", "consult-call"),
            ("PJSIP/1001-0000000a", "1795613972.9", "AppDial", "customer-call"),
        ):
            out.extend(tracker.feed(row, 5.0))
        assert [(e.call_id, describe(e.evidence.observation)["type"]) for e in out] == [
            ("customer-call", "transfer_requested"),
            ("customer-call", "transfer_succeeded"),
        ]
        assert tracker.legs["1795613972.10"].role == "consult"

    def test_a_ringing_consult_listed_is_settled_by_its_target_after_a_semi_attended_transfer(
        self,
    ) -> None:
        """Taken over mid-consult (another instance held the AMI): the list shows the agent
        dialling 1102 and 1102's channel ringing, tied by `Linkedid`. The agent hands the
        customer over while it rings; when 1102 gives up, the transfer failed: no answer."""
        tracker = AmiCallTracker("ami", AmiPhones([(uri("1001"), None)]))
        tracker.reset(resync=True)
        listed = [
            # newest first; the target is not a watched phone
            ("PJSIP/1102-0000000c", "1795613972.12", "AppDial", "Ringing", "1795613972.11"),
            ("PJSIP/1001-0000000b", "1795613972.11", "Dial", "Ringing", "1795613972.11"),
            ("PJSIP/1001-0000000a", "1795613972.10", "AppDial", "Up", "1795613972.9"),
            ("PJSIP/trunk-00000009", "1795613972.9", "Dial", "Up", "1795613972.9"),
        ]
        for channel, uniqueid, application, state, linkedid in listed:
            fields = (
                ("Event", "CoreShowChannel"),
                ("Channel", channel),
                ("ChannelStateDesc", state),
                ("ConnectedLineNum", "2000"),
                ("Uniqueid", uniqueid),
                ("Linkedid", linkedid),
                ("Application", application),
            )
            assert tracker.feed(AmiEvent("CoreShowChannel", fields), 5.0) == []
        done = AmiEvent("CoreShowChannelsComplete", (("Event", "CoreShowChannelsComplete"),))
        assert tracker.feed(done, 5.0) == []
        assert tracker.legs["1795613972.11"].peer == "1795613972.12"
        transfer = AmiEvent(
            "AttendedTransfer",
            (
                ("Event", "AttendedTransfer"),
                ("Result", "Success"),
                ("OrigTransfererUniqueid", "1795613972.10"),
                ("SecondTransfererUniqueid", "1795613972.11"),
                ("SecondTransfererChannelStateDesc", "Ringing"),
                ("TransferTargetCallerIDNum", "1102"),
            ),
        )
        reported = [describe(e.evidence.observation) for e in tracker.feed(transfer, 6.0)]
        assert [o["type"] for o in reported] == ["transfer_requested", "transfer_reported"]
        gone = AmiEvent(
            "Hangup", (("Event", "Hangup"), ("Uniqueid", "1795613972.12"), ("Cause", "19"))
        )
        failed = [describe(e.evidence.observation) for e in tracker.feed(gone, 14.0)]
        assert failed and failed[-1]["type"] == "transfer_failed", failed
        assert failed[-1]["cause"] == "target_no_answer", failed

    def test_a_list_that_never_comes_releases_what_was_held(self) -> None:
        tracker = AmiCallTracker("ami", AmiPhones([(uri("1001"), None)]))
        tracker.reset(resync=True)
        for event in ami_events("quick_refer"):
            assert tracker.feed(event, 1.0) == []
        released = tracker.resync_failed()
        assert of(released, "1001") == of(ami_evidence("quick_refer"), "1001")


class TestEndpoints:
    def test_channel_names(self) -> None:
        assert channel_endpoint("PJSIP/1001-0000000a") == "PJSIP/1001"
        assert channel_endpoint("PJSIP/agent-7-00000001") == "PJSIP/agent-7"
        assert channel_endpoint("Local/1002@phones-00000001;1") is None
        assert channel_endpoint("garbage") is None
        assert default_endpoint("<sip:1001@PBX.example:5060>") == "PJSIP/1001"

    def test_an_explicit_ami_endpoint_wins(self) -> None:
        phones = AmiPhones([(uri("1001"), "pjsip/desk-ana")])
        assert phones.phone_of("PJSIP/desk-ana-00000003") == uri("1001")
        assert phones.phone_of("PJSIP/1001-00000003") is None


# --- both sources about the same calls: one outcome ---------------------------------------------


def one_session(case: str, ami_first: bool) -> tuple[Session, list[AuditEntry]]:
    """A session bound to agent 1001's call, fed by both sources: one after the other.

    The AMI recordings carry no event times, so the AMI evidence is stamped as a source that
    reports the call just before (or just after) the capture does; what matters is that either
    order gives one outcome.
    """
    mine = call_id(case, "1001")
    hep = [e for e in hep_evidence(case) if e.call_id == mine]
    at = hep[0].evidence.at if ami_first else hep[-1].evidence.at
    stamp = datetime.fromisoformat(at).timestamp()
    tracker = AmiCallTracker("ami", AmiPhones([(uri(e), None) for e in AGENTS]))
    ami = [e for e in ami_evidence(case, tracker, stamp) if e.call_id == mine]
    session = Session(
        "acme",
        "s-1",
        "a-1",
        Customer("2000"),
        "2026-01-01T00:00:00.000Z",
        call=Call(state=CallState.CONNECTED, sip_call_id=mine),
    )
    trail: list[AuditEntry] = []
    for event in (*ami, *hep) if ami_first else (*hep, *ami):
        outcome = apply_evidence(session, event.evidence, now=event.evidence.at)
        session = outcome.session
        trail.extend(outcome.audit)
    return session, trail


@pytest.mark.parametrize(
    ("case", "state"),
    [
        ("blind_answered", TransferState.TRANSFERRED),
        ("blind_busy", TransferState.FAILED),
        ("attended", TransferState.TRANSFERRED),
        ("customer_hangup_consult", TransferState.FAILED),
        ("quick_refer", TransferState.FAILED),
    ],
)
@pytest.mark.parametrize("ami_first", [True, False], ids=["ami_first", "hep_first"])
def test_hep_and_ami_agree_on_one_outcome(case: str, state: TransferState, ami_first: bool) -> None:
    session, trail = one_session(case, ami_first)
    assert session.transfer.state is state
    assert not [e for e in trail if e.event == "sources_disagree"], trail
    finals = [e for e in trail if e.event in ("transfer_succeeded", "transfer_failed")]
    # both sources reported the outcome; the first counted, the other is audit only
    assert {e.detail["source"] for e in finals} == {"ami", "hep"}
    assert [e.detail.get("ignored") is None for e in finals].count(True) == 1
    assert session.transfer.phone.proved_by == ("ami" if ami_first else "hep")


# --- whatever the PBX sends, the tracker never raises ------------------------------------------

HANDLED = (
    "Newchannel",
    "VarSet",
    "Newstate",
    "NewConnectedLine",
    "DialBegin",
    "DialState",
    "DialEnd",
    "Hold",
    "Unhold",
    "BlindTransfer",
    "AttendedTransfer",
    "Hangup",
    "HangupRequest",
    "CoreShowChannel",
    "CoreShowChannelsComplete",
)
KEYS = (
    "Channel",
    "Uniqueid",
    "DestUniqueid",
    "DestChannel",
    "ChannelState",
    "ChannelStateDesc",
    "Exten",
    "ConnectedLineNum",
    "CallerIDNum",
    "DialStatus",
    "Result",
    "TransfererUniqueid",
    "TransfereeUniqueid",
    "OrigTransfererUniqueid",
    "SecondTransfererUniqueid",
    "Extension",
    "Variable",
    "Value",
    "ChanVariable",
    "Timestamp",
    "Application",
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(HANDLED),
            st.lists(
                st.tuples(
                    st.sampled_from(KEYS),
                    st.one_of(
                        st.sampled_from(
                            ["PJSIP/1001-00000001", "PJSIP/1001-00000002", "1.1", "1.2", "4"]
                        ),
                        st.sampled_from(["Up", "Ringing", "ANSWER", "BUSY", "Success", "Dial"]),
                        st.sampled_from(["SIPCALLID=x", "SIPCALLID=", "nan", "inf", "1e400"]),
                        st.text(max_size=12),
                    ),
                ),
                max_size=8,
            ),
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_any_event_sequence_raises_nothing_and_names_only_the_watched_phone(
    events: list[tuple[str, list[tuple[str, str]]]], resync: bool
) -> None:
    tracker = AmiCallTracker("ami", AmiPhones([(uri("1001"), None)]))
    tracker.reset(resync=resync)
    for name, fields in events:
        out = tracker.feed(AmiEvent(name, (("Event", name), *fields)), 1.0)
        assert all(e.phone == uri("1001") for e in out)
    tracker.resync_failed()


def test_call_waiting_a_second_incoming_call_is_reported_too() -> None:
    """The agent's phone takes a second call from the customer while the first is up (call
    waiting) and holds the first: both calls are reported, each by its own Call-ID, so the
    binding can list both (and the second one's transfer reaches its session)."""

    def event(name: str, uniqueid: str, **fields: str) -> bytes:
        lines = [f"Event: {name}", f"Uniqueid: {uniqueid}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def leg(uniqueid: str, call_id: str, n: str) -> list[bytes]:
        return [
            event(
                "Newchannel",
                uniqueid,
                Channel=f"PJSIP/1001-0000000{n}",
                ChannelState="0",
                ConnectedLineNum="2000",
            ),
            event("VarSet", uniqueid, Variable="SIPCALLID", Value=call_id),
            event("Newstate", uniqueid, ChannelStateDesc="Ringing"),
        ]

    raw = [
        b"Asterisk Call Manager/9.0.0\r\n",
        *leg("u1", "c-a", "1"),
        event("Newstate", "u1", ChannelStateDesc="Up"),
        *leg("u2", "c-b", "2"),
        event("Hold", "u1", Channel="PJSIP/1001-00000001"),
        event("Newstate", "u2", ChannelStateDesc="Up"),
    ]
    parser = AmiParser()
    parser.receive_data(b"".join(raw))
    tracker = AmiCallTracker("ami", AmiPhones([(uri("1001"), None)]))
    out: list[PhoneEvent] = []
    while (item := parser.next_event()) is not NEED_DATA:
        if isinstance(item, AmiEvent):
            out.extend(tracker.feed(item, 1.0))
    seen = [(e.call_id, e.remote, describe(e.evidence.observation).get("state")) for e in out]
    assert seen == [
        ("c-a", "2000", "ringing"),
        ("c-a", "2000", "connected"),
        ("c-b", "2000", "ringing"),
        ("c-a", "2000", "on_hold"),
        ("c-b", "2000", "connected"),
    ]
