"""Phone or PBX, decided from addresses and dialog direction (bridge/hep/sides.py), never from
how a Contact is spelled: hand-built back-to-back flows whose agent phone writes its Contact
as linphone does (no user part), as baresip does (``1001-0x55...``) or as pjsua2 does.

Addresses: the PBX 10.0.0.2:5060, the agent's phone 10.0.0.11:5062, the customer's trunk
10.0.0.50:5060, the target's phone 10.0.0.12:5060. Each message is fed with the HEP header's
source and destination, or (``hep=False``) with none, as a capture agent that leaves them out.
"""

from __future__ import annotations

import pytest

from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    TransferFailed,
)
from bridge.hep.dialogs import DialogTracker
from bridge.hep.directory import PhoneDirectory
from bridge.hep.legs import LegRole
from bridge.hep.sides import OtherSides, hop, origin_of, request_target
from bridge.model import CallState, ConsultState, FailureCause
from bridge.sip import parse_message
from tests.bridge.hep.b2bua import (
    AGENT,
    CONTACTS,
    PBX,
    PHONE,
    T0,
    TARGET,
    TRUNK,
    Wire,
)

RINGING = CallStateChanged(CallState.RINGING)
CONNECTED = CallStateChanged(CallState.CONNECTED)
ENDED = CallStateChanged(CallState.ENDED)


@pytest.mark.parametrize("hep", [True, False], ids=["hep-addresses", "sip-only"])
@pytest.mark.parametrize("stack", sorted(CONTACTS))
def test_the_phones_leg_of_a_customer_call_is_the_one_the_pbx_sent_to_it(
    stack: str, hep: bool
) -> None:
    wire = Wire(CONTACTS[stack], hep=hep)
    wire.customer_calls_agent()
    assert wire.seen() == [("agent-leg", RINGING), ("agent-leg", CONNECTED)]
    (leg,) = wire.tracker.dialogs.legs("agent-leg")
    assert wire.tracker.dialogs.legs("cust-leg") == ()  # the customer's dialog with the PBX
    assert (leg.outgoing, leg.remote, leg.verified) == (False, "2000", True)


@pytest.mark.parametrize("hep", [True, False], ids=["hep-addresses", "sip-only"])
@pytest.mark.parametrize("stack", sorted(CONTACTS))
def test_the_phones_consult_is_seen_and_the_pbxs_leg_toward_the_target_is_not_a_consult(
    stack: str, hep: bool
) -> None:
    wire = Wire(CONTACTS[stack], hep=hep)
    wire.customer_calls_agent()
    wire.agent_consults_target()
    consults = [obs for _, obs in wire.seen() if isinstance(obs, ConsultChanged)]
    assert consults == [
        ConsultChanged(ConsultState.DIALING, "1002"),
        ConsultChanged(ConsultState.RINGING, "1002"),
        ConsultChanged(ConsultState.ANSWERED, "1002"),
    ]
    (consult,) = wire.tracker.dialogs.legs("consult")
    assert consult.role is LegRole.CONSULT
    # The PBX's leg: 1002's incoming call, and a leg toward the consult's target for 1001.
    roles = {(leg.phone, leg.role) for leg in wire.tracker.dialogs.legs("pbx-to-target")}
    assert roles == {(TARGET, LegRole.CALL), (AGENT, LegRole.CONSULT_TARGET)}
    assert wire.seen(TARGET) == [("pbx-to-target", RINGING), ("pbx-to-target", CONNECTED)]


@pytest.mark.parametrize("stack", sorted(CONTACTS))
def test_customer_hanging_up_during_the_consult_fails_the_transfer(stack: str) -> None:
    """The issue's linphonec case: the consult INVITE was dropped, so this gave no verdict."""
    wire = Wire(CONTACTS[stack])
    wire.customer_calls_agent()
    wire.agent_consults_target()
    cust, agent = '"Customer" <sip:2000@pbx.example>', "<sip:1001@pbx.example>"
    wire.bye("agent-leg", cust, agent, PBX, PHONE, caller=True)
    failed = [obs for _, obs in wire.seen() if isinstance(obs, TransferFailed)]
    assert failed == [TransferFailed("customer_hung_up", None, FailureCause.CUSTOMER_HUNG_UP)]


@pytest.mark.parametrize("stack", sorted(CONTACTS))
def test_the_pbx_answering_the_customer_before_it_rings_the_phone_is_not_the_phone(
    stack: str,
) -> None:
    """An announcement (183 early media) to the customer before the PBX dials the agent: that
    leg looks like the phone's until the PBX's INVITE to the phone shows who relays."""
    wire = Wire(CONTACTS[stack])
    cust, agent = '"Customer" <sip:2000@pbx.example>', "<sip:1001@pbx.example>"
    b1 = wire.invite("cust-leg", "sip:1001@10.0.0.2:5060", cust, agent, TRUNK, PBX)
    wire.answer("183 Session Progress", "cust-leg", cust, agent, b1, TRUNK, PBX, TRUNK)
    b2 = wire.invite("agent-leg", "sip:1001@10.0.0.11:5062", cust, agent, PBX, PHONE)
    assert wire.tracker.dialogs.legs("cust-leg") == ()
    wire.answer("180 Ringing", "agent-leg", cust, agent, b2, PBX, PHONE, PBX)
    wire.answer("180 Ringing", "cust-leg", cust, agent, b1, TRUNK, PBX, TRUNK)
    wire.answer("200 OK", "agent-leg", cust, agent, b2, PBX, PHONE, PBX)
    assert [obs for call, obs in wire.seen() if call == "agent-leg"] == [RINGING, CONNECTED]
    assert wire.tracker.dialogs.legs("cust-leg") == ()


@pytest.mark.parametrize("stack", sorted(CONTACTS))
def test_the_agents_own_call_out_and_the_pbxs_leg_for_it(stack: str) -> None:
    """The agent dials a customer: the PBX's INVITE onward carries the agent as caller too,
    and is neither the phone's call nor a consult."""
    wire = Wire(CONTACTS[stack])
    agent, cust = "<sip:1001@pbx.example>", "<sip:2000@pbx.example>"
    wire.call("out", "sip:2000@pbx.example", agent, cust, PHONE, PBX, "180 Ringing", "200 OK")
    wire.call("pbx-out", "sip:2000@10.0.0.50", agent, cust, PBX, TRUNK, "180 Ringing", "200 OK")
    assert wire.seen() == [("out", CONNECTED)]
    assert wire.tracker.dialogs.legs("pbx-out") == ()


def test_the_pbx_answering_for_the_extension_is_not_the_phone() -> None:
    """A PBX already known to relay calls for 1001 answers an INVITE addressed to 1001 with no
    sign of its own (no user in its Contact either): by its address, that is not the phone."""
    wire = Wire(CONTACTS["linphone"])
    wire.customer_calls_agent()  # the PBX at 10.0.0.2 delivered a call to 1001
    cust, agent = '"Customer" <sip:2000@pbx.example>', "<sip:1001@pbx.example>"
    before = len(wire.events)
    b1 = wire.invite("ivr-leg", "sip:1001@10.0.0.2:5060", cust, agent, TRUNK, PBX)
    wire.answer("200 OK", "ivr-leg", cust, agent, b1, TRUNK, PBX, TRUNK)
    assert wire.events[before:] == [] and wire.tracker.dialogs.legs("ivr-leg") == ()


def test_a_proxys_second_capture_keeps_the_phone_as_the_creator() -> None:
    """Kamailio captures the phone's INVITE as received and as forwarded (its Via on top):
    who created it is the bottom Via, the phone."""
    plain = parse_message(
        b"INVITE sip:2000@pbx.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.40:5090;branch=z9hG4bKproxy\r\n"
        b"Via: SIP/2.0/UDP [2001:DB8::11]:5062;rport;branch=z9hG4bKphone\r\n"
        b"From: <sip:1001@pbx.example>;tag=a\r\nTo: <sip:2000@pbx.example>\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert origin_of(plain) == ("2001:db8::11", 5062)
    assert request_target(plain) == ("pbx.example", 5060)
    assert hop("[::1]", None) == hop("::1", 5060) == ("::1", 5060)
    assert hop("pbx", 5061, True) == ("pbx", 5061) and hop("", 5060) is None
    assert hop("10.0.0.1", 0) is None  # a HEP packet without address chunks


def test_without_any_address_a_message_counts_as_the_phones() -> None:
    """With nothing known about an address yet, an INVITE from the agent is the agent's."""
    tracker = DialogTracker(PhoneDirectory([AGENT]))
    msg = parse_message(
        b"INVITE sip:2000@pbx.example SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.11:5062;branch=z9hG4bK1\r\n"
        b"From: <sip:1001@pbx.example>;tag=a\r\nTo: <sip:2000@pbx.example>\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContact: <sip:10.0.0.11:5062>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert len(tracker.feed(msg, T0)) == 1


def test_the_memory_of_other_sides_is_bounded_per_phone() -> None:
    sides = OtherSides(limit=3)
    for port in range(5060, 5070):
        sides.note(AGENT, ("10.0.0.2", port))
    assert len(sides) == 3
    assert sides.exclude(AGENT, ("10.0.0.2", 5069))
    assert not sides.exclude(AGENT, ("10.0.0.2", 5060))
    assert not sides.exclude(TARGET, ("10.0.0.2", 5069))
    assert not sides.exclude(AGENT, None)
    sides.forget({TARGET})
    assert len(sides) == 0
