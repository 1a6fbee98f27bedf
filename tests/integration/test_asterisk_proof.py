"""End to end: `transferred` only once a person at the target really has the customer.

Real pjsua2 phones, the real Asterisk 22 and four real `transfer-bridge serve` processes that
watch the same calls at the same time, each through other eyes (the promises are in
docs/api.md and docs/evidence.md: `transfer.phone.proof`, `failure`, `handoff_at`):

    hep      HEP only          (Asterisk's res_hep, copied to two bridges by a UDP relay)
    ami      AMI only
    hep_ami  HEP and AMI
    dialog   dialog-info only  (SUBSCRIBE to the agents' hints, as endpoint `watcher`)

Each case is played once per module (the first test that needs it plays it): the customer
reaches the agent, the desktop opens a session on every bridge, the agent transfers, and while
the target rings every bridge's session is polled through the HTTP API every ~0.1 s, as a
desktop would. The tests then judge each source's polls against the time the target phone
itself sent its answer (200) or refusal (486/603), or stopped ringing unanswered:

- no poll answered before the target's 200 may show `transfer.state == "transferred"`; in a
  case where the target never answers, no poll at all;
- while the target rings after the PBX already said "success" (NOTIFY sipfrag 2xx, AMI
  BlindTransfer/AttendedTransfer Success), HEP/AMI sources show `phone.proof == "pbx_reported"`;
- once the target answered: `transferred`, `confirmed_by: phone`, `proof: target_answered`,
  `handoff_at` not before the answer, and `kind` (`semi_attended` for REFER/Replaces naming a
  consult that was still ringing);
- once the target refused or never answered: `failed` with the right `phone.failure`.

A source that cannot see a case's outcome (dialog-info never shows a target that refuses at
once, nor a target that never rang) is only held to the first rule. The agent's Yes/No is never
clicked: everything here is the phone side's word.

What Asterisk 22 actually sends in each case is described in tests/fixtures/ami/README.md
(the same cases, recorded by scripts/rig/record_asterisk.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from tests.integration.desk import (
    AGENTS,
    FOUR_SOURCES,
    Rig,
    audit,
    clean_up_case,
    click,
    four_bridges,
    session_until,
)
from tests.rig.asterisk import RunningAsterisk
from tests.rig.phones import Event, Phones
from tests.rig.procs import LOCALHOST

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

REPORT_ENV = "TRANSFER_BRIDGE_PROOF_REPORT"  # a file: what each source's session showed, per case
PROOF_AGENTS = (*AGENTS, ("dee", "1004"))  # 1004: refer_blind_progress = no
AGENT_OF = {ext: agent for agent, ext in PROOF_AGENTS}
SOURCES = FOUR_SOURCES
POLL = 0.1  # seconds between two polls of one session
SETTLE = 6.0  # at most this long after the target's answer/refusal for the verdict
HANDOFF_SLACK = 0.01  # RFC 3339 times may be cut to the millisecond
TARGET_FAILURES = {"target_busy", "target_rejected", "target_no_answer"}


@dataclass(frozen=True)
class Case:
    """One transfer. ``target``: the extension the agent transfers to (1002 rings in every
    case: 8102 and 11XX dial it); ``ring``: 1002's behaviour ``(mode, delay_ms, code)``;
    ``answered``: whether a person at 1002 ends up with the customer; ``failures``: the
    acceptable ``phone.failure`` otherwise; ``hep_reports_early``: the agent gets NOTIFY 2xx
    before the target decides (early media, refer_blind_progress=no, semi-attended);
    ``dialog_sees``: dialog-info shows the outcome (the target's line rings with the customer
    and is then confirmed or terminated)."""

    agent: str
    target: str
    ring: tuple[str, int, int]
    semi: bool = False
    answered: bool = False
    failures: frozenset[str] = frozenset()
    hep_reports_early: bool = False
    dialog_sees: bool = True

    @property
    def kind(self) -> str:
        return "semi_attended" if self.semi else "blind"


BUSY = frozenset({"target_busy"})
CASES = {
    "blind_ring_answer": Case("1001", "1002", ("auto", 3000, 200), answered=True),
    "blind_ring_reject": Case(
        "1001", "1002", ("auto", 3000, 603), failures=frozenset({"target_rejected"})
    ),
    "blind_ring_busy": Case("1001", "1002", ("auto", 3000, 486), failures=BUSY),
    "blind_no_answer": Case(
        "1001", "1102", ("manual", 0, 0), failures=frozenset({"target_no_answer"})
    ),
    # 8100: 2 s of early media, busy tone, Hangup(17): the customer is dropped, nobody rang
    "blind_early_media_busy": Case(
        "1001",
        "8100",
        ("manual", 0, 0),
        failures=frozenset({"target_busy", "customer_hung_up"}),
        hep_reports_early=True,
        dialog_sees=False,
    ),
    "blind_early_media_answer": Case(
        "1001", "8102", ("auto", 2000, 200), answered=True, hep_reports_early=True
    ),
    "noprogress_busy": Case(
        "1004", "1002", ("busy", 0, 486), failures=BUSY, hep_reports_early=True, dialog_sees=False
    ),
    "noprogress_answer": Case(
        "1004", "1002", ("auto", 2000, 200), answered=True, hep_reports_early=True
    ),
    "semi_attended_answer": Case(
        "1001", "1002", ("auto", 3000, 200), semi=True, answered=True, hep_reports_early=True
    ),
    "semi_attended_reject": Case(
        "1001",
        "1002",
        ("auto", 3000, 603),
        semi=True,
        failures=frozenset({"target_rejected"}),
        hep_reports_early=True,
    ),
    "semi_attended_no_answer": Case(
        "1001",
        "1102",
        ("manual", 0, 0),
        semi=True,
        failures=frozenset({"target_no_answer"}),
        hep_reports_early=True,
    ),
}


@dataclass
class Poll:
    sent: float  # wall clock, same clock as the phones' reports
    received: float
    session: dict[str, Any]

    @property
    def transfer(self) -> dict[str, Any]:
        return dict(self.session["transfer"])

    @property
    def state(self) -> str:
        return str(self.transfer["state"])

    def phone(self, key: str) -> Any:
        return self.transfer["phone"].get(key, "<absent>")

    def brief(self) -> dict[str, Any]:
        t = self.transfer
        return {
            "state": t["state"],
            "kind": t.get("kind"),
            "confirmed_by": t.get("confirmed_by"),
            "refer": t["phone"].get("refer"),
            "proof": t["phone"].get("proof", "<absent>"),
            "failure": t["phone"].get("failure", "<absent>"),
            "handoff_at": t["phone"].get("handoff_at", "<absent>"),
            "pbx_reported_at": t["phone"].get("pbx_reported_at", "<absent>"),
            "last_sipfrag": t["phone"].get("last_sipfrag"),
            "proved_by": t["phone"].get("proved_by"),
            "call": self.session["call"]["state"],
        }


@dataclass
class Played:
    """One case as it happened: the phones' times and every source's polls."""

    name: str
    case: Case
    refer_at: float = 0.0  # the agent's REFER left (the command's reply came back)
    notify_2xx_at: float | None = None  # the agent's phone got a final 2xx NOTIFY
    answered_at: float | None = None  # 1002 sent 200
    refused_at: float | None = None  # 1002 sent 486/603
    unanswered_at: float | None = None  # 1002 stopped ringing without answering
    polls: dict[str, list[Poll]] = field(default_factory=dict)
    audits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    error: str | None = None

    @property
    def outcome_at(self) -> float | None:
        """When the target decided (answered, refused, or Dial gave up)."""
        for t in (self.answered_at, self.refused_at, self.unanswered_at):
            if t is not None:
                return t
        return None

    def timeline(self, source: str) -> list[dict[str, Any]]:
        """The polls of ``source`` where something changed, times relative to the outcome."""
        ref = self.outcome_at or self.refer_at
        out: list[dict[str, Any]] = []
        last: dict[str, Any] | None = None
        for p in self.polls.get(source, []):
            b = p.brief()
            if b != last:
                out.append({"t": round(p.received - ref, 3), **b})
                last = b
        return out

    def describe(self, source: str) -> str:
        times = {
            "refer": self.refer_at,
            "notify_2xx": self.notify_2xx_at,
            "answered": self.answered_at,
            "refused": self.refused_at,
            "unanswered": self.unanswered_at,
        }
        ref = self.outcome_at or self.refer_at
        rel = {k: None if v is None else round(v - ref, 3) for k, v in times.items()}
        lines = [f"case {self.name} via {source}; phone times relative to the outcome: {rel}"]
        lines += [json.dumps(e) for e in self.timeline(source)]
        phone = [e for e in self.audits.get(source, []) if e.get("kind") == "phone"]
        lines.append(f"the bridge's phone evidence ({len(phone)} audit entries):")
        lines += [json.dumps({k: e.get(k) for k in ("at", "event", "detail")}) for e in phone[-12:]]
        return "\n".join(lines)


# --- the module's rig: one set of phones, four bridges, a HEP relay -----------------------------


class _HepRelay(asyncio.DatagramProtocol):
    """Receives Asterisk's HEP and sends a copy of every packet to each bridge's HEP port."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.transport is not None
        for port in self.ports:
            self.transport.sendto(data, (LOCALHOST, port))


@dataclass
class ProofRig:
    pbx: RunningAsterisk
    phones: Phones
    rigs: dict[str, Rig]
    loop: asyncio.AbstractEventLoop | None = None
    played: dict[str, Played] = field(default_factory=dict)


async def _start(pbx: RunningAsterisk, workdir: Path, stack: AsyncExitStack) -> ProofRig:
    phones, rigs = await four_bridges(pbx, workdir, stack, _HepRelay, PROOF_AGENTS)
    return ProofRig(pbx, phones, rigs)


@pytest.fixture(scope="module")
def proof_rig(pbx: RunningAsterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProofRig]:
    """Started once for the module on a loop of its own (the tests are plain functions that
    run a case on it the first time they need it)."""
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        rig = loop.run_until_complete(_start(pbx, tmp_path_factory.mktemp("proof"), stack))
        rig.loop = loop
        yield rig
        report = os.environ.get(REPORT_ENV)
        if report:
            with Path(report).open("a") as out:
                for played in rig.played.values():
                    for source in SOURCES:
                        line = {"case": played.name, "source": source, "error": played.error}
                        line["timeline"] = played.timeline(source)  # type: ignore[assignment]
                        out.write(json.dumps(line) + "\n")
    finally:
        loop.run_until_complete(stack.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def played(rig: ProofRig, name: str) -> Played:
    if name not in rig.played:
        assert rig.loop is not None
        rig.played[name] = rig.loop.run_until_complete(play(rig, name))
    result = rig.played[name]
    if result.error is not None:
        pytest.fail(f"case {name} could not be played: {result.error}")
    return result


# --- playing a case ---------------------------------------------------------------------------


def _last(events: list[Event], pred: Any) -> Event | None:
    found = None
    for e in events:
        if pred(e):
            found = e
    return found


async def _poller(rig: ProofRig, sid: str, out: Played, stop: asyncio.Event) -> None:
    async def one(source: str, r: Rig) -> None:
        sent = time.time()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            resp = await r.api.get(f"/v1/sessions/{sid}")
            if resp.status == 200:
                out.polls[source].append(Poll(sent, time.time(), resp.body))

    while not stop.is_set():
        await asyncio.gather(*(one(s, r) for s, r in rig.rigs.items()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL)


async def play(rig: ProofRig, name: str) -> Played:
    case = CASES[name]
    phones = rig.phones
    out = Played(name, case, polls={s: [] for s in SOURCES})
    sid = f"s-{name.replace('_', '-')}"
    agent = AGENT_OF[case.agent]
    mode, delay_ms, code = case.ring
    stop = asyncio.Event()
    poller: asyncio.Task[None] | None = None
    try:
        await phones.behaviour("1002", mode, delay_ms=delay_ms, code=code or 200)
        since = len(phones.events)
        call = await phones.call("2000", case.agent)
        ringing = await phones.wait_state(case.agent, "INCOMING", since=since)
        # A person lets it ring a moment. Answered within a millisecond (auto-answer), Asterisk
        # may never report the line ringing, and dialog-info names the caller only while it
        # rings (docs/dialog-source.md, "Cannot see"): that limit is not this test's subject.
        await asyncio.sleep(0.4)
        await phones.answer(case.agent, ringing["ref"])
        await phones.wait_state("2000", "CONFIRMED", ref=call["ref"], since=since)
        leg = str(ringing["ref"])
        body = {"id": sid, "agent_id": agent, "customer": {"number": "2000"}}
        # The desktop names the agent's call (a CTI desktop knows its SIP Call-ID): every source
        # reaches the session through it, or (dialog-info, which names calls its own way) as
        # the only call with the customer's number. Binding by phone and number alone is
        # tested in test_asterisk_transfers.py.
        body["call"] = {"state": "connected", "sip_call_id": ringing["call_id"]}
        for r in rig.rigs.values():
            resp = await r.api.post("/v1/sessions", body)
            assert resp.status == 201, resp.body
        for r in rig.rigs.values():
            await session_until(r, sid, lambda s: s["call"]["binding"] == "call_id")
        for r in rig.rigs.values():
            await click(r, sid, "open", "internal", *(() if case.semi else ("next",)))
        poller = asyncio.create_task(_poller(rig, sid, out, stop))
        await asyncio.sleep(1.0)  # a person talks before transferring
        since = len(phones.events)
        if case.semi:
            await phones.hold(case.agent, leg)
            consult = await phones.call(case.agent, case.target)
            await phones.wait_state(case.agent, "EARLY", ref=consult["ref"], since=since)
            for r in rig.rigs.values():
                await click(r, sid, "next")
            await asyncio.sleep(0.5)
            await phones.attended_transfer(case.agent, leg, str(consult["ref"]))
        else:
            await phones.blind_transfer(case.agent, leg, case.target)
        out.refer_at = time.time()
        final = await phones.wait_xfer_final(case.agent, leg, 20)
        if 200 <= final["code"] < 300:
            out.notify_2xx_at = float(final["t"])

        # the target's outcome, as the target phone saw it (8100: nobody rings; the
        # customer is dropped)
        def decided(e: Event) -> bool:
            if e.get("ev") == "answered":
                return bool(e.get("phone") == "1002")
            return (
                e.get("ev") == "call_state"
                and e.get("state") == "DISCONNECTED"
                and (e.get("phone") == "1002" or e.get("ref") == call["ref"])
            )

        answered = await phones.wait_for(decided, 20, since=since)
        if answered.get("ev") == "answered":
            if int(answered["code"]) < 300:
                out.answered_at = float(answered["t"])
            else:
                out.refused_at = float(answered["t"])
        else:
            out.unanswered_at = float(answered["t"])
        # let the sources settle: stop early once every source is final and quiet for 1.5 s
        end = time.time() + SETTLE
        while time.time() < end:
            await asyncio.sleep(0.25)
            if all(_settled(p) for p in out.polls.values()):
                break
    except Exception as exc:  # reported by each test of the case
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        if poller is not None:
            await poller
        for source, r in rig.rigs.items():
            with contextlib.suppress(Exception):
                out.audits[source] = await audit(r, sid)
        await _clean_up(rig, sid)
    return out


def _settled(polls: list[Poll]) -> bool:
    if not polls or polls[-1].state not in ("transferred", "failed"):
        return False
    final = polls[-1].brief()
    recent = [p for p in polls if p.received > polls[-1].received - 1.5]
    return polls[0].received < polls[-1].received - 1.5 and all(p.brief() == final for p in recent)


async def _clean_up(rig: ProofRig, sid: str) -> None:
    """Hang up what is left, end the sessions (a transferred session blocks its agent)."""
    await clean_up_case(rig.phones, rig.rigs.values(), sid, "2000", "1001", "1002", "1004")


# --- the tests --------------------------------------------------------------------------------


def _rfc3339(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _sees_outcome(case: Case, source: str) -> bool:
    return source != "dialog" or case.dialog_sees


def _pbx_reports_before_outcome(case: Case, source: str) -> bool:
    """The PBX's own 'success' comes before the target decides, for this source."""
    if source == "dialog":
        return False
    if source == "hep":
        return case.hep_reports_early
    return True  # AMI: BlindTransfer / AttendedTransfer Success at the REFER


PARAMS = [(name, source) for name in CASES for source in SOURCES]


@pytest.mark.parametrize(("name", "source"), PARAMS, ids=[f"{n}-{s}" for n, s in PARAMS])
def test_transferred_only_once_the_target_has_the_customer(
    proof_rig: ProofRig, name: str, source: str
) -> None:
    p = played(proof_rig, name)
    case = p.case
    polls = p.polls[source]
    story = p.describe(source)
    assert polls, f"no poll of the session\n{story}"
    outcome = p.outcome_at
    assert outcome is not None, f"the target phone never decided\n{story}"

    # 1. never transferred before a person at the target answered (or at all, if nobody did)
    early = [q for q in polls if p.answered_at is None or q.received < p.answered_at]
    wrong = [q.brief() for q in early if q.state == "transferred"]
    assert not wrong, (
        f"transferred before the target answered ({len(wrong)} polls), first: {wrong[0]}\n{story}"
    )

    # 2. while the target rings after the PBX's own report: pbx_reported, not proof
    if _pbx_reports_before_outcome(case, source):
        start = (p.notify_2xx_at or p.refer_at) if source == "hep" else p.refer_at
        window = [q for q in polls if start + 0.5 <= q.sent and q.received < outcome - 0.05]
        if outcome - start >= 1.0:
            assert window, f"no poll while the target rang\n{story}"
            proofs = {q.phone("proof") for q in window}
            assert proofs == {"pbx_reported"}, (
                f"while the target rang, proof was {proofs}, not only 'pbx_reported'\n{story}"
            )

    last = polls[-1]
    t = last.transfer
    if not _sees_outcome(case, source):
        assert last.state != "transferred", f"{source} cannot see this case\n{story}"
        return

    if case.answered:
        assert p.answered_at is not None, f"the target did not answer\n{story}"
        # 3. transferred on the target's own answer, with the proof and the moment of it
        assert last.state == "transferred", f"not transferred after the answer\n{story}"
        assert t.get("confirmed_by") == "phone", f"confirmed_by {t.get('confirmed_by')!r}\n{story}"
        proof = last.phone("proof")
        assert proof == "target_answered", f"proof {proof!r}, not 'target_answered'\n{story}"
        handoff = last.phone("handoff_at")
        assert isinstance(handoff, str), f"handoff_at: {handoff!r}\n{story}"
        assert _rfc3339(handoff) >= p.answered_at - HANDOFF_SLACK, (
            f"handoff_at {handoff} is before the answer at {p.answered_at}\n{story}"
        )
        if source != "dialog":  # dialog-info never shows the REFER: no kind to check
            assert t.get("kind") == case.kind, f"kind {t.get('kind')!r}, not {case.kind!r}\n{story}"
    else:
        # 4. failed, with the target's reason
        assert last.state == "failed", (
            f"{last.state!r}, not failed, after the target refused or never answered\n{story}"
        )
        failures = case.failures
        if source == "dialog":  # a line that rang and went idle: refused or unanswered, alike
            failures = failures | TARGET_FAILURES | {"transfer_failed"}
        assert last.phone("failure") in failures, (
            f"failure {last.phone('failure')!r}, expected one of {sorted(failures)}\n{story}"
        )
        assert last.phone("handoff_at") is None, f"handoff_at set on a failure\n{story}"
