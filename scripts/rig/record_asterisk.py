#!/usr/bin/env python3
"""Record real Asterisk 22 transfers for replay: each case is played by pjsua2 phones
(tests/rig/softphone.py) against a real Asterisk (tests/rig/asterisk.py), and three files are
written per case:

- ``tests/fixtures/ami/asterisk-<case>.ami``: the raw bytes of one AMI connection, banner and
  login answer included, exactly as received (user ``bridge``, ``read=all``);
- ``tests/fixtures/hep/asterisk-<case>.hep``: the HEPv3 packets Asterisk sent during the case
  (capture format of ``bridge/hep/capture.py``; RTCP reports, HEP type 5, included);
- ``tests/fixtures/ami/asterisk-<case>.json``: the phones' side: every leg (phone, call ref,
  SIP Call-ID, direction, remote URI, final state), transfer statuses and the steps taken.

    python scripts/rig/record_asterisk.py                 # every case
    python scripts/rig/record_asterisk.py blind_answered  # some cases
    python scripts/rig/record_asterisk.py --list
    python scripts/rig/record_asterisk.py --dialog blind_ring_answer   # only its dialog-info

``--dialog CASE`` plays CASE once more watched by a ``SUBSCRIBE Event: dialog`` watcher (the
bridge's own client, as endpoint ``watcher``) on the lines of 1001, 1002 and 1004 and writes
``tests/fixtures/dialog/asterisk22-<case>.json`` (every datagram it received, and the steps).

Phones: customers 2000 and 2001, agents 1001, 1003 and 1004 (refer_blind_progress=no), target
agent 1002; transfer targets 8100/8102/11XX of docker/asterisk/extensions.conf. One Asterisk serves
every case (started once, under the machine-wide Asterisk lock); each case gets a fresh AMI
login and a fresh phone process. Needs root, the Asterisk root (scripts/asterisk/build-root.sh)
and pjsua2 (scripts/rig/install.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bridge.ami import AmiEvent, AmiParser  # noqa: E402
from phone_drivers.dialog import DialogClient  # noqa: E402
from tests.rig.asterisk import AsteriskSettings, RunningAsterisk, running_asterisk  # noqa: E402
from tests.rig.collector import HepCollector, running_collector  # noqa: E402
from tests.rig.hepfile import write_hep_file  # noqa: E402
from tests.rig.phones import Phones, running_phones  # noqa: E402
from tests.rig.procs import LOCALHOST  # noqa: E402

AMI_OUT = REPO / "tests" / "fixtures" / "ami"
HEP_OUT = REPO / "tests" / "fixtures" / "hep"
DIALOG_OUT = REPO / "tests" / "fixtures" / "dialog"
DIALOG_LINES = ("1001", "1002", "1004")  # the lines the dialog watcher subscribes to
TALK = 1.0  # seconds a human waits between answering and transferring
PHONES = ("1001", "1002", "1003", "1004", "2000", "2001")


class AmiRecorder:
    """One logged-in AMI connection keeping every byte it receives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.data = bytearray()
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._pump())

    @classmethod
    async def open(cls, pbx: RunningAsterisk) -> AmiRecorder:
        reader, writer = await asyncio.open_connection(*pbx.ami)
        rec = cls(reader, writer)
        login = (
            f"Action: Login\r\nActionID: rec-login-1\r\nUsername: {pbx.ami_username}\r\n"
            f"Secret: {pbx.ami_secret}\r\n\r\n"
        )
        writer.write(login.encode())
        await writer.drain()
        await rec.wait_text(b"Message: Authentication accepted", 5)
        return rec

    async def _pump(self) -> None:
        while True:
            chunk = await self.reader.read(65536)
            if not chunk:
                break
            self.data += chunk
            self.changed.set()

    async def wait_text(self, needle: bytes, time_limit: float) -> None:
        async with asyncio.timeout(time_limit):
            while needle not in self.data:
                self.changed.clear()
                await self.changed.wait()

    def events(self) -> list[dict[str, str]]:
        """The events recorded so far (a repeated key: its first value)."""
        parser = AmiParser()
        parser.receive_data(bytes(self.data))
        return [dict(reversed(e.fields)) for e in parser.events() if isinstance(e, AmiEvent)]

    async def close(self) -> bytes:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return bytes(self.data)


@dataclass
class Ctx:
    phones: Phones
    pbx: RunningAsterisk
    ami: AmiRecorder
    steps: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def step(self, text: str) -> None:
        self.steps.append(f"{time.time():.3f} {text}")


async def connect(ctx: Ctx, customer: str, agent: str) -> tuple[str, str]:
    """``customer`` calls ``agent``, who answers after ringing briefly; both refs."""
    p = ctx.phones
    since = len(p.events)
    out = await p.call(customer, agent)
    ctx.step(f"{customer} calls {agent} ({out['ref']})")
    ring = await p.wait_state(agent, "INCOMING", since=since)
    await asyncio.sleep(0.3)
    await p.answer(agent, ring["ref"])
    ctx.step(f"{agent} answers ({ring['ref']})")
    await p.wait_state(customer, "CONFIRMED", ref=out["ref"])
    await p.wait_state(agent, "CONFIRMED", ref=ring["ref"])
    return out["ref"], ring["ref"]


async def all_down(ctx: Ctx, time_limit: float = 10.0) -> None:
    """Wait until every call the phones know is DISCONNECTED."""
    p = ctx.phones
    deadline = time.monotonic() + time_limit
    while True:
        live = [
            (phone, ref)
            for phone in p.ports
            for ref, e in p.calls_of(phone).items()
            if e["state"] != "DISCONNECTED"
        ]
        if not live:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"calls still up: {live}")
        await asyncio.sleep(0.05)


async def case_blind_answered(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=500)
    cust, agent = await connect(ctx, "2000", "1001")
    await asyncio.sleep(TALK)
    await p.blind_transfer("1001", agent, "1002")
    ctx.step("1001 blind-transfers the customer to 1002 (REFER)")
    final = await p.wait_xfer_final("1001", agent)
    ctx.step(f"1001 gets final NOTIFY {final['code']}; 1002 answered after 0.5 s ringing")
    target = await p.wait_state("1002", "CONFIRMED")
    await p.wait_state("1001", "DISCONNECTED", ref=agent)
    ctx.notes["target_ref"] = target["ref"]
    await asyncio.sleep(TALK)
    await p.hangup("2000", cust)
    ctx.step("customer 2000 hangs up after talking to 1002")
    await all_down(ctx)


async def case_blind_busy(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "busy")
    cust, agent = await connect(ctx, "2000", "1001")
    await asyncio.sleep(TALK)
    await p.blind_transfer("1001", agent, "1002")
    ctx.step("1001 blind-transfers the customer to 1002, which answers 486 Busy Here")
    final = await p.wait_xfer_final("1001", agent)
    ctx.step(f"1001 gets final NOTIFY {final['code']} {final['reason']}")
    await asyncio.sleep(1.0)
    for phone, ref in (("2000", cust), ("1001", agent)):
        if p.state_of(ref) != "DISCONNECTED" and await p.hangup(phone, ref):
            ctx.step(f"{phone} hangs up its leg {ref} (still up 1 s after the final NOTIFY)")
    await all_down(ctx)


async def consult(ctx: Ctx, agent_ref: str) -> str:
    """1001 holds the customer and calls 1002 (auto-answer); the consult ref."""
    p = ctx.phones
    await p.hold("1001", agent_ref)
    await p.wait_for(
        lambda e: (
            e.get("ev") == "media" and e.get("ref") == agent_ref and e.get("status") == "local_hold"
        ),
        5,
    )
    ctx.step("1001 puts the customer on hold")
    out = await p.call("1001", "1002")
    ctx.step(f"1001 calls 1002 to consult ({out['ref']})")
    await p.wait_state("1001", "CONFIRMED", ref=out["ref"])
    ctx.step("1002 answers the consult call")
    return str(out["ref"])


async def case_attended(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=500)
    cust, agent = await connect(ctx, "2000", "1001")
    await asyncio.sleep(TALK)
    cons = await consult(ctx, agent)
    await asyncio.sleep(TALK)
    await p.attended_transfer("1001", agent, cons)
    ctx.step("1001 transfers (REFER with Replaces naming the consult call)")
    final = await p.wait_xfer_final("1001", agent)
    ctx.step(f"1001 gets final NOTIFY {final['code']}")
    await p.wait_state("1001", "DISCONNECTED", ref=agent)
    await p.wait_state("1001", "DISCONNECTED", ref=cons)
    ctx.step("both of 1001's legs end")
    await asyncio.sleep(TALK)
    await p.hangup("2000", cust)
    ctx.step("customer 2000 hangs up after talking to 1002")
    await all_down(ctx)


async def case_customer_hangup_consult(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=500)
    cust, agent = await connect(ctx, "2000", "1001")
    await asyncio.sleep(TALK)
    cons = await consult(ctx, agent)
    await asyncio.sleep(0.5)
    await p.hangup("2000", cust)
    ctx.step("customer 2000 hangs up while on hold during the consult")
    await p.wait_state("1001", "DISCONNECTED", ref=agent)
    await asyncio.sleep(0.5)
    await p.hangup("1001", cons)
    ctx.step("1001 ends the consult call; no transfer")
    await all_down(ctx)


async def case_consult_abandoned(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=500)
    cust, agent = await connect(ctx, "2000", "1001")
    await asyncio.sleep(TALK)
    cons = await consult(ctx, agent)
    await asyncio.sleep(0.5)
    await p.hangup("1001", cons)
    ctx.step("1001 ends the consult call without transferring")
    await p.wait_state("1001", "DISCONNECTED", ref=cons)
    await p.unhold("1001", agent)
    ctx.step("1001 takes the customer off hold")
    await p.wait_for(
        lambda e: e.get("ev") == "media" and e.get("ref") == agent and e.get("status") == "active",
        5,
        since=len(p.events) - 20,
    )
    await asyncio.sleep(TALK)
    await p.hangup("2000", cust)
    ctx.step("customer 2000 hangs up after talking to 1001 again")
    await all_down(ctx)


async def case_quick_refer(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=500)
    since = len(p.events)
    out = await p.call("2000", "1001")
    cust = str(out["ref"])
    ctx.step(f"2000 calls 1001 ({cust})")
    ring = await p.wait_state("1001", "INCOMING", since=since)
    agent = str(ring["ref"])
    await asyncio.sleep(0.3)
    await p.answer_then_transfer("1001", agent, "1002")
    ctx.step("1001 answers and sends the blind REFER to 1002 in the same instant")
    final = await p.wait_xfer_final("1001", agent)
    ctx.step(f"1001 gets final NOTIFY {final['code']} {final['reason']}")
    await asyncio.sleep(1.0)
    for phone, ref in (("2000", cust), ("1001", agent)):
        if p.state_of(ref) != "DISCONNECTED" and await p.hangup(phone, ref):
            ctx.step(f"{phone} hangs up its leg {ref} (still up 1 s after the final NOTIFY)")
    await all_down(ctx)


async def case_two_agents(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=500)
    (c1, a1), (c2, a2) = await asyncio.gather(
        connect(ctx, "2000", "1001"), connect(ctx, "2001", "1003")
    )
    await asyncio.sleep(TALK)
    await asyncio.gather(p.blind_transfer("1001", a1, "1002"), p.blind_transfer("1003", a2, "1002"))
    ctx.step("1001 and 1003 blind-transfer their customers to 1002 at the same moment")
    f1, f2 = await asyncio.gather(p.wait_xfer_final("1001", a1), p.wait_xfer_final("1003", a2))
    ctx.step(f"final NOTIFYs: 1001 {f1['code']}, 1003 {f2['code']}")
    await asyncio.sleep(TALK)
    for phone, ref in (("2000", c1), ("2001", c2)):
        if p.state_of(ref) != "DISCONNECTED":
            await p.hangup(phone, ref)
    ctx.step("customers 2000 and 2001 hang up after talking to 1002")
    await all_down(ctx)


# ---- issue 15: when does "transferred" mean a person at the target has the customer?
# The target 1002 rings for a while before it answers or refuses, so the recordings show what
# the PBX reports (NOTIFY sipfrags, AMI) before anybody at the target has the customer.


async def end_what_is_left(ctx: Ctx, *legs: tuple[str, str]) -> None:
    """Hang up each (phone, ref) still up, as people do after a failed transfer."""
    p = ctx.phones
    for phone, ref in legs:
        if p.state_of(ref) != "DISCONNECTED" and await p.hangup(phone, ref):
            ctx.step(f"{phone} hangs up its leg {ref} (still up after the transfer ended)")


async def blind_then_wait(
    ctx: Ctx, target: str, *, agent: str = "1001", what: str, time_limit: float = 15.0
) -> tuple[str, str, dict[str, Any]]:
    """The customer reaches ``agent``, who blind-transfers to ``target`` after TALK; the final
    NOTIFY the agent got. ``what`` says what the target will do (for the steps)."""
    p = ctx.phones
    cust, leg = await connect(ctx, "2000", agent)
    await asyncio.sleep(TALK)
    await p.blind_transfer(agent, leg, target)
    ctx.step(f"{agent} blind-transfers the customer to {target} (REFER); {what}")
    final = await p.wait_xfer_final(agent, leg, time_limit)
    ctx.step(f"{agent} gets final NOTIFY {final['code']} {final['reason']}")
    return cust, leg, final


async def case_blind_ring_answer(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=3000)
    cust, leg, _ = await blind_then_wait(ctx, "1002", what="1002 rings 3 s, then answers")
    target = await p.wait_state("1002", "CONFIRMED", time_limit=10)
    ctx.step(f"1002 has the customer ({target['ref']})")
    await asyncio.sleep(TALK)
    await end_what_is_left(ctx, ("2000", cust), ("1001", leg))
    await all_down(ctx)


async def blind_ring_refused(ctx: Ctx, code: int) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=3000, code=code)
    cust, leg, _ = await blind_then_wait(ctx, "1002", what=f"1002 rings 3 s, then answers {code}")
    await asyncio.sleep(1.0)
    await end_what_is_left(ctx, ("2000", cust), ("1001", leg))
    await all_down(ctx)


async def case_blind_ring_reject(ctx: Ctx) -> None:
    await blind_ring_refused(ctx, 603)


async def case_blind_ring_busy(ctx: Ctx) -> None:
    await blind_ring_refused(ctx, 486)


async def case_blind_no_answer(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "manual")
    cust, leg, _ = await blind_then_wait(
        ctx, "1102", what="1102 dials 1002 for 8 s, nobody answers", time_limit=20
    )
    await asyncio.sleep(1.0)
    await end_what_is_left(ctx, ("2000", cust), ("1001", leg))
    await all_down(ctx)


async def case_blind_early_media_busy(ctx: Ctx) -> None:
    p = ctx.phones
    cust, leg, _ = await blind_then_wait(
        ctx, "8100", what="8100 plays 2 s of ringback as early media, then busy"
    )
    await p.wait_state("2000", "DISCONNECTED", ref=cust, time_limit=15)
    ctx.step("Asterisk hangs the customer up (nobody ever answered)")
    await end_what_is_left(ctx, ("1001", leg))
    await all_down(ctx)


async def case_blind_early_media_answer(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=2000)
    cust, leg, _ = await blind_then_wait(
        ctx, "8102", what="8102 plays 2 s of early media, then dials 1002 (rings 2 s, answers)"
    )
    target = await p.wait_state("1002", "CONFIRMED", time_limit=15)
    ctx.step(f"1002 has the customer ({target['ref']})")
    await asyncio.sleep(TALK)
    await end_what_is_left(ctx, ("2000", cust), ("1001", leg))
    await all_down(ctx)


async def case_noprogress_busy(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "busy")
    cust, leg, _ = await blind_then_wait(
        ctx, "1002", agent="1004", what="1004 has refer_blind_progress=no; 1002 answers 486"
    )
    await asyncio.sleep(1.5)
    await end_what_is_left(ctx, ("2000", cust), ("1004", leg))
    await all_down(ctx)


async def case_noprogress_answer(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=2000)
    cust, leg, _ = await blind_then_wait(
        ctx, "1002", agent="1004", what="1004 has refer_blind_progress=no; 1002 rings 2 s, answers"
    )
    target = await p.wait_state("1002", "CONFIRMED", time_limit=10)
    ctx.step(f"1002 has the customer ({target['ref']})")
    await asyncio.sleep(TALK)
    await end_what_is_left(ctx, ("2000", cust), ("1004", leg))
    await all_down(ctx)


async def early_consult(ctx: Ctx, agent_ref: str, target: str = "1002") -> str:
    """1001 holds the customer and calls ``target``, which rings (180 with a To-tag): the
    consult call's ref, still early."""
    p = ctx.phones
    await p.hold("1001", agent_ref)
    await p.wait_for(
        lambda e: (
            e.get("ev") == "media" and e.get("ref") == agent_ref and e.get("status") == "local_hold"
        ),
        5,
    )
    ctx.step("1001 puts the customer on hold")
    out = await p.call("1001", target)
    ctx.step(f"1001 calls {target} to consult ({out['ref']})")
    await p.wait_state("1001", "EARLY", ref=out["ref"])
    ctx.step(f"the consult call rings (180 Ringing with a To-tag): {target} has not answered")
    return str(out["ref"])


async def semi_attended(ctx: Ctx, target: str, what: str, time_limit: float = 15.0) -> str:
    """Customer -> 1001; 1001 consults ``target`` and, while it still rings, REFERs the
    customer with Replaces naming the early consult. The customer's ref."""
    p = ctx.phones
    cust, leg = await connect(ctx, "2000", "1001")
    await asyncio.sleep(TALK)
    cons = await early_consult(ctx, leg, target)
    await asyncio.sleep(0.5)
    await p.attended_transfer("1001", leg, cons)
    ctx.step(f"1001 REFERs the customer with Replaces naming the ringing consult; {what}")
    final = await p.wait_xfer_final("1001", leg, time_limit)
    ctx.step(f"1001 gets final NOTIFY {final['code']} {final['reason']}")
    ctx.notes["consult_ref"] = cons
    return cust


async def case_semi_attended_answer(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=3000)
    cust = await semi_attended(ctx, "1002", "1002 answers 3 s after it started ringing")
    target = await p.wait_state("1002", "CONFIRMED", time_limit=10)
    ctx.step(f"1002 answers ({target['ref']})")
    await asyncio.sleep(TALK)
    await end_what_is_left(ctx, ("2000", cust))
    await asyncio.sleep(0.5)
    await end_what_is_left(ctx, *[("1001", r) for r in p.calls_of("1001")])
    await all_down(ctx)


async def case_semi_attended_reject(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "auto", delay_ms=3000, code=603)
    cust = await semi_attended(ctx, "1002", "1002 declines (603) 3 s after it started ringing")
    await asyncio.sleep(4.0)
    await end_what_is_left(ctx, ("2000", cust), *[("1001", r) for r in p.calls_of("1001")])
    await all_down(ctx)


async def case_semi_attended_no_answer(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour("1002", "manual")
    cust = await semi_attended(ctx, "1102", "nobody answers (1102: 8 s Dial timeout)")
    await asyncio.sleep(10.0)
    await end_what_is_left(ctx, ("2000", cust), *[("1001", r) for r in p.calls_of("1001")])
    await all_down(ctx)


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Ctx], Awaitable[None]]
    description: str


CASES = {
    c.name: c
    for c in (
        Case(
            "blind_answered",
            case_blind_answered,
            "2000 calls 1001; 1001 answers, ~1 s later blind-transfers to 1002, which answers "
            "after 0.5 s ringing; 2000 talks to 1002 for 1 s and hangs up.",
        ),
        Case(
            "blind_busy",
            case_blind_busy,
            "2000 calls 1001; 1001 blind-transfers to 1002, which answers 486 Busy Here.",
        ),
        Case(
            "attended",
            case_attended,
            "2000 calls 1001; 1001 holds 2000, calls 1002 (answered), REFERs with Replaces; "
            "2000 talks to 1002 for 1 s and hangs up.",
        ),
        Case(
            "customer_hangup_consult",
            case_customer_hangup_consult,
            "2000 calls 1001; 1001 holds 2000 and calls 1002 (answered); 2000 hangs up while on "
            "hold; 1001 ends the consult. No transfer.",
        ),
        Case(
            "consult_abandoned",
            case_consult_abandoned,
            "2000 calls 1001; 1001 holds 2000 and calls 1002 (answered); 1001 ends the consult, "
            "takes 2000 off hold, they talk 1 s, 2000 hangs up. No transfer.",
        ),
        Case(
            "quick_refer",
            case_quick_refer,
            "2000 calls 1001; 1001 answers and sends a blind REFER to 1002 in the same instant "
            "(the race Asterisk refuses).",
        ),
        Case(
            "two_agents",
            case_two_agents,
            "2000 calls 1001 and 2001 calls 1003 at once; both agents blind-transfer to 1002 at "
            "the same moment; 1002 answers both; the customers hang up.",
        ),
        Case(
            "blind_ring_answer",
            case_blind_ring_answer,
            "2000 calls 1001; 1001 blind-transfers to 1002, which rings 3 s and answers; 2000 "
            "talks to 1002 1 s and hangs up.",
        ),
        Case(
            "blind_ring_reject",
            case_blind_ring_reject,
            "2000 calls 1001; 1001 blind-transfers to 1002, which rings 3 s and declines (603).",
        ),
        Case(
            "blind_ring_busy",
            case_blind_ring_busy,
            "2000 calls 1001; 1001 blind-transfers to 1002, which rings 3 s and answers 486.",
        ),
        Case(
            "blind_no_answer",
            case_blind_no_answer,
            "2000 calls 1001; 1001 blind-transfers to 1102 (Dial PJSIP/1002 for 8 s); 1002 rings "
            "and nobody answers until Dial gives up.",
        ),
        Case(
            "blind_early_media_busy",
            case_blind_early_media_busy,
            "2000 calls 1001; 1001 blind-transfers to 8100 (Progress, 2 s ringback tones, "
            "3 s busy tone, Hangup(17)); nobody answers.",
        ),
        Case(
            "blind_early_media_answer",
            case_blind_early_media_answer,
            "2000 calls 1001; 1001 blind-transfers to 8102 (Progress, 2 s ringback tones, then "
            "Dial PJSIP/1002); 1002 rings 2 s and answers; 2000 talks 1 s and hangs up.",
        ),
        Case(
            "noprogress_busy",
            case_noprogress_busy,
            "2000 calls 1004 (refer_blind_progress=no); 1004 blind-transfers to 1002, which "
            "answers 486 at once.",
        ),
        Case(
            "noprogress_answer",
            case_noprogress_answer,
            "2000 calls 1004 (refer_blind_progress=no); 1004 blind-transfers to 1002, which rings "
            "2 s and answers; 2000 talks 1 s and hangs up.",
        ),
        Case(
            "semi_attended_answer",
            case_semi_attended_answer,
            "2000 calls 1001; 1001 holds 2000, calls 1002, and while 1002 rings REFERs 2000 with "
            "Replaces naming the early consult; 1002 answers 3 s after it started ringing.",
        ),
        Case(
            "semi_attended_reject",
            case_semi_attended_reject,
            "as semi_attended_answer, but 1002 declines (603) 3 s after it started ringing.",
        ),
        Case(
            "semi_attended_no_answer",
            case_semi_attended_no_answer,
            "as semi_attended_answer, but the consult goes to 1102 (Dial PJSIP/1002 for 8 s) and "
            "nobody answers.",
        ),
    )
}


def phone_summary(p: Phones) -> dict[str, Any]:
    legs = []
    seen: dict[str, dict[str, Any]] = {}
    for e in p.events:
        if e.get("ev") != "call_state":
            continue
        leg = seen.get(e["ref"])
        if leg is None:
            leg = {"phone": e["phone"], "ref": e["ref"], "dir": e["dir"], "states": []}
            seen[e["ref"]] = leg
            legs.append(leg)
        leg["call_id"] = e["call_id"] or leg.get("call_id", "")
        leg["remote"] = e["remote"] or leg.get("remote", "")
        if not leg["states"] or leg["states"][-1][0] != e["state"]:
            leg["states"].append([e["state"], e["code"], round(e["t"], 3)])
    xfers = [
        {k: e[k] for k in ("phone", "ref", "code", "reason", "final", "t")}
        for e in p.events
        if e.get("ev") == "xfer_status"
    ]
    media = [
        {k: e[k] for k in ("phone", "ref", "status", "t")}
        for e in p.events
        if e.get("ev") == "media"
    ]
    return {
        "legs": legs,
        "transfer_status": xfers,
        "media": media,
        "target": target_outcome(p, "1002"),
    }


def target_outcome(p: Phones, target: str) -> dict[str, Any]:
    """When the target phone rang, and when (wall clock, as the phone sent it) it answered,
    refused, or stopped ringing unanswered: no evidence may claim success before
    ``answered_at``. One entry per incoming call of ``target``."""
    calls: dict[str, dict[str, Any]] = {}
    for e in p.events:
        if e.get("phone") != target:
            continue
        if e.get("ev") == "call_state" and e.get("dir") == "in":
            c = calls.setdefault(
                e["ref"],
                {
                    "ref": e["ref"],
                    "call_id": e["call_id"],
                    "remote": e["remote"],
                    "ringing_at": None,
                    "answered_at": None,
                    "refused_at": None,
                    "refused_code": None,
                    "ended_unanswered_at": None,
                },
            )
            if e["state"] == "INCOMING" and c["ringing_at"] is None:
                c["ringing_at"] = round(e["t"], 6)
            if (
                e["state"] == "DISCONNECTED"
                and c["answered_at"] is None
                and c["refused_at"] is None
            ):
                c["ended_unanswered_at"] = round(e["t"], 6)
        elif e.get("ev") == "answered" and e.get("ref") in calls:
            c = calls[e["ref"]]
            if e["code"] < 300:
                c["answered_at"] = round(e["t"], 6)
            else:
                c["refused_at"], c["refused_code"] = round(e["t"], 6), e["code"]
    return {"phone": target, "calls": list(calls.values())}


def channel_map(events: list[dict[str, str]], legs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each PJSIP channel of the AMI stream with its SIP Call-ID (the SIPCALLID variable the
    dialplan sets) and the phone leg (ref) with that Call-ID."""
    by_call_id = {leg["call_id"]: leg for leg in legs}
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for e in events:
        if e.get("Event") != "VarSet" or e.get("Variable") != "SIPCALLID":
            continue
        channel = e.get("Channel", "")
        if channel in seen or not e.get("Value"):
            continue
        seen.add(channel)
        leg = by_call_id.get(e["Value"], {})
        out.append(
            {
                "channel": channel,
                "uniqueid": e.get("Uniqueid", ""),
                "linkedid": e.get("Linkedid", ""),
                "call_id": e["Value"],
                "phone": leg.get("phone", ""),
                "ref": leg.get("ref", ""),
            }
        )
    return out


async def settle_hep(hep: HepCollector, quiet: float = 0.6) -> None:
    await hep.settle(quiet=quiet, time_limit=8)


async def record_case(
    case: Case, pbx: RunningAsterisk, hep: HepCollector, workdir: Path, out_ami: Path, out_hep: Path
) -> None:
    await settle_hep(hep)
    hep.clear()
    ami = await AmiRecorder.open(pbx)
    started = time.time()
    phone_dir = workdir / case.name
    ports = {ext: pbx.phone_ports[ext] for ext in PHONES}
    try:
        async with running_phones(ports, pbx.sip, phone_dir) as phones:
            ctx = Ctx(phones, pbx, ami)
            async with asyncio.timeout(60):
                await case.run(ctx)
            summary = phone_summary(phones)
        await asyncio.sleep(0.5)
        await settle_hep(hep)
    finally:
        raw = await ami.close()
    packets = hep.raw
    (out_ami / f"asterisk-{case.name}.ami").write_bytes(raw)
    write_hep_file(out_hep / f"asterisk-{case.name}.hep", packets)
    sidecar = {
        "case": case.name,
        "description": case.description,
        "recorded_at": started,
        "asterisk_version": (pbx.root / ".asterisk-version").read_text().strip(),
        "phones": {
            "customers": {"2000": pbx.phone_ports["2000"], "2001": pbx.phone_ports["2001"]},
            "agents": {e: pbx.phone_ports[e] for e in ("1001", "1003", "1004")},
            "target": {"1002": pbx.phone_ports["1002"]},
        },
        "pbx": {"sip": list(pbx.sip), "hep_capture_id": 4242, "hep_password": pbx.hep_password},
        "steps": ctx.steps,
        "notes": ctx.notes,
        **summary,
    }
    events = ami.events()
    sidecar["channels"] = channel_map(events, summary["legs"])
    (out_ami / f"asterisk-{case.name}.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    print(f"ok   {case.name}: {len(raw)} AMI bytes ({len(events)} events), {len(packets)} HEP")


class RecordingDialogClient(DialogClient):
    """The bridge's own dialog-state client, keeping every datagram it receives."""

    def __init__(self, pbx: RunningAsterisk, received: list[tuple[float, bytes]]) -> None:
        super().__init__(
            "rec-dialog",
            pbx.sip,
            (LOCALHOST, 0),
            pbx.watcher_username,
            pbx.watcher_password,
            lambda events: None,
            domain=LOCALHOST,
        )
        self.received = received

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((time.time(), bytes(data)))
        super().datagram(data, addr)


async def record_dialog_case(
    case: Case, pbx: RunningAsterisk, workdir: Path, out_dialog: Path
) -> None:
    """Play ``case`` again, this time watched by a ``SUBSCRIBE Event: dialog`` watcher on the
    lines of 1001, 1002 and 1004; write ``asterisk22-<case>.json`` (format of
    tests/fixtures/dialog/README.md). A separate run, so the HEP recordings hold no
    SUBSCRIBE/NOTIFY traffic of the watcher."""
    received: list[tuple[float, bytes]] = []
    client = RecordingDialogClient(pbx, received)
    client.set_phones({ext: f"sip:{ext}@{LOCALHOST}" for ext in DIALOG_LINES})
    started = time.time()
    await client.start()
    ami = await AmiRecorder.open(pbx)
    try:
        deadline = time.monotonic() + 5
        while client.health().get("subscribed") != f"{len(DIALOG_LINES)}/{len(DIALOG_LINES)}":
            if time.monotonic() > deadline:
                raise RuntimeError(f"watcher not subscribed: {client.health()}")
            await asyncio.sleep(0.05)
        ports = {ext: pbx.phone_ports[ext] for ext in PHONES}
        async with running_phones(ports, pbx.sip, workdir / f"{case.name}-dialog") as phones:
            ctx = Ctx(phones, pbx, ami)
            async with asyncio.timeout(60):
                await case.run(ctx)
        await asyncio.sleep(1.0)
    finally:
        await ami.close()
        await client.close()
    items: list[tuple[float, dict[str, Any]]] = [
        (at, {"received": data.decode("utf-8", "replace")}) for at, data in received
    ]
    for step in ctx.steps:
        at, _, text = step.partition(" ")
        items.append((float(at), {"step": text}))
    items.sort(key=lambda item: item[0])
    out = [{"at": round(at - started, 3), **item} for at, item in items]
    path = out_dialog / f"asterisk22-{case.name}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    notifies = sum(1 for _, data in received if data.startswith(b"NOTIFY"))
    print(f"ok   {case.name}: dialog {len(received)} datagrams ({notifies} NOTIFY) -> {path.name}")


async def record(
    names: list[str],
    out_ami: Path,
    out_hep: Path,
    workdir: Path,
    dialog: list[str] | None = None,
    out_dialog: Path = DIALOG_OUT,
) -> int:
    settings = AsteriskSettings.fresh(hep_password="rig-hep-secret", ami_secret="rig-ami-secret")
    failed = 0
    async with (
        running_collector(port=settings.hep_port) as hep,
        running_asterisk(settings, workdir) as pbx,
    ):
        for name in names:
            try:
                await record_case(CASES[name], pbx, hep, workdir, out_ami, out_hep)
            except Exception as exc:  # report it and go on with the next case
                failed += 1
                print(f"FAIL {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        for name in dialog or []:
            try:
                await record_dialog_case(CASES[name], pbx, workdir, out_dialog)
            except Exception as exc:
                failed += 1
                print(f"FAIL {name} (dialog): {type(exc).__name__}: {exc}", file=sys.stderr)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--ami-out", type=Path, default=AMI_OUT)
    parser.add_argument("--hep-out", type=Path, default=HEP_OUT)
    parser.add_argument("--logs", type=Path, help="keep phone/Asterisk logs here")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--dialog",
        action="append",
        default=[],
        metavar="CASE",
        help="also record CASE's dialog-info NOTIFYs (a second run; repeat)",
    )
    parser.add_argument("--dialog-out", type=Path, default=DIALOG_OUT)
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES.values():
            print(f"{case.name:26s} {case.description}")
        return 0
    unknown = [c for c in args.cases + args.dialog if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}; see --list")
    names = args.cases or ([] if args.dialog else list(CASES))
    args.ami_out.mkdir(parents=True, exist_ok=True)
    args.hep_out.mkdir(parents=True, exist_ok=True)
    ami_out, hep_out, dialog, dialog_out = args.ami_out, args.hep_out, args.dialog, args.dialog_out
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        workdir = args.logs
        return 1 if asyncio.run(record(names, ami_out, hep_out, workdir, dialog, dialog_out)) else 0
    with tempfile.TemporaryDirectory(prefix="rig-record-asterisk-") as tmp:
        workdir = Path(tmp)
        return 1 if asyncio.run(record(names, ami_out, hep_out, workdir, dialog, dialog_out)) else 0


if __name__ == "__main__":
    sys.exit(main())
