"""Real Asterisk 22 recordings with non-PJSIP agent phones: linphone (liblinphone 5.1, whose
Contact has no user part) and baresip 1.0 (libre, Contact user ``1001-0x55...``) as agent 1001,
recorded by `scripts/rig/record_clients.py` (HEP and AMI of the same calls).

With HEP alone each gives the verdict a pjsua2 agent gives for the same case
(`asterisk-<case>` recordings); AMI alone and both sources together agree.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.ami import NEED_DATA, AmiEvent, AmiParser
from bridge.ami.calls import AmiCallTracker
from bridge.ami.phones import AmiPhones
from bridge.evidence import PhoneEvent, TransferSucceeded
from bridge.hep.decode import decode_hep
from bridge.model import (
    Call,
    ConsultState,
    Customer,
    FailureCause,
    ProofGrade,
    Session,
    Transfer,
    TransferKind,
    TransferState,
)
from bridge.session.phone import apply_evidence
from tests.rig.hepfile import read_hep_file, replay_sip

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
AGENTS = ("1001", "1002", "1003", "1004")
T, P, K, F = TransferState, ProofGrade, TransferKind, FailureCause

# case -> (state, proof, kind, failure, consult) with HEP alone: what a pjsua2 agent gets too
HEP_VERDICT: dict[str, tuple[TransferState, ProofGrade, TransferKind | None, Any, Any]] = {
    "blind_answered": (T.TRANSFERRED, P.TARGET_ANSWERED, K.BLIND, None, ConsultState.NONE),
    "blind_busy": (T.FAILED, P.NONE, K.BLIND, F.TARGET_BUSY, ConsultState.NONE),
    "attended": (T.TRANSFERRED, P.CONSULT_REPLACED, K.ATTENDED, None, ConsultState.ANSWERED),
    "consult_abandoned": (T.NONE, P.NONE, None, None, ConsultState.ENDED),
    "customer_hangup_consult": (T.FAILED, P.NONE, None, F.CUSTOMER_HUNG_UP, ConsultState.ENDED),
}
CLIENT_CASES = [
    ("linphone", "blind_answered"),
    ("linphone", "blind_busy"),
    ("linphone", "attended"),
    ("linphone", "consult_abandoned"),
    ("linphone", "customer_hangup_consult"),
    ("baresip", "blind_answered"),
    ("baresip", "blind_busy"),
    ("baresip", "consult_abandoned"),
    ("baresip", "customer_hangup_consult"),
]
IDS = [f"{client}-{case}" for client, case in CLIENT_CASES]


def uri(ext: str) -> str:
    return f"sip:{ext}@127.0.0.1"


def hep(name: str) -> list[PhoneEvent]:
    events = replay_sip(FIXTURES / "hep" / f"{name}.hep", [uri(e) for e in AGENTS])
    return [e for e in events if e.phone == uri("1001")]


def ami(name: str) -> list[PhoneEvent]:
    parser = AmiParser()
    parser.receive_data((FIXTURES / "ami" / f"{name}.ami").read_bytes())
    tracker = AmiCallTracker("ami", AmiPhones([(uri(e), None) for e in AGENTS]))
    out: list[PhoneEvent] = []
    while (item := parser.next_event()) is not NEED_DATA:
        if isinstance(item, AmiEvent):
            out += tracker.feed(item, float(item.get("Timestamp") or 0.0))
    return [e for e in out if e.phone == uri("1001")]


def when(event: PhoneEvent) -> float:
    return datetime.fromisoformat(event.evidence.at).timestamp()


def transfer_after(events: list[PhoneEvent]) -> Transfer:
    """One session bound to the agent's customer call, fed in the sources' time order."""
    session = Session(
        "acme", "s-1", "a-1", Customer("2000"), "2026-01-01T00:00:00.000Z", call=Call()
    )
    for event in sorted(events, key=when):
        session = apply_evidence(session, event.evidence, now=event.evidence.at).session
    return session.transfer


def verdict(t: Transfer) -> tuple[TransferState, ProofGrade, TransferKind | None, Any, Any]:
    return (t.state, t.phone.proof, t.kind, t.phone.failure, t.phone.consult)


def sidecar(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "ami" / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize(("client", "case"), CLIENT_CASES, ids=IDS)
def test_hep_alone_gives_the_verdict_a_pjsua2_agent_gets(client: str, case: str) -> None:
    name = f"{client}-{case}"
    assert verdict(transfer_after(hep(name))) == HEP_VERDICT[case]
    assert verdict(transfer_after(hep(f"asterisk-{case}"))) == HEP_VERDICT[case]


@pytest.mark.parametrize(("client", "case"), CLIENT_CASES, ids=IDS)
def test_the_recording_shows_the_clients_own_contact(client: str, case: str) -> None:
    """The reason these recordings exist: neither Contact names the extension plainly."""
    port = sidecar(f"{client}-{case}")["phones"]["agent"]["1001"]
    contacts = set()
    for packet in read_hep_file(FIXTURES / "hep" / f"{client}-{case}.hep"):
        h = decode_hep(packet)
        if h.proto_type == 1 and h.src_port == port:
            for line in h.payload.decode().split("\r\n"):
                if line.lower().startswith("contact:"):
                    contacts.add(line.split("<", 1)[1].split(">", 1)[0].split(";", 1)[0])
    expected = {
        "linphone": f"sip:127.0.0.1:{port}",
        "baresip": "sip:1001-0x",
    }[client]
    assert contacts and all(c.startswith(expected) for c in contacts), contacts


@pytest.mark.parametrize(("client", "case"), CLIENT_CASES, ids=IDS)
def test_ami_alone_and_both_sources_agree_with_hep(client: str, case: str) -> None:
    name = f"{client}-{case}"
    by_hep, by_ami = transfer_after(hep(name)), transfer_after(ami(name))
    both = transfer_after(hep(name) + ami(name))
    for t in (by_ami, both):
        assert (t.state, t.kind, t.phone.failure) == (
            by_hep.state,
            by_hep.kind,
            by_hep.phone.failure,
        )
    if by_hep.state is TransferState.TRANSFERRED:
        assert by_ami.phone.proof is by_hep.phone.proof is both.phone.proof
    # The view shows the wire's sipfrag however the two sources' reports interleave.
    assert both.phone.last_sipfrag == by_hep.phone.last_sipfrag


@pytest.mark.parametrize(("client", "case"), CLIENT_CASES, ids=IDS)
def test_no_proof_before_the_target_answered(client: str, case: str) -> None:
    name = f"{client}-{case}"
    answered = [
        at
        for leg in sidecar(name)["legs"]
        if leg["phone"] == "1002"
        for state, _code, at in leg["states"]
        if state == "CONFIRMED"
    ]
    for event in hep(name) + ami(name):
        if isinstance(event.evidence.observation, TransferSucceeded):
            assert answered and when(event) >= min(answered) - 0.005, name


def test_every_client_recording_is_replayed() -> None:
    recorded = {p.stem for p in (FIXTURES / "hep").glob("*.hep")}
    clients = {n for n in recorded if n.startswith(("linphone-", "baresip-"))}
    assert clients == set(IDS)
