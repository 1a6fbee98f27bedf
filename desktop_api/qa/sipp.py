"""Running SIPp phones for `transfer-bridge qa`: argv, the PBX probe, ports, processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import time
from pathlib import Path
from typing import BinaryIO

from desktop_api.qa.scenarios import OUTCOME_RE, QaError, QaOptions, Role, RoleResult


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
