"""A back-to-back PBX between a customer, an agent phone and a target, message by message, for
the HEP tracker: hand-built flows whose agent phone writes its Contact (and hold, and REFER) the
way a given SIP stack or desk phone does.

Addresses: the PBX 10.0.0.2:5060, the agent's phone 10.0.0.11:5062, the customer's trunk
10.0.0.50:5060, the target's phone 10.0.0.12:5060. Each message is fed with the HEP header's
source and destination, or (``hep=False``) with none, as a capture agent that leaves them out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bridge.evidence import Observation, PhoneEvent
from bridge.hep.directory import PhoneDirectory
from bridge.hep.sides import Hop
from bridge.hep.tracker import SipTracker

T0 = 1795604742.0
AGENT, TARGET = "sip:1001@pbx.example", "sip:1002@pbx.example"
PBX: Hop = ("10.0.0.2", 5060)
PHONE: Hop = ("10.0.0.11", 5062)
TRUNK: Hop = ("10.0.0.50", 5060)
TARGET_PHONE: Hop = ("10.0.0.12", 5060)

# How three SIP stacks write the agent phone's Contact.
CONTACTS = {
    "linphone": '<sip:10.0.0.11:5062;transport=udp>;+sip.instance="<urn:uuid:1b2c>"',
    "baresip": "<sip:1001-0x55d0c6a1b2c0@10.0.0.11:5062;transport=udp>",
    "pjsua2": "<sip:1001@10.0.0.11:5062;ob>",
}
PBX_CONTACT = "<sip:10.0.0.2:5060>"  # Asterisk answers without a user part too


def name(h: Hop) -> str:
    return f"{h[0]}:{h[1]}"


@dataclass
class Wire:
    """Builds and feeds one flow; every message carries its sender's Via like a real UA's."""

    phone_contact: str
    hep: bool = True
    tracker: SipTracker = field(
        default_factory=lambda: SipTracker(PhoneDirectory([AGENT, TARGET], match_user=True))
    )
    events: list[PhoneEvent] = field(default_factory=list)
    at: float = T0
    _branch: itertools.count[int] = field(default_factory=itertools.count)

    def contact_of(self, who: Hop) -> str:
        return self.phone_contact if who == PHONE else f"<sip:{name(who)}>"

    def send(self, text: str, src: Hop, dst: Hop) -> None:
        self.at += 0.05
        data = (text.strip("\n").replace("\n", "\r\n") + "\r\nContent-Length: 0\r\n\r\n").encode()
        args = (src, dst) if self.hep else (None, None)
        self.events += self.tracker.feed_bytes(data, self.at, None, *args)

    def invite(self, call_id: str, ruri: str, frm: str, to: str, src: Hop, dst: Hop) -> str:
        """A new INVITE from ``src`` to ``dst``; its Via branch (for the answers)."""
        branch = f"z9hG4bK{next(self._branch)}"
        self.send(
            f"""INVITE {ruri} SIP/2.0
Via: SIP/2.0/UDP {name(src)};rport;branch={branch}
From: {frm};tag=f-{call_id}
To: {to}
Call-ID: {call_id}
CSeq: 10 INVITE
Contact: {self.contact_of(src)}""",
            src,
            dst,
        )
        return branch

    def answer(
        self, code: str, call_id: str, frm: str, to: str, branch: str, via: Hop, src: Hop, dst: Hop
    ) -> None:
        self.send(
            f"""SIP/2.0 {code}
Via: SIP/2.0/UDP {name(via)};rport;branch={branch}
From: {frm};tag=f-{call_id}
To: {to};tag=t-{call_id}
Call-ID: {call_id}
CSeq: 10 INVITE
Contact: {self.contact_of(src)}""",
            src,
            dst,
        )

    def bye(self, call_id: str, frm: str, to: str, src: Hop, dst: Hop, *, caller: bool) -> None:
        """BYE from the caller's side (tags as in the INVITE) or the callee's (swapped)."""
        if caller:
            frm_h, to_h = f"{frm};tag=f-{call_id}", f"{to};tag=t-{call_id}"
        else:
            frm_h, to_h = f"{to};tag=t-{call_id}", f"{frm};tag=f-{call_id}"
        self.send(
            f"""BYE sip:{name(dst)} SIP/2.0
Via: SIP/2.0/UDP {name(src)};branch=z9hG4bKbye{next(self._branch)}
From: {frm_h}
To: {to_h}
Call-ID: {call_id}
CSeq: 20 BYE""",
            src,
            dst,
        )

    def call(self, call_id: str, ruri: str, frm: str, to: str, src: Hop, dst: Hop, *codes: str):
        branch = self.invite(call_id, ruri, frm, to, src, dst)
        for code in codes:
            self.answer(code, call_id, frm, to, branch, src, dst, src)

    # -- the back-to-back PBX's two legs of one customer call to 1001
    def customer_calls_agent(self, answered: bool = True) -> None:
        cust, agent = '"Customer" <sip:2000@pbx.example>', "<sip:1001@pbx.example>"
        b1 = self.invite("cust-leg", "sip:1001@10.0.0.2:5060", cust, agent, TRUNK, PBX)
        b2 = self.invite("agent-leg", "sip:1001@10.0.0.11:5062", cust, agent, PBX, PHONE)
        codes = ("180 Ringing", "200 OK") if answered else ("180 Ringing",)
        for code in codes:
            self.answer(code, "agent-leg", cust, agent, b2, PBX, PHONE, PBX)
            self.answer(code, "cust-leg", cust, agent, b1, TRUNK, PBX, TRUNK)

    def agent_consults_target(self) -> None:
        agent, target = "<sip:1001@pbx.example>", "<sip:1002@pbx.example>"
        b1 = self.invite("consult", "sip:1002@10.0.0.2", agent, target, PHONE, PBX)
        # The PBX's own leg toward the target carries the agent as caller.
        b2 = self.invite(
            "pbx-to-target",
            "sip:1002@10.0.0.12",
            '"Agent 1001" ' + agent,
            target,
            PBX,
            TARGET_PHONE,
        )
        for code in ("180 Ringing", "200 OK"):
            self.answer(
                code, "pbx-to-target", '"Agent 1001" ' + agent, target, b2, PBX, TARGET_PHONE, PBX
            )
            self.answer(code, "consult", agent, target, b1, PHONE, PBX, PHONE)

    # -- the agent's phone inside its call with the customer (the PBX's leg to the phone)
    def from_phone(self, request: str, cseq: str, *lines: str, body: str = "") -> None:
        """An in-dialog request the phone sends in its leg of the customer's call."""
        cust, agent = '"Customer" <sip:2000@pbx.example>', "<sip:1001@pbx.example>"
        head = [
            f"{request} sip:{name(PBX)} SIP/2.0",
            f"Via: SIP/2.0/UDP {name(PHONE)};rport;branch=z9hG4bK{next(self._branch)}",
            f"From: {agent};tag=t-agent-leg",
            f"To: {cust};tag=f-agent-leg",
            "Call-ID: agent-leg",
            f"CSeq: {cseq}",
            f"Contact: {self.phone_contact}",
            *lines,
        ]
        self._send_with_body(head, body, PHONE, PBX)

    def to_phone(self, start: str, cseq: str, *lines: str, body: str = "") -> None:
        """The PBX's answer (or request) to the phone in that leg, same tags as the phone's."""
        cust, agent = '"Customer" <sip:2000@pbx.example>', "<sip:1001@pbx.example>"
        via = PHONE if start.startswith("SIP/") else PBX  # an answer keeps the request's Via
        head = [
            start,
            f"Via: SIP/2.0/UDP {name(via)};rport;branch=z9hG4bK{next(self._branch)}",
            f"From: {agent};tag=t-agent-leg"
            if start.startswith("SIP/")
            else f"From: {cust};tag=f-agent-leg",
            f"To: {cust};tag=f-agent-leg"
            if start.startswith("SIP/")
            else f"To: {agent};tag=t-agent-leg",
            "Call-ID: agent-leg",
            f"CSeq: {cseq}",
            *lines,
        ]
        self._send_with_body(head, body, PBX, PHONE)

    def _send_with_body(self, head: list[str], body: str, src: Hop, dst: Hop) -> None:
        self.at += 0.05
        payload = body.replace("\n", "\r\n").encode()
        if body:
            head = [
                *head,
                "Content-Type: "
                + ("application/sdp" if body.startswith("v=0") else "message/sipfrag"),
            ]
        text = "\r\n".join([*head, f"Content-Length: {len(payload)}"]) + "\r\n\r\n"
        args = (src, dst) if self.hep else (None, None)
        self.events += self.tracker.feed_bytes(text.encode() + payload, self.at, None, *args)

    def seen(self, phone: str = AGENT) -> list[tuple[str | None, Observation]]:
        return [(e.call_id, e.evidence.observation) for e in self.events if e.phone == phone]
