"""`transfer-bridge qa SCENARIO`: play a transfer with SIPp phones against a running Asterisk and
report the bridge's verdict next to SIPp's.

The command opens a customer session for the agent on the bridge (customer number = the
customer's extension), starts the SIPp roles of the scenario (the target and the agent's phone
first, then the customer who calls the agent's extension), waits for SIPp to finish and for the
session's transfer to settle, prints both verdicts and ends the session (so the agent is not left
blocked). Exit code 0: SIPp and the bridge both show the expected outcome; 1: they do not;
2: the run could not start (bridge unreachable, token refused, agent unknown, sipp missing,
PBX silent, a phone port taken).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from desktop_api.qa.report import BridgeClient, bridge_view, judge, render_text
from desktop_api.qa.scenarios import (
    EXIT_FAILED,
    EXIT_PASSED,
    EXIT_SETUP,
    REPO_SCENARIOS,
    SCENARIOS,
    SCENARIOS_ENV,
    Phone,
    QaError,
    QaOptions,
)
from desktop_api.qa.sipp import probe_pbx, run_roles


async def run_qa(opts: QaOptions) -> dict[str, Any]:
    """One QA run; the report (see `render_text`). Raises `QaError` when it cannot run."""
    warnings: list[str] = []
    if not (opts.scenarios_dir / opts.scenario.roles[0].scenario).exists():
        raise QaError(f"no SIPp scenarios in {opts.scenarios_dir} (use --scenarios DIR)")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as http:
        bridge = BridgeClient(http, opts.bridge, opts.token)
        agent = await bridge.agent(opts.agent_id)
        uri = str((agent.get("phone") or {}).get("sip_uri", ""))
        if f":{opts.phones['agent'].ext}@" not in uri:
            warnings.append(
                f"agent {opts.agent_id}'s phone is {uri!r}, not extension "
                f"{opts.phones['agent'].ext}: the bridge may not recognise its calls"
            )
        await asyncio.to_thread(probe_pbx, opts.pbx, opts.local_ip)
        session_id = f"qa-{opts.scenario.name}-{int(time.time() * 1000)}"
        session = await bridge.open_session(session_id, opts.agent_id, opts.phones["customer"].ext)
        try:
            roles = await run_roles(opts)
            session = await bridge.settled(
                session_id, session["version"], time.monotonic() + opts.settle
            )
        finally:
            if not opts.keep_session:
                state = (session.get("transfer") or {}).get("state")
                await bridge.end(session_id, f"qa {opts.scenario.name}: transfer {state}")
    view = bridge_view(session)
    verdicts = judge(opts.scenario, roles, view)
    return {
        "scenario": opts.scenario.name,
        "expected": {
            "transfer_state": opts.scenario.expected_state,
            "agent_outcome": opts.scenario.agent_expect,
        },
        "pbx": f"{opts.pbx[0]}:{opts.pbx[1]}",
        "bridge": opts.bridge,
        "session_id": session_id,
        "sipp": [{**vars(r), "verdict": "passed" if r.passed else "failed"} for r in roles],
        "bridge_verdict": view,
        "sipp_agrees": verdicts["sipp"],
        "bridge_agrees": verdicts["bridge"],
        "passed": verdicts["passed"],
        "warnings": warnings,
        "workdir": str(opts.workdir),
    }


# --- command line ------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Register `qa` on the CLI's subparsers."""
    qa = sub.add_parser(
        "qa",
        help="play a transfer with SIPp phones against Asterisk; compare the bridge's verdict",
        description="Exit 0: SIPp and the bridge both show the expected outcome; "
        "1: they do not; 2: the run could not start.",
    )
    qa.add_argument("scenario", choices=sorted(SCENARIOS))
    qa.add_argument("--pbx", default="127.0.0.1:5070", help="Asterisk's SIP host:port (UDP)")
    qa.add_argument("--bridge", default="http://127.0.0.1:8080", help="the bridge's base URL")
    qa.add_argument("--token", default=os.environ.get("TRANSFER_BRIDGE_QA_TOKEN"),
                    help="an account token (or env TRANSFER_BRIDGE_QA_TOKEN)")  # fmt: skip
    qa.add_argument("--agent", required=True, help="the agent id on the bridge (phone = agent ext)")
    for name, ext, port in (("agent", "1001", 5081), ("target", "1002", 5082),
                            ("customer", "2000", 5084)):  # fmt: skip
        qa.add_argument(f"--{name}-ext", default=ext, help=f"default {ext}")
        qa.add_argument(f"--{name}-port", type=int, default=port,
                        help=f"UDP port the PBX calls {name} on (default {port})")  # fmt: skip
    qa.add_argument("--local-ip", help="address SIPp binds (default: towards the PBX)")
    qa.add_argument("--timeout", type=float, default=30.0, help="seconds for SIPp (default 30)")
    qa.add_argument("--sipp", default="sipp", help="the sipp binary")
    qa.add_argument("--scenarios", type=Path,
                    default=Path(os.environ.get(SCENARIOS_ENV, REPO_SCENARIOS)),
                    help=f"folder of the Asterisk scenarios (env {SCENARIOS_ENV})")  # fmt: skip
    qa.add_argument("--workdir", type=Path, help="where SIPp logs go (default: a new temp dir)")
    qa.add_argument("--settle", type=float, default=10.0,
                    help="seconds to wait for the bridge's verdict (default 10)")  # fmt: skip
    qa.add_argument("--keep-session", action="store_true", help="do not end the QA session")
    qa.add_argument("--json", action="store_true", help="print the report as JSON")


def options_from(args: argparse.Namespace) -> QaOptions:
    """Validate the parsed arguments; `QaError` names what is wrong."""
    if not args.token:
        raise QaError("--token is required (an account token of the agent's account)")
    host, _, port = args.pbx.rpartition(":")
    if not host or not port.isdigit():
        raise QaError(f"--pbx: expected host:port, got {args.pbx!r}")
    try:
        pbx = (socket.gethostbyname(host), int(port))
    except OSError:
        raise QaError(f"--pbx: cannot resolve {host!r}") from None
    sipp = shutil.which(args.sipp)
    if sipp is None:
        raise QaError(f"{args.sipp!r} not found: install SIPp (Debian package sip-tester)")
    local_ip = args.local_ip or _local_ip_towards(pbx)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"qa-{args.scenario}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    phones = {
        name: Phone(getattr(args, f"{name}_ext"), getattr(args, f"{name}_port"))
        for name in ("agent", "target", "customer")
    }
    return QaOptions(
        scenario=SCENARIOS[args.scenario], pbx=pbx, bridge=args.bridge, token=args.token,
        agent_id=args.agent, phones=phones, timeout=args.timeout, local_ip=local_ip, sipp=sipp,
        scenarios_dir=args.scenarios, workdir=workdir, keep_session=args.keep_session,
        settle=args.settle,
    )  # fmt: skip


def _local_ip_towards(pbx: tuple[str, int]) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(pbx)  # no packet is sent: this only picks the route
        return str(s.getsockname()[0])


def main(args: argparse.Namespace) -> int:
    """Run `qa` from parsed arguments; the exit code."""
    try:
        report = asyncio.run(run_qa(options_from(args)))
    except QaError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"transfer-bridge qa: {exc}", file=sys.stderr)
        return EXIT_SETUP
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    return EXIT_PASSED if report["passed"] else EXIT_FAILED
