"""Run one transfer case through the real rig and return what the HEP collector received.

collector (UDP, free port) <- HEPv3 - Kamailio (record-routing proxy, free port)
                                          ^ SIP over UDP, all on 127.0.0.1
                    SIPp customer / agent / target (one process each, free ports)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tests.rig.cases import CASES, Case
from tests.rig.collector import Datagram, HepCollector, running_collector
from tests.rig.kamailio import KamailioSettings, kamailio_binary, running_kamailio
from tests.rig.procs import (
    LOCALHOST,
    ManagedProcess,
    ProcessFailed,
    RigStartError,
    free_udp_ports,
    udp_port_bound,
    wait_until,
)
from tests.rig.sipp import Role, sipp_argv, sipp_binary, sipp_process

REQUIRED_ENV = "TRANSFER_BRIDGE_RIG_REQUIRED"


class RigFailure(RuntimeError):
    """A case did not complete: a SIPp role failed or something overran its time."""


def missing_binaries() -> list[str]:
    """Names of the rig's binaries that are not installed."""
    missing = []
    if kamailio_binary() is None:
        missing.append("kamailio")
    if sipp_binary() is None:
        missing.append("sipp")
    return missing


def rig_required() -> bool:
    return os.environ.get(REQUIRED_ENV, "").strip() not in ("", "0", "false", "no")


@dataclass
class CaseRun:
    case: Case
    packets: list[Datagram]
    kamailio: KamailioSettings
    ports: dict[str, int]
    exit_codes: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0


def _describe(processes: dict[str, ManagedProcess], workdir: Path) -> str:
    parts = []
    for name, proc in processes.items():
        parts.append(f"--- {proc.name} exit={proc.exit_code}")
        err = workdir / f"{name}.errors.log"
        if err.exists() and err.stat().st_size:
            parts.append(err.read_text(errors="replace")[-3000:])
        parts.append(proc.log_tail(15))
    return "\n".join(parts)


async def run_case(
    case: Case | str,
    workdir: Path,
    *,
    auth_key: str = "rig-hep-secret",
    capture_id: int = 2001,
    time_limit: float = 40.0,
    collector: HepCollector | None = None,
    attempts: int = 3,
) -> CaseRun:
    """Play ``case`` once; raise :class:`RigFailure` unless every role's SIPp exits 0.

    A start-up failure (a port taken between choosing and binding it) is retried with fresh
    ports, up to ``attempts`` times. All processes are ended before this returns or raises.
    Logs stay in ``workdir``."""
    if isinstance(case, str):
        case = CASES[case]
    _mkdir(workdir)
    for attempt in range(1, attempts + 1):
        try:
            return await _run_once(case, workdir, auth_key, capture_id, time_limit, collector)
        except RigStartError as exc:
            if attempt == attempts:
                raise RigFailure(f"{case.name}: could not start the rig: {exc}") from None
    raise AssertionError("unreachable")


async def _run_once(
    case: Case,
    workdir: Path,
    auth_key: str,
    capture_id: int,
    time_limit: float,
    collector: HepCollector | None,
) -> CaseRun:
    started = time.monotonic()
    names = [role.name for role in case.roles]
    proxy_port, *phone_ports = free_udp_ports(1 + len(case.roles))
    ports = dict(zip(names, phone_ports, strict=True))
    ports["kamailio"] = proxy_port
    sipp_timeout = max(5, int(time_limit) - 5)
    processes: dict[str, ManagedProcess] = {}
    async with AsyncExitStack() as stack:
        if collector is None:
            collector = await stack.enter_async_context(running_collector())
        collector.clear()
        settings = KamailioSettings(
            listen_port=proxy_port,
            hep_port=collector.port,
            phones={role.user: ports[role.name] for role in case.roles},
            auth_key=auth_key,
            capture_id=capture_id,
        )
        ports["collector"] = collector.port
        kam = await stack.enter_async_context(
            running_kamailio(settings, workdir, max_life=time_limit + 30)
        )

        async def stop_all() -> None:
            await asyncio.gather(*(p.stop() for p in processes.values()))

        stack.push_async_callback(stop_all)

        async def launch(role: Role) -> None:
            argv = sipp_argv(
                role,
                port=ports[role.name],
                proxy=kam.address,
                workdir=workdir,
                timeout_s=sipp_timeout,
            )
            proc = sipp_process(role, argv, workdir, max_life=time_limit + 10)
            processes[role.name] = proc
            await proc.start()
            await wait_until(
                lambda: not proc.running() or udp_port_bound(ports[role.name], pgid=proc.pid),
                10.0,
                what=f"{proc.name} to bind udp:{LOCALHOST}:{ports[role.name]}",
            )
            if not proc.running():
                raise RigStartError(f"{proc.name} exited at once:\n{_describe(processes, workdir)}")

        for role in case.roles:
            if not role.uac:
                await launch(role)
        for role in case.roles:
            if role.uac:
                await launch(role)
        try:
            codes = await asyncio.gather(*(p.wait(time_limit) for p in processes.values()))
        except ProcessFailed as exc:
            await stop_all()
            raise RigFailure(f"{case.name}: {exc}\n{_describe(processes, workdir)}") from None
        exit_codes = dict(zip(processes, codes, strict=True))
        if any(code != 0 for code in codes):
            raise RigFailure(
                f"{case.name}: SIPp exit codes {exit_codes}\n{_describe(processes, workdir)}"
            )
        await collector.settle(quiet=0.5, time_limit=5.0)
        packets = list(collector.packets)
    return CaseRun(case, packets, settings, ports, exit_codes, time.monotonic() - started)


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def fresh_workdir(base: Path, case: str) -> Path:
    """``base/case``, emptied."""
    path = base / case
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
