"""How common desk phones write Contact, hold, REFER and Refer-To with Replaces
(docs/deskphones.md, "SIP shapes"), each shape as the agent's phone behind a back-to-back PBX,
through the HEP tracker into a session: the verdict must not depend on the vendor's spelling.
"""

from __future__ import annotations

import pytest

from bridge.evidence import CallStateChanged, ConsultChanged, TransferRequested
from bridge.model import (
    Call,
    CallState,
    ConsultState,
    Customer,
    ProofGrade,
    Session,
    TransferKind,
    TransferState,
)
from bridge.session.phone import apply_evidence
from tests.bridge.hep.b2bua import Wire

# Contact as each vendor's phone writes it (docs/deskphones.md says where each shape is from).
CONTACTS = {
    "yealink": "<sip:1001@10.0.0.11:5062>",
    "poly": "<sip:1001@10.0.0.11:5062;transport=udp>",
    "snom": '<sip:1001@10.0.0.11:5062;line=k3tb1vx>;reg-id=1;+sip.instance="<urn:uuid:0f1e-2d3c>"',
    "grandstream": "<sip:1001@10.0.0.11:5062;transport=udp>",
    # A Unified CM line: a device UUID as user, the device name in a feature parameter.
    "cisco": (
        "<sip:4a1c0a34-1b2c-4d5e-8f90-0123456789ab@10.0.0.11:5062;transport=udp>"
        ';+sip.instance="<urn:uuid:00000000-0000-0000-0000-00aabbccddee>"'
        ';+u.sip!devicename.ccm.cisco.com="SEP00AABBCCDDEE"'
    ),
}
SDP = "v=0\no=- 2 3 IN IP4 10.0.0.11\ns=-\nc=IN IP4 {addr}\nt=0 0\nm=audio 4000 RTP/AVP 0\n{attr}"
HOLDS = {
    "sendonly": SDP.format(addr="10.0.0.11", attr="a=sendonly\n"),  # RFC 3264, the default
    "inactive": SDP.format(addr="10.0.0.11", attr="a=inactive\n"),  # Yealink hold_use_inactive
    "rfc2543": SDP.format(addr="0.0.0.0", attr=""),  # "RFC 2543 hold": c=0.0.0.0
}
ANSWER = {
    "sendonly": SDP.format(addr="10.0.0.2", attr="a=recvonly\n"),
    "inactive": SDP.format(addr="10.0.0.2", attr="a=inactive\n"),
    "rfc2543": SDP.format(addr="10.0.0.2", attr="a=sendrecv\n"),
}
REPLACES = "consult%4010.0.0.11%3Bto-tag%3Dt-consult%3Bfrom-tag%3Df-consult"
REFER_TO = {
    # blind: the target's AOR at the PBX, or (Obihai/Poly X_ReferAOR off) its Contact
    "blind_aor": "<sip:1002@pbx.example>",
    "blind_contact": "<sip:1002@10.0.0.12:5060>",
    # attended: the target with ?Replaces=, or (Yealink T4x firmware) only the PBX's address
    "attended": f"<sip:1002@pbx.example?Replaces={REPLACES}>",
    "attended_no_user": f"<sip:10.0.0.2:5060?Replaces={REPLACES}>",
}


def session_after(wire: Wire) -> Session:
    session = Session(
        "acme", "s-1", "a-1", Customer("2000"), "2026-01-01T00:00:00.000Z", call=Call()
    )
    for event in wire.events:
        if event.phone == "sip:1001@pbx.example":
            session = apply_evidence(session, event.evidence, now=event.evidence.at).session
    return session


def hold(wire: Wire, shape: str, cseq: int = 2) -> None:
    wire.from_phone("INVITE", f"{cseq} INVITE", body=HOLDS[shape])
    wire.to_phone("SIP/2.0 200 OK", f"{cseq} INVITE", body=ANSWER[shape])


def refer_and_notify(wire: Wire, refer_to: str, frags: tuple[str, ...]) -> None:
    wire.from_phone("REFER", "3 REFER", f"Refer-To: {refer_to}", "Referred-By: <sip:1001@pbx>")
    wire.to_phone("SIP/2.0 202 Accepted", "3 REFER")
    for n, frag in enumerate(frags):
        state = "terminated;reason=noresource" if frag.startswith("SIP/2.0 2") else "active"
        wire.to_phone(
            "NOTIFY sip:10.0.0.11:5062 SIP/2.0",
            f"{20 + n} NOTIFY",
            "Event: refer",
            f"Subscription-State: {state}",
            body=frag,
        )


@pytest.mark.parametrize("vendor", sorted(CONTACTS))
@pytest.mark.parametrize("shape", sorted(HOLDS))
def test_each_vendors_call_and_hold_shape_is_seen(vendor: str, shape: str) -> None:
    wire = Wire(CONTACTS[vendor])
    wire.customer_calls_agent()
    hold(wire, shape)
    wire.from_phone("INVITE", "4 INVITE", body=SDP.format(addr="10.0.0.11", attr="a=sendrecv\n"))
    wire.to_phone("SIP/2.0 200 OK", "4 INVITE", body=ANSWER["rfc2543"])
    states = [obs.state for _, obs in wire.seen() if isinstance(obs, CallStateChanged)]
    assert states == [
        CallState.RINGING,
        CallState.CONNECTED,
        CallState.ON_HOLD,
        CallState.CONNECTED,
    ]


@pytest.mark.parametrize("vendor", sorted(CONTACTS))
@pytest.mark.parametrize("refer_to", ["blind_aor", "blind_contact"])
def test_each_vendors_blind_refer_is_a_blind_transfer_to_1002(vendor: str, refer_to: str) -> None:
    wire = Wire(CONTACTS[vendor])
    wire.customer_calls_agent()
    refer_and_notify(wire, REFER_TO[refer_to], ("SIP/2.0 100 Trying", "SIP/2.0 200 OK"))
    requested = [obs for _, obs in wire.seen() if isinstance(obs, TransferRequested)]
    assert requested == [TransferRequested(TransferKind.BLIND, "1002")]
    t = session_after(wire).transfer
    # The PBX's NOTIFY 200 alone is its report, not proof.
    assert (t.state, t.phone.proof, t.phone.last_sipfrag) == (
        TransferState.NONE,
        ProofGrade.PBX_REPORTED,
        "SIP/2.0 200 OK",
    )


@pytest.mark.parametrize("vendor", sorted(CONTACTS))
@pytest.mark.parametrize("refer_to", ["attended", "attended_no_user"])
@pytest.mark.parametrize("shape", sorted(HOLDS))
def test_each_vendors_attended_transfer_is_proved_by_the_answered_consult(
    vendor: str, refer_to: str, shape: str
) -> None:
    wire = Wire(CONTACTS[vendor])
    wire.customer_calls_agent()
    hold(wire, shape)
    wire.agent_consults_target()
    refer_and_notify(wire, REFER_TO[refer_to], ("SIP/2.0 100 Trying", "SIP/2.0 200 OK"))
    seen = [obs for _, obs in wire.seen()]
    assert ConsultChanged(ConsultState.ANSWERED, "1002") in seen
    assert TransferRequested(TransferKind.ATTENDED, "1002") in seen
    t = session_after(wire).transfer
    assert (t.state, t.phone.proof, t.kind, t.target) == (
        TransferState.TRANSFERRED,
        ProofGrade.CONSULT_REPLACED,
        TransferKind.ATTENDED,
        "1002",
    )
