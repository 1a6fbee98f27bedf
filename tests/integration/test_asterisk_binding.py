"""End to end: a session binds to the call the agent is really on, and shows its transfer.

Real pjsua2 phones, the real Asterisk 22 and four real `transfer-bridge serve` processes
watching the same calls (as in test_asterisk_proof.py): `hep` and `hep_ami` get Asterisk's HEP
through a relay that can **lose chosen packets** on the way, as UDP capture does (a BYE, the
200 to a BYE, a CANCEL and what answers it); `ami` and `dialog` see everything. Sessions are
opened without a Call-ID, so each bridge binds by the agent's phone and the customer's number
(docs/api.md, "Binding a session to the phone call"):

- lost_bye: the customer's first call ends but its BYE is never captured; the desktop opens
  the session; the customer calls again and the agent answers; the agent transfers;
- lost_cancel: the customer gives up while it rings and the CANCEL is never captured; the
  customer calls again, the agent answers, the desktop opens the session; the agent transfers;
- early_leg_goes_quiet: a lost CANCEL and then nothing for more than 64*T1 (32 s): the
  session opened then binds to nothing (HEP's phantom early leg is not live), then to the
  customer's next call;
- call_waiting: the customer calls twice, the agent holds the first call and answers the
  second; the session is `ambiguous` with both candidates; the desktop picks the connected one
  with PATCH; the agent transfers it.

Each case ends with the target answering the transfer: every bridge must show `transferred`
(with `confirmed_by: phone`) through the HTTP API, and its audit's `call_binding` entries
explain each binding. With TRANSFER_BRIDGE_BINDING_REPORT set, what each bridge showed is
written there (one JSON line per case and source).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from bridge.hep.decode import HepError, decode_hep
from bridge.session.correlation import EARLY_LIMIT
from bridge.sip import SipMessage, SipParseError, parse_message
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
from tests.rig.phones import Phones
from tests.rig.procs import LOCALHOST

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(150)]

REPORT_ENV = "TRANSFER_BRIDGE_BINDING_REPORT"
SOURCES = FOUR_SOURCES
LOSSY = ("hep", "hep_ami")  # the bridges behind the lossy relay
CUSTOMER, AGENT_EXT, AGENT, TARGET = "2000", "1001", "ana", "1002"
# Asterisk's dialog-info names the caller only in the early NOTIFY, and right after another
# call of the hint not even there: then the line's only call binds without a known number.
DIALOG_BINDS = (["only_live_call"], ["only_call_number_unknown"])


def lost_bye(msg: SipMessage) -> str | None:
    """A BYE and the 200 answering it are lost."""
    if msg.is_request:
        return "BYE" if msg.method == "BYE" else None
    return "200 to BYE" if msg.cseq.method == "BYE" else None


def lost_cancel(msg: SipMessage) -> str | None:
    """A CANCEL and everything that answers it are lost: its 200, the 487 to the INVITE and
    the ACK of that 487."""
    if msg.is_request:
        return msg.method if msg.method in ("CANCEL", "ACK") else None
    if msg.cseq.method == "CANCEL":
        return "200 to CANCEL"
    return "487" if msg.status_code == 487 else None


class _LossyHepRelay(asyncio.DatagramProtocol):
    """Copies Asterisk's HEP to every bridge; to the `lossy` ports, packets whose SIP message
    `drop` names are not sent (counted in `dropped` by that name)."""

    def __init__(self, ports: list[int], lossy: list[int]) -> None:
        self.ports = ports
        self.lossy = set(lossy)
        self.drop: Callable[[SipMessage], str | None] | None = None
        self.dropped: Counter[str] = Counter()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.transport is not None
        lost = None
        if self.drop is not None:
            with contextlib.suppress(HepError, SipParseError):
                lost = self.drop(parse_message(decode_hep(data).payload))
        if lost is not None:
            self.dropped[lost] += 1
        for port in self.ports:
            if lost is None or port not in self.lossy:
                self.transport.sendto(data, (LOCALHOST, port))


@dataclass
class BindingRig:
    pbx: RunningAsterisk
    phones: Phones
    relay: _LossyHepRelay
    rigs: dict[str, Rig]
    loop: asyncio.AbstractEventLoop | None = None
    report: list[dict[str, Any]] = field(default_factory=list)


async def _start(pbx: RunningAsterisk, workdir: Path, stack: AsyncExitStack) -> BindingRig:
    relays: list[_LossyHepRelay] = []

    def relay_for(ports: list[int]) -> _LossyHepRelay:
        relays.append(_LossyHepRelay(ports, ports))
        return relays[-1]

    phones, rigs = await four_bridges(pbx, workdir, stack, relay_for, AGENTS)
    return BindingRig(pbx, phones, relays[0], rigs)


@pytest.fixture(scope="module")
def binding_rig(
    pbx: RunningAsterisk, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BindingRig]:
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        rig = loop.run_until_complete(_start(pbx, tmp_path_factory.mktemp("binding"), stack))
        rig.loop = loop
        yield rig
        report = os.environ.get(REPORT_ENV)
        if report:
            with Path(report).open("a") as out:
                out.writelines(json.dumps(line) + "\n" for line in rig.report)
    finally:
        loop.run_until_complete(stack.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def run(rig: BindingRig, coro: Any) -> Any:
    assert rig.loop is not None
    return rig.loop.run_until_complete(coro)


# --- what a person and a desktop do -----------------------------------------------------------


async def _answered_call(phones: Phones, hold_first: str | None = None) -> tuple[str, str, str]:
    """The customer calls the agent, who answers (holding `hold_first` first, if given): the
    customer's call ref, the agent's call ref and the agent leg's SIP Call-ID."""
    since = len(phones.events)
    call = await phones.call(CUSTOMER, AGENT_EXT)
    ringing = await phones.wait_state(AGENT_EXT, "INCOMING", since=since)
    if hold_first is not None:
        await asyncio.sleep(0.3)
        await phones.hold(AGENT_EXT, hold_first)
        await asyncio.sleep(0.5)
    await phones.answer(AGENT_EXT, ringing["ref"])
    await phones.wait_state(CUSTOMER, "CONFIRMED", ref=call["ref"], since=since)
    return str(call["ref"]), str(ringing["ref"]), str(ringing["call_id"])


async def _open(rig: BindingRig, sid: str) -> None:
    body = {
        "id": sid,
        "agent_id": AGENT,
        "customer": {"number": CUSTOMER},
        "call": {"state": "connected"},
    }
    for r in rig.rigs.values():
        resp = await r.api.post("/v1/sessions", body)
        assert resp.status == 201, resp.body


async def _views(rig: BindingRig, sid: str) -> dict[str, dict[str, Any]]:
    out = {}
    for source, r in rig.rigs.items():
        resp = await r.api.get(f"/v1/sessions/{sid}")
        assert resp.status == 200, resp.body
        out[source] = resp.body
    return out


def _bound_to(call_id: str, source: str) -> Callable[[dict[str, Any]], bool]:
    """Bound by phone and number to the agent's call (the dialog source names it its own way)."""

    def done(s: dict[str, Any]) -> bool:
        call = s["call"]
        if call["binding"] not in ("phone_and_number", "call_id"):
            return False
        return source == "dialog" or call["sip_call_id"] == call_id

    return done


async def _transfer_and_see_it(rig: BindingRig, sid: str, agent_ref: str) -> None:
    """The agent transfers the call to 1002, who answers: every bridge shows it."""
    phones = rig.phones
    await phones.behaviour(TARGET, "auto", delay_ms=500)
    for r in rig.rigs.values():
        await click(r, sid, "open", "internal", "next")
    await asyncio.sleep(1.0)  # a person talks before transferring
    since = len(phones.events)
    await phones.blind_transfer(AGENT_EXT, agent_ref, TARGET)
    await phones.wait_state(TARGET, "CONFIRMED", since=since, time_limit=15)
    for source, r in rig.rigs.items():
        if source == "dialog" and await _number_unknown(r, sid):
            # dialog-info tells a blind transfer by the target's line ringing with the
            # customer's number: without the number of the agent's call it cannot (the
            # report shows what the session got)
            continue
        s = await session_until(r, sid, lambda s: s["transfer"]["state"] == "transferred")
        assert s["transfer"]["confirmed_by"] == "phone", s


async def _number_unknown(r: Rig, sid: str) -> bool:
    """The session is bound to a call whose number its source could not tell."""
    entries = await audit(r, sid)
    reasons = [e["detail"].get("reason") for e in entries if e["event"] == "call_binding"]
    return bool(reasons) and reasons[-1] == "only_call_number_unknown"


async def _record(rig: BindingRig, case: str, sid: str, **facts: Any) -> dict[str, list[Any]]:
    """Each bridge's final view and `call_binding` audit lines, kept for the report."""
    bindings: dict[str, list[Any]] = {}
    views = await _views(rig, sid)
    for source, r in rig.rigs.items():
        entries = await audit(r, sid)
        bindings[source] = [
            {"kind": e["kind"], **e["detail"]} for e in entries if e["event"] == "call_binding"
        ]
        rig.report.append(
            {
                "case": case,
                "source": source,
                **facts,
                "call": views[source]["call"],
                "transfer": {
                    k: views[source]["transfer"][k] for k in ("state", "kind", "confirmed_by")
                }
                | {"proof": views[source]["transfer"]["phone"]["proof"]},
                "call_binding": bindings[source],
                "dropped": dict(rig.relay.dropped),
            }
        )
    return bindings


async def _clean_up(rig: BindingRig, sid: str) -> None:
    rig.relay.drop = None
    await clean_up_case(rig.phones, rig.rigs.values(), sid, CUSTOMER, AGENT_EXT, TARGET)


async def _lossy(rig: BindingRig, drop: Callable[[SipMessage], str | None], action: Any) -> None:
    """Run `action` while the relay loses what `drop` names, and a moment after."""
    rig.relay.dropped.clear()
    rig.relay.drop = drop
    try:
        await action
        await asyncio.sleep(1.0)  # the answers to what was lost are lost too
    finally:
        rig.relay.drop = None


# --- the cases ----------------------------------------------------------------------------------


async def _lost_bye(rig: BindingRig) -> dict[str, list[Any]]:
    phones, sid = rig.phones, "s-lost-bye"
    try:
        customer_ref, _, first = await _answered_call(phones)
        await asyncio.sleep(0.5)

        async def hang_up() -> None:
            since = len(phones.events)
            await phones.hangup(CUSTOMER, customer_ref)
            await phones.wait_state(AGENT_EXT, "DISCONNECTED", since=since)

        await _lossy(rig, lost_bye, hang_up())
        assert rig.relay.dropped["BYE"] >= 2, rig.relay.dropped  # both legs' BYEs
        await _open(rig, sid)
        # HEP alone never saw the first call end: the session binds to it, as evidence says
        hep = await session_until(rig.rigs["hep"], sid, _bound_to(first, "hep"))
        assert hep["call"]["sip_call_id"] == first, hep
        for source in ("ami", "dialog"):  # they saw the end: nothing to bind to yet
            view = (await rig.rigs[source].api.get(f"/v1/sessions/{sid}")).body
            assert view["call"]["binding"] == "none", (source, view)
        _, agent_ref, second = await _answered_call(phones)
        for source, r in rig.rigs.items():
            await session_until(r, sid, _bound_to(second, source))
        await _transfer_and_see_it(rig, sid, agent_ref)
        return await _record(rig, "lost_bye", sid, first=first, second=second)
    finally:
        await _clean_up(rig, sid)


async def _lost_cancel(rig: BindingRig) -> dict[str, list[Any]]:
    phones, sid = rig.phones, "s-lost-cancel"
    try:
        await phones.behaviour(AGENT_EXT, "manual")
        since = len(phones.events)
        call = await phones.call(CUSTOMER, AGENT_EXT)
        ringing = await phones.wait_state(AGENT_EXT, "INCOMING", since=since)
        first = str(ringing["call_id"])
        await asyncio.sleep(1.0)

        async def give_up() -> None:
            since = len(phones.events)
            await phones.hangup(CUSTOMER, call["ref"])
            await phones.wait_state(AGENT_EXT, "DISCONNECTED", since=since)

        await _lossy(rig, lost_cancel, give_up())
        assert rig.relay.dropped["CANCEL"] >= 2, rig.relay.dropped
        _, agent_ref, second = await _answered_call(phones)
        await _open(rig, sid)  # opened once the call is up
        for source, r in rig.rigs.items():
            await session_until(r, sid, _bound_to(second, source))
        await _transfer_and_see_it(rig, sid, agent_ref)
        bindings = await _record(rig, "lost_cancel", sid, first=first, second=second)
        bindings["first"] = [first]
        return bindings
    finally:
        await _clean_up(rig, sid)


async def _early_leg_goes_quiet(rig: BindingRig) -> dict[str, list[Any]]:
    """A lost CANCEL, then nothing for longer than SIP's INVITE transaction limit (64*T1 =
    32 s): the early leg HEP still has is not live, so a session opened then stays unbound
    (it used to bind to the phantom at once) until the customer calls again."""
    phones, sid = rig.phones, "s-quiet"
    try:
        await phones.behaviour(AGENT_EXT, "manual")
        since = len(phones.events)
        call = await phones.call(CUSTOMER, AGENT_EXT)
        ringing = await phones.wait_state(AGENT_EXT, "INCOMING", since=since)
        first = str(ringing["call_id"])

        async def give_up() -> None:
            since = len(phones.events)
            await phones.hangup(CUSTOMER, call["ref"])
            await phones.wait_state(AGENT_EXT, "DISCONNECTED", since=since)

        await _lossy(rig, lost_cancel, give_up())
        assert rig.relay.dropped["CANCEL"] >= 2, rig.relay.dropped
        await asyncio.sleep(EARLY_LIMIT + 1)
        await _open(rig, sid)
        await asyncio.sleep(0.5)
        for source, view in (await _views(rig, sid)).items():
            assert view["call"]["binding"] == "none", (source, view["call"])
        _, agent_ref, second = await _answered_call(phones)
        for source, r in rig.rigs.items():
            await session_until(r, sid, _bound_to(second, source))
        await _transfer_and_see_it(rig, sid, agent_ref)
        bindings = await _record(rig, "early_leg_goes_quiet", sid, first=first, second=second)
        bindings["first"] = [first]
        return bindings
    finally:
        await _clean_up(rig, sid)


async def _call_waiting(rig: BindingRig) -> dict[str, list[Any]]:
    phones, sid = rig.phones, "s-call-waiting"
    try:
        _, first_ref, first = await _answered_call(phones)
        await asyncio.sleep(0.5)
        _, agent_ref, second = await _answered_call(phones, hold_first=first_ref)
        await asyncio.sleep(0.5)
        await _open(rig, sid)
        picked: dict[str, Any] = {}
        for source, r in rig.rigs.items():
            s = await session_until(
                r,
                sid,
                lambda s: s["call"]["binding"] != "none",
            )
            call = s["call"]
            if source == "dialog" and call["binding"] != "ambiguous":
                picked[source] = None  # what dialog-info shows: in the report
                continue
            assert call["binding"] == "ambiguous", json.dumps([source, call, await audit(r, sid)])
            states = {c["state"] for c in call["candidates"]}
            assert states == {"on_hold", "connected"}, (source, call)
            if source != "dialog":
                ids = {c["sip_call_id"] for c in call["candidates"]}
                assert ids == {first, second}, (source, call, first, second)
            # the desktop picks the call the agent is talking on
            choice = next(c for c in call["candidates"] if c["state"] == "connected")
            resp = await r.api.patch(
                f"/v1/sessions/{sid}",
                {"call": {"sip_call_id": choice["sip_call_id"]}},
                headers={"If-Match": f'"{s["version"]}"'},
            )
            assert resp.status == 200, (source, resp.body)
            assert resp.body["call"]["binding"] == "call_id", resp.body
            assert resp.body["call"]["state"] == "connected", resp.body
            picked[source] = choice["sip_call_id"]
        await _transfer_and_see_it(rig, sid, agent_ref)
        return await _record(rig, "call_waiting", sid, first=first, second=second, picked=picked)
    finally:
        await _clean_up(rig, sid)


# --- the tests --------------------------------------------------------------------------------


def test_a_lost_bye_then_the_customer_calls_again(binding_rig: BindingRig) -> None:
    bindings = run(binding_rig, _lost_bye(binding_rig))
    hep = bindings["hep"]
    assert [b["reason"] for b in hep] == ["only_live_call", "superseded"], hep
    assert hep[1]["previous_call_id"] == hep[0]["sip_call_id"], hep
    assert [b["reason"] for b in bindings["ami"]] == ["only_live_call"], bindings["ami"]
    assert [b["reason"] for b in bindings["dialog"]] in DIALOG_BINDS, bindings["dialog"]


def test_a_lost_cancel_then_the_customer_calls_again(binding_rig: BindingRig) -> None:
    bindings = run(binding_rig, _lost_cancel(binding_rig))
    hep = bindings["hep"]
    assert [b["reason"] for b in hep] == ["only_live_call"], hep
    # the phantom early leg is passed over (so may be one left by an earlier case)
    skipped = {s["sip_call_id"]: s["reason"] for s in hep[0].get("skipped", [])}
    assert skipped.get(bindings["first"][0]) == "superseded", hep
    assert [b["reason"] for b in bindings["ami"]] == ["only_live_call"], bindings["ami"]
    assert [b["reason"] for b in bindings["dialog"]] in DIALOG_BINDS, bindings["dialog"]
    for source in ("ami", "dialog"):
        assert "skipped" not in bindings[source][0], bindings[source]


def test_an_early_leg_quiet_past_64_t1_is_not_live(binding_rig: BindingRig) -> None:
    bindings = run(binding_rig, _early_leg_goes_quiet(binding_rig))
    hep = bindings["hep"]
    assert [b["reason"] for b in hep] == ["only_live_call"], hep
    skipped = {s["sip_call_id"]: s["reason"] for s in hep[0].get("skipped", [])}
    assert bindings["first"][0] in skipped, hep


def test_call_waiting_is_ambiguous_until_the_desktop_picks_the_call(
    binding_rig: BindingRig,
) -> None:
    bindings = run(binding_rig, _call_waiting(binding_rig))
    for source in ("hep", "ami", "hep_ami"):
        reasons = [(b["kind"], b["reason"]) for b in bindings[source]]
        assert reasons == [("system", "several_live_calls"), ("desktop", "desktop_choice")], (
            source,
            bindings[source],
        )
