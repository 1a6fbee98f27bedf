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
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

EXIT_PASSED, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
FINAL_STATES = ("transferred", "failed")
REPO_SCENARIOS = Path(__file__).resolve().parents[1] / "sipp_scenarios" / "asterisk"
SCENARIOS_ENV = "TRANSFER_BRIDGE_SIPP_SCENARIOS"
OUTCOME_RE = re.compile(r"outcome=(\S+) final_sipfrag=(.*?) expect=(\S*)\s*$", re.M)


class QaError(Exception):
    """The run could not start or could not reach a component: exit code 2, this message."""


@dataclass(frozen=True)
class Role:
    """One SIPp phone of a scenario: which phone it plays and with which scenario file."""

    name: str  # "agent", "target" or "customer": the phone it uses
    scenario: str
    uac: bool = False


@dataclass(frozen=True)
class Scenario:
    """What QA can run, and the outcome both SIPp and the bridge must show."""

    name: str
    description: str
    roles: tuple[Role, ...]
    expected_state: str  # the session's transfer.state
    agent_expect: str  # the agent scenario's own verdict: success or failure


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "blind",
            "the agent transfers blind to the target, who answers",
            (
                Role("target", "target_answers.xml"),
                Role("agent", "agent_blind.xml"),
                Role("customer", "customer_calls.xml", uac=True),
            ),
            "transferred",
            "success",
        ),
        Scenario(
            "blind-busy",
            "the agent transfers blind to the target, who is busy (486)",
            (
                Role("target", "target_busy.xml"),
                Role("agent", "agent_blind.xml"),
                Role("customer", "customer_calls.xml", uac=True),
            ),
            "failed",
            "failure",
        ),
        Scenario(
            "attended",
            "the agent holds the customer, consults the target, then transfers (Replaces)",
            (
                Role("target", "target_answers.xml"),
                Role("agent", "agent_attended.xml"),
                Role("customer", "customer_calls.xml", uac=True),
            ),
            "transferred",
            "success",
        ),
    )
}


@dataclass(frozen=True)
class Phone:
    """A phone's extension on the PBX and the UDP port its SIPp listens on."""

    ext: str
    port: int


@dataclass(frozen=True)
class QaOptions:
    """Everything one run needs (see `add_parser` for the command line)."""

    scenario: Scenario
    pbx: tuple[str, int]
    bridge: str
    token: str
    agent_id: str
    phones: dict[str, Phone]
    timeout: float = 30.0
    local_ip: str = "127.0.0.1"
    sipp: str = "sipp"
    scenarios_dir: Path = REPO_SCENARIOS
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    keep_session: bool = False
    settle: float = 10.0  # seconds to wait for the bridge's verdict once SIPp is done


@dataclass
class RoleResult:
    """How one SIPp phone ended."""

    role: str
    ext: str
    port: int
    scenario: str
    exit_code: int | None
    outcome: str | None = None
    final_sipfrag: str | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def sipp_argv(opts: QaOptions, role: Role, media_port: int) -> list[str]:
    """The sipp command line for one role (pure; logs go to ``opts.workdir``)."""
    phone = opts.phones[role.name]
    work = opts.workdir
    argv = [
        opts.sipp,
        f"{opts.pbx[0]}:{opts.pbx[1]}",
        "-sf", str(opts.scenarios_dir / role.scenario),
        "-i", opts.local_ip,
        "-p", str(phone.port),
        "-bind_local",
        "-mi", opts.local_ip,
        "-mp", str(media_port),
        "-ci", opts.local_ip,
        "-m", "1",
        "-nostdin",
        "-timeout", f"{max(1, int(opts.timeout))}s",
        "-timeout_error",
        "-cid_str", f"qa-{role.name}-%u-%p",
        "-trace_msg", "-message_file", str(work / f"{role.name}.messages.log"),
        "-trace_err", "-error_file", str(work / f"{role.name}.errors.log"),
        "-trace_logs", "-log_file", str(work / f"{role.name}.actions.log"),
    ]  # fmt: skip
    if role.name == "agent":
        argv += ["-key", "target", opts.phones["target"].ext]
        argv += ["-set", "expect", opts.scenario.agent_expect]
    if role.uac:
        argv += ["-s", opts.phones["agent"].ext]
    return argv


def parse_outcome(text: str) -> tuple[str, str] | None:
    """(outcome, final sipfrag) from an agent scenario's log line, or None."""
    found = OUTCOME_RE.findall(text)
    if not found:
        return None
    outcome, frag, _ = found[-1]
    return outcome, frag.strip()


def bridge_view(session: dict[str, Any]) -> dict[str, Any]:
    """The parts of a session that make the bridge's verdict."""
    transfer = session.get("transfer") or {}
    phone = transfer.get("phone") or {}
    return {
        "status": session.get("status"),
        "transfer_state": transfer.get("state"),
        "kind": transfer.get("kind"),
        "target": transfer.get("target"),
        "confirmed_by": transfer.get("confirmed_by"),
        "phone_refer": phone.get("refer"),
        "last_sipfrag": phone.get("last_sipfrag"),
        "binding": (session.get("call") or {}).get("binding"),
        "conflict": transfer.get("conflict"),
    }


def judge(scenario: Scenario, roles: list[RoleResult], bridge: dict[str, Any]) -> dict[str, bool]:
    """Whether SIPp and the bridge each show the scenario's expected outcome."""
    agent = next((r for r in roles if r.role == "agent"), None)
    sipp_ok = bool(roles) and all(r.passed for r in roles)
    sipp_ok = sipp_ok and agent is not None and agent.outcome == scenario.agent_expect
    bridge_ok = bridge.get("transfer_state") == scenario.expected_state
    return {"sipp": sipp_ok, "bridge": bridge_ok, "passed": sipp_ok and bridge_ok}


def render_text(report: dict[str, Any]) -> str:
    """The report for a person."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [
        f"transfer-bridge qa {report['scenario']}: {verdict} "
        f"(expected transfer {report['expected']['transfer_state']})",
        f"  SIPp against {report['pbx']}: {_agrees(report['sipp_agrees'])}",
    ]
    for r in report["sipp"]:
        extra = ""
        if r["outcome"]:
            extra = f"  outcome={r['outcome']} final_sipfrag={r['final_sipfrag']!r}"
        error = f"  error: {r['error']}" if r["error"] else ""
        lines.append(
            f"    {r['role']:<8} {r['ext']:>5} port {r['port']:<5} {r['scenario']:<20} "
            f"exit {r['exit_code']}  {r['verdict']}{extra}{error}"
        )
    b = report["bridge_verdict"]
    lines += [
        f"  bridge {report['bridge']} session {report['session_id']}: "
        f"{_agrees(report['bridge_agrees'])}",
        f"    transfer.state={b['transfer_state']} kind={b['kind']} target={b['target']} "
        f"confirmed_by={b['confirmed_by']}",
        f"    phone.refer={b['phone_refer']} last_sipfrag={b['last_sipfrag']!r} "
        f"status={b['status']} binding={b['binding']}",
    ]
    lines += [f"  warning: {w}" for w in report["warnings"]]
    lines.append(f"  SIPp logs: {report['workdir']}")
    return "\n".join(lines)


def _agrees(ok: bool) -> str:
    return "as expected" if ok else "NOT as expected"


# --- I/O: the bridge, the PBX, SIPp -------------------------------------------------------------


class BridgeClient:
    """The few desktop API calls the QA run makes, with errors turned into `QaError`."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            async with self.http.request(
                method, self.base + path, json=body, headers=self.headers
            ) as resp:
                try:
                    return resp.status, await resp.json(content_type=None)
                except ValueError:
                    return resp.status, None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise QaError(f"bridge unreachable at {self.base}: {reason}") from None

    async def agent(self, agent_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/v1/agents/{agent_id}")
        if status == 401:
            raise QaError(f"the bridge at {self.base} refused the token (401 unauthorized)")
        if status == 404:
            raise QaError(f"agent {agent_id!r} is unknown to the bridge (404): PUT it first")
        if status != 200:
            raise QaError(f"GET /v1/agents/{agent_id} answered {status}: {_error(body)}")
        return body  # type: ignore[no-any-return]

    async def open_session(self, session_id: str, agent_id: str, number: str) -> dict[str, Any]:
        body = {"id": session_id, "agent_id": agent_id, "customer": {"number": number}}
        status, reply = await self.call("POST", "/v1/sessions", body)
        if status != 201:
            raise QaError(f"cannot open a session for {agent_id!r} ({status}): {_error(reply)}")
        return reply  # type: ignore[no-any-return]

    async def settled(self, session_id: str, version: int, deadline: float) -> dict[str, Any]:
        """Long-poll the session until its transfer is final or ``deadline`` (monotonic)."""
        session: dict[str, Any] = {}
        while True:
            left = int(deadline - time.monotonic())
            path = f"/v1/sessions/{session_id}"
            if left >= 1:
                path += f"?wait={min(left, 60)}&version={version}"
            status, body = await self.call("GET", path)
            if status != 200:
                raise QaError(f"GET /v1/sessions/{session_id} answered {status}: {_error(body)}")
            session, version = body, body["version"]
            if (body.get("transfer") or {}).get("state") in FINAL_STATES or left < 1:
                return session

    async def end(self, session_id: str, result: str) -> None:
        await self.call("POST", f"/v1/sessions/{session_id}/end", {"result": result})


def _error(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{body['error'].get('code')}: {body['error'].get('message')}"
    return repr(body)


def probe_pbx(pbx: tuple[str, int], local_ip: str, within: float = 2.0) -> None:
    """Send SIP OPTIONS from an ephemeral port; any SIP answer means the PBX listens."""
    branch = f"z9hG4bK-qa-{random.getrandbits(48):x}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((local_ip, 0))
        port = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:{pbx[0]}:{pbx[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local_ip}:{port};rport;branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:qa-probe@{local_ip}>;tag={branch[-8:]}\r\n"
            f"To: <sip:{pbx[0]}:{pbx[1]}>\r\n"
            f"Call-ID: {branch}@{local_ip}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        s.settimeout(within)
        try:
            s.sendto(msg.encode(), pbx)
            data = s.recv(65535)
        except OSError as exc:  # timeout, ICMP port unreachable (ECONNREFUSED), no route
            raise QaError(
                f"the PBX at {pbx[0]}:{pbx[1]} does not answer SIP OPTIONS "
                f"({exc.strerror or type(exc).__name__}): is Asterisk running?"
            ) from None
    if not data.startswith(b"SIP/2.0 "):
        raise QaError(f"the PBX at {pbx[0]}:{pbx[1]} answered something that is not SIP")


def free_port_block(host: str, size: int = 4) -> int:
    """The first (even) of ``size`` consecutive free UDP ports, for SIPp's media sockets."""
    for _ in range(200):
        first = random.randrange(20000, 32000 - size, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(first, first + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        else:
            return first
        finally:
            for s in socks:
                s.close()
    raise QaError("no block of free UDP ports for SIPp's media")


def udp_bound(host: str, port: int) -> bool:
    """True when a UDP socket is bound to host:port (Linux /proc/net/udp)."""
    want = "".join(f"{int(b):02X}" for b in reversed(host.split(".")))
    wanted = {f"{want}:{port:04X}", f"00000000:{port:04X}"}
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: SIPp binds within milliseconds anyway
    return any(len(p := line.split()) > 1 and p[1] in wanted for line in lines)


def _open_log(path: Path) -> BinaryIO:
    return open(path, "wb")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def run_roles(opts: QaOptions) -> list[RoleResult]:
    """Start the UAS roles, wait until each listens, start the UAC; wait for all to end."""
    procs: dict[str, asyncio.subprocess.Process] = {}
    ordered = [r for r in opts.scenario.roles if not r.uac] + [
        r for r in opts.scenario.roles if r.uac
    ]
    try:
        for role in ordered:
            argv = sipp_argv(opts, role, free_port_block(opts.local_ip))
            with _open_log(opts.workdir / f"{role.name}.log") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            procs[role.name] = proc
            deadline = time.monotonic() + 5
            port = opts.phones[role.name].port
            while proc.returncode is None and not udp_bound(opts.local_ip, port):
                if time.monotonic() > deadline:
                    raise QaError(f"sipp {role.name} did not bind udp {opts.local_ip}:{port}")
                await asyncio.sleep(0.02)
            if proc.returncode is not None and proc.returncode != 0:
                raise QaError(
                    f"sipp {role.name} exited at once (exit {proc.returncode}) on port {port}: "
                    f"{_tail(opts.workdir, role.name)}"
                )
        waits = [asyncio.wait_for(p.wait(), opts.timeout + 10) for p in procs.values()]
        codes = await asyncio.gather(*waits, return_exceptions=True)
    finally:
        await asyncio.gather(*(_stop(p) for p in procs.values()))
    results = []
    for role, code in zip(ordered, codes, strict=True):
        phone = opts.phones[role.name]
        result = RoleResult(role.name, phone.ext, phone.port, role.scenario, None)
        if isinstance(code, int):
            result.exit_code = code
        else:
            result.error = f"did not finish within {opts.timeout + 10:.0f} s"
        if code != 0:
            result.error = result.error or _tail(opts.workdir, role.name)
        actions = opts.workdir / f"{role.name}.actions.log"
        if actions.exists() and (found := parse_outcome(actions.read_text(errors="replace"))):
            result.outcome, result.final_sipfrag = found
        results.append(result)
    return results


def _tail(workdir: Path, role: str, chars: int = 400) -> str:
    for name in (f"{role}.errors.log", f"{role}.log"):
        path = workdir / name
        if path.exists() and path.stat().st_size:
            text = path.read_text(errors="replace").strip()
            return " ".join(text[-chars:].split())
    return "no SIPp output"


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
