"""The transfer cases a non-PJSIP agent phone plays on the Asterisk rig (``tests/rig/agent.py``
drivers as agent 1001; pjsua2 customer 2000 and target 1002), shared by the recording script
``scripts/rig/record_clients.py`` and the live tests ``tests/integration/test_asterisk_clients.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from tests.rig.agent import AgentPhone
from tests.rig.baresip import running_baresip
from tests.rig.linphone import running_linphone
from tests.rig.phones import Phones

TALK = 1.0  # seconds a human waits between answering and transferring
Client = Callable[[str, int, tuple[str, int], Path], AbstractAsyncContextManager[AgentPhone]]
CLIENTS: dict[str, Client] = {"linphone": running_linphone, "baresip": running_baresip}

AGENT, CUSTOMER, TARGET = "1001", "2000", "1002"


@dataclass
class Ctx:
    phones: Phones  # the pjsua2 customer and target
    agent: AgentPhone  # the client under test, as 1001
    steps: list[str] = field(default_factory=list)
    # Awaited once the customer's call is up (a live test opens the desktop's session there).
    connected: Callable[[], Awaitable[None]] | None = None

    def step(self, text: str) -> None:
        self.steps.append(f"{time.time():.3f} {text}")


async def connect(ctx: Ctx) -> str:
    """The customer calls 1001, which answers after ringing briefly; the customer's ref."""
    p, a = ctx.phones, ctx.agent
    out = await p.call(CUSTOMER, AGENT)
    ctx.step(f"{CUSTOMER} calls {AGENT}")
    await a.wait_state("incoming", CUSTOMER)
    await asyncio.sleep(0.3)
    await a.answer(CUSTOMER)
    ctx.step(f"{AGENT} ({a.name}) answers")
    await a.wait_state("established", CUSTOMER)
    await p.wait_state(CUSTOMER, "CONFIRMED", ref=out["ref"])
    if ctx.connected is not None:
        await ctx.connected()
    return str(out["ref"])


async def consult(ctx: Ctx) -> None:
    """1001 holds the customer and calls 1002 (auto-answer after 0.5 s)."""
    a = ctx.agent
    await a.hold(CUSTOMER)
    ctx.step(f"{AGENT} puts the customer on hold")
    await asyncio.sleep(0.3)
    since = len(a.events)
    await a.call(TARGET)
    ctx.step(f"{AGENT} calls {TARGET} to consult")
    await a.wait_state("established", TARGET, since=since)
    ctx.step(f"{TARGET} answers the consult call")


async def all_down(ctx: Ctx, time_limit: float = 10.0) -> None:
    p, a = ctx.phones, ctx.agent
    deadline = time.monotonic() + time_limit
    while True:
        live = [
            ref
            for phone in p.ports
            for ref, e in p.calls_of(phone).items()
            if e["state"] != "DISCONNECTED"
        ]
        live += [ref for ref in {e["ref"] for e in a.events} if a.state_of(ref) in LIVE]
        if not live:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"calls still up: {live}")
        await asyncio.sleep(0.05)


LIVE = ("incoming", "ringing", "established", "paused", "resuming", "streams")


async def hang_up_left(ctx: Ctx, cust: str) -> None:
    if ctx.phones.state_of(cust) != "DISCONNECTED" and await ctx.phones.hangup(CUSTOMER, cust):
        ctx.step(f"{CUSTOMER} hangs up")
    for ref in {e["ref"] for e in ctx.agent.events}:
        if ctx.agent.state_of(ref) in LIVE:
            await ctx.agent.hangup(ref)
            ctx.step(f"{AGENT} hangs up its call with {ref}")


async def case_blind_answered(ctx: Ctx) -> None:
    p = ctx.phones
    await p.behaviour(TARGET, "auto", delay_ms=500)
    cust = await connect(ctx)
    await asyncio.sleep(TALK)
    await ctx.agent.blind_transfer(CUSTOMER, TARGET)
    ctx.step(f"{AGENT} blind-transfers the customer to {TARGET} (REFER)")
    await p.wait_state(TARGET, "CONFIRMED")
    ctx.step(f"{TARGET} answered after 0.5 s ringing")
    await ctx.agent.wait_state("closed", CUSTOMER)
    ctx.step(f"{AGENT}'s call with the customer ends")
    await asyncio.sleep(TALK)
    await hang_up_left(ctx, cust)
    await all_down(ctx)


async def case_blind_busy(ctx: Ctx) -> None:
    await ctx.phones.behaviour(TARGET, "busy")
    cust = await connect(ctx)
    await asyncio.sleep(TALK)
    await ctx.agent.blind_transfer(CUSTOMER, TARGET)
    ctx.step(f"{AGENT} blind-transfers the customer to {TARGET}, which answers 486 Busy Here")
    await asyncio.sleep(2.0)
    await hang_up_left(ctx, cust)
    await all_down(ctx)


async def case_attended(ctx: Ctx) -> None:
    await ctx.phones.behaviour(TARGET, "auto", delay_ms=500)
    cust = await connect(ctx)
    await asyncio.sleep(TALK)
    await consult(ctx)
    await asyncio.sleep(TALK)
    await ctx.agent.attended_transfer(CUSTOMER, TARGET)
    ctx.step(f"{AGENT} transfers (REFER with Replaces naming the consult call)")
    await ctx.agent.wait_state("closed", CUSTOMER)
    ctx.step(f"{AGENT}'s call with the customer ends")
    await asyncio.sleep(TALK)
    await hang_up_left(ctx, cust)
    await all_down(ctx)


async def case_consult_abandoned(ctx: Ctx) -> None:
    await ctx.phones.behaviour(TARGET, "auto", delay_ms=500)
    cust = await connect(ctx)
    await asyncio.sleep(TALK)
    await consult(ctx)
    await asyncio.sleep(0.5)
    await ctx.agent.hangup(TARGET)
    ctx.step(f"{AGENT} ends the consult call without transferring")
    await ctx.agent.wait_state("closed", TARGET)
    await ctx.agent.resume(CUSTOMER)
    ctx.step(f"{AGENT} takes the customer off hold")
    await asyncio.sleep(TALK)
    await hang_up_left(ctx, cust)
    await all_down(ctx)


async def case_customer_hangup_consult(ctx: Ctx) -> None:
    await ctx.phones.behaviour(TARGET, "auto", delay_ms=500)
    cust = await connect(ctx)
    await asyncio.sleep(TALK)
    await consult(ctx)
    await asyncio.sleep(0.5)
    await ctx.phones.hangup(CUSTOMER, cust)
    ctx.step(f"{CUSTOMER} hangs up while on hold during the consult")
    await ctx.agent.wait_state("closed", CUSTOMER)
    await asyncio.sleep(0.5)
    await ctx.agent.hangup(TARGET)
    ctx.step(f"{AGENT} ends the consult call; no transfer")
    await all_down(ctx)


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Ctx], Awaitable[None]]
    description: str
    attended: bool = False  # needs a client that sends REFER with Replaces


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
            "2000 calls 1001; 1001 blind-transfers to 1002, which answers 486 Busy Here; what "
            "is left is hung up 2 s later.",
        ),
        Case(
            "attended",
            case_attended,
            "2000 calls 1001; 1001 holds 2000, calls 1002 (answered), REFERs with Replaces; "
            "2000 talks to 1002 for 1 s and hangs up.",
            attended=True,
        ),
        Case(
            "consult_abandoned",
            case_consult_abandoned,
            "2000 calls 1001; 1001 holds 2000 and calls 1002 (answered); 1001 ends the consult, "
            "takes 2000 off hold, they talk 1 s, 2000 hangs up. No transfer.",
        ),
        Case(
            "customer_hangup_consult",
            case_customer_hangup_consult,
            "2000 calls 1001; 1001 holds 2000 and calls 1002 (answered); 2000 hangs up while on "
            "hold; 1001 ends the consult. No transfer.",
        ),
    )
}


def cases_for(client: str) -> list[str]:
    attended = client == "linphone"
    return [name for name, case in CASES.items() if attended or not case.attended]
