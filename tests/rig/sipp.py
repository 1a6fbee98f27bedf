"""SIPp user agents for the rig: one ``sipp`` process per phone, one call each (``-m 1``)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from desktop_api.qa.sipp import free_port_block
from tests.rig.procs import LOCALHOST, ManagedProcess

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "sipp_scenarios"


def sipp_binary() -> str | None:
    """Path of ``sipp`` (Debian package sip-tester), or None."""
    return shutil.which("sipp")


@dataclass(frozen=True)
class Role:
    """One phone: its user part in the proxy's map and the SIPp scenario it plays.

    ``uac`` roles start the call and are started last, once every UAS role listens.
    ``service`` is SIPp's ``-s`` (the user part a UAC calls)."""

    name: str
    user: str
    scenario: str
    uac: bool = False
    service: str | None = None


def sipp_argv(
    role: Role,
    *,
    port: int,
    proxy: tuple[str, int],
    workdir: Path,
    timeout_s: int,
    host: str = LOCALHOST,
) -> list[str]:
    """The sipp command line for ``role`` on ``host:port`` talking only to ``proxy``."""
    binary = sipp_binary()
    if binary is None:
        raise RuntimeError("sipp is not installed (scripts/rig/install.sh)")
    media_port = free_port_block(host, 4)
    argv = [
        binary,
        f"{proxy[0]}:{proxy[1]}",
        "-sf", str(SCENARIOS / role.scenario),
        "-i", host,
        "-p", str(port),
        "-bind_local",
        "-mi", host,
        "-mp", str(media_port),
        "-ci", host,  # control socket: 127.0.0.1:8888 or the next free port, not 0.0.0.0
        "-m", "1",
        "-nostdin",
        "-timeout", f"{timeout_s}s",
        "-timeout_error",
        "-cid_str", f"rig-{role.name}-%u-%p",
        "-trace_msg", "-message_file", str(workdir / f"{role.name}.messages.log"),
        "-trace_err", "-error_file", str(workdir / f"{role.name}.errors.log"),
        "-trace_screen", "-screen_file", str(workdir / f"{role.name}.screen.log"),
    ]  # fmt: skip
    if role.service:
        argv += ["-s", role.service]
    return argv


def sipp_process(
    role: Role, argv: list[str], workdir: Path, *, max_life: float | None = None
) -> ManagedProcess:
    return ManagedProcess(
        f"sipp {role.name}", argv, workdir / f"{role.name}.log", cwd=workdir, max_life=max_life
    )
