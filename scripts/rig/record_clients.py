#!/usr/bin/env python3
"""Record real Asterisk 22 transfers made by non-PJSIP agent phones, for replay.

The agent 1001 is linphone (``linphone-daemon``, liblinphone 5.1 / belle-sip) or baresip 1.0
(libre), from Debian's packages (``scripts/rig/install.sh``); the customer 2000 and the target
1002 are pjsua2 phones (``tests/rig/softphone.py``). Per client and case, three files:

- ``tests/fixtures/hep/<client>-<case>.hep``: every HEPv3 packet Asterisk sent (capture format
  of ``bridge/hep/capture.py``; RTCP reports, HEP type 5, included);
- ``tests/fixtures/ami/<client>-<case>.ami``: the raw bytes of one AMI connection;
- ``tests/fixtures/ami/<client>-<case>.json``: the steps taken, the agent client's own call
  states, the pjsua2 phones' legs (SIP Call-IDs) and when the target answered.

    python scripts/rig/record_clients.py                       # every client and case
    python scripts/rig/record_clients.py baresip blind_busy    # one client, some cases
    python scripts/rig/record_clients.py --list

Cases: blind_answered, blind_busy, attended (linphone only: baresip 1.0 cannot send a REFER
with Replaces), consult_abandoned, customer_hangup_consult. Needs root, the Asterisk root
(scripts/asterisk/build-root.sh), pjsua2, linphone-cli and baresip (scripts/rig/install.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for extra in (REPO, REPO / "scripts" / "rig"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from record_asterisk import AmiRecorder, channel_map, phone_summary  # noqa: E402

from tests.rig.agent import AgentPhone  # noqa: E402
from tests.rig.asterisk import AsteriskSettings, RunningAsterisk, running_asterisk  # noqa: E402
from tests.rig.baresip import running_baresip  # noqa: E402
from tests.rig.collector import HepCollector, running_collector  # noqa: E402
from tests.rig.hepfile import write_hep_file  # noqa: E402
from tests.rig.linphone import running_linphone  # noqa: E402
from tests.rig.phones import Phones, running_phones  # noqa: E402

AMI_OUT = REPO / "tests" / "fixtures" / "ami"
HEP_OUT = REPO / "tests" / "fixtures" / "hep"
TALK = 1.0  # seconds a human waits between answering and transferring
AGENT, CUSTOMER, TARGET = "1001", "2000", "1002"

Client = Callable[[str, int, tuple[str, int], Path], AbstractAsyncContextManager[AgentPhone]]
CLIENTS: dict[str, Client] = {"linphone": running_linphone, "baresip": running_baresip}


@dataclass
class Ctx:
    phones: Phones  # the pjsua2 customer and target
    agent: AgentPhone  # the client under test, as 1001
    steps: list[str] = field(default_factory=list)

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


async def record_case(
    client: str, case: Case, pbx: RunningAsterisk, hep: HepCollector, workdir: Path
) -> None:
    await hep.settle(quiet=0.6, time_limit=8)
    hep.clear()
    ami = await AmiRecorder.open(pbx)
    started = time.time()
    folder = workdir / f"{client}-{case.name}"
    ports = {ext: pbx.phone_ports[ext] for ext in (CUSTOMER, TARGET)}
    agent_port = pbx.phone_ports[AGENT]
    try:
        async with (
            running_phones(ports, pbx.sip, folder) as phones,
            CLIENTS[client](AGENT, agent_port, pbx.sip, folder) as agent,
        ):
            ctx = Ctx(phones, agent)
            async with asyncio.timeout(60):
                await case.run(ctx)
            summary = phone_summary(phones)
            agent_events = [
                {"ref": e["ref"], "state": e["state"], "t": round(e["t"], 3)} for e in agent.events
            ]
        await asyncio.sleep(0.5)
        await hep.settle(quiet=0.6, time_limit=8)
    finally:
        raw = await ami.close()
    name = f"{client}-{case.name}"
    (AMI_OUT / f"{name}.ami").write_bytes(raw)
    write_hep_file(HEP_OUT / f"{name}.hep", hep.raw)
    sidecar = {
        "client": client,
        "case": case.name,
        "description": case.description,
        "recorded_at": started,
        "asterisk_version": (pbx.root / ".asterisk-version").read_text().strip(),
        "phones": {"agent": {AGENT: agent_port}, **{k: v for k, v in ports.items()}},
        "steps": ctx.steps,
        "agent_events": agent_events,
        **summary,
        "channels": channel_map(ami.events(), summary["legs"]),
    }
    (AMI_OUT / f"{name}.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    print(f"ok   {name}: {len(raw)} AMI bytes, {len(hep.raw)} HEP packets")


async def record(jobs: list[tuple[str, str]], workdir: Path) -> int:
    settings = AsteriskSettings.fresh(hep_password="rig-hep-secret", ami_secret="rig-ami-secret")
    failed = 0
    async with (
        running_collector(port=settings.hep_port) as hep,
        running_asterisk(settings, workdir) as pbx,
    ):
        for client, name in jobs:
            try:
                await record_case(client, CASES[name], pbx, hep, workdir)
            except Exception as exc:  # report it and go on with the next case
                failed += 1
                print(f"FAIL {client}-{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", nargs="?", choices=sorted(CLIENTS), help="default: both")
    parser.add_argument("cases", nargs="*", help="case names (default: all the client can do)")
    parser.add_argument("--logs", type=Path, help="keep the phones' and clients' logs here")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES.values():
            print(f"{case.name:26s} {case.description}")
        return 0
    clients = [args.client] if args.client else sorted(CLIENTS)
    jobs = [(c, n) for c in clients for n in (args.cases or cases_for(c)) if n in cases_for(c)]
    unknown = [n for n in args.cases if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}; see --list")
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        return 1 if asyncio.run(record(jobs, args.logs)) else 0
    with tempfile.TemporaryDirectory(prefix="rig-record-clients-") as tmp:
        return 1 if asyncio.run(record(jobs, Path(tmp))) else 0


if __name__ == "__main__":
    sys.exit(main())
