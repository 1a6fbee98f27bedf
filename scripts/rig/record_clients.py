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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for extra in (REPO, REPO / "scripts" / "rig"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from record_asterisk import AmiRecorder, channel_map, phone_summary  # noqa: E402

from tests.rig.asterisk import AsteriskSettings, RunningAsterisk, running_asterisk  # noqa: E402
from tests.rig.client_cases import (  # noqa: E402
    AGENT,
    CASES,
    CLIENTS,
    CUSTOMER,
    TARGET,
    Case,
    Ctx,
    cases_for,
)
from tests.rig.collector import HepCollector, running_collector  # noqa: E402
from tests.rig.hepfile import write_hep_file  # noqa: E402
from tests.rig.phones import running_phones  # noqa: E402

AMI_OUT = REPO / "tests" / "fixtures" / "ami"
HEP_OUT = REPO / "tests" / "fixtures" / "hep"


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
