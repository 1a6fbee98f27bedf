"""`transfer-bridge serve` as a real process, with sources pointed at the test's Asterisk.

It can be stopped with SIGTERM and started again on the same SQLite file (the restart test).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from desktop_api.testing import ApiClient
from tests.rig.asterisk import RunningAsterisk

ADMIN = "e2e-admin-token"
HEALTHY = ("listening", "connected", "subscribed")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bridge_config(
    pbx: RunningAsterisk,
    port: int,
    *,
    hep: bool = True,
    ami: bool = True,
    dialog: bool = False,
    hep_listen: int | None = None,
) -> str:
    """The TOML a PBX admin would write: HEP from Asterisk's res_hep, its AMI, and its hints'
    dialog state (SUBSCRIBE as the `watcher` endpoint). HEP is received on `hep_listen`
    (default: the port Asterisk sends HEP to; another one behind a relay that copies it)."""
    parts = [
        f'[http]\nlisten = "127.0.0.1:{port}"\n',
        '[store]\nurl = "sqlite:///var/bridge.db"\n',
        f'[auth]\nadmin_token = "{ADMIN}"\n',
        '[log]\nformat = "json"\nlevel = "info"\n',
    ]
    if hep:
        parts.append(
            "[[sources.hep]]\n"
            'name = "pbx-hep"\n'
            f'listen = "127.0.0.1:{hep_listen or pbx.hep_port}"\n'
            f'password = "{pbx.hep_password}"\n'
        )
    if ami:
        parts.append(
            "[[sources.ami]]\n"
            'name = "pbx-ami"\n'
            f'host = "{pbx.ami[0]}"\n'
            f"port = {pbx.ami[1]}\n"
            f'username = "{pbx.ami_username}"\n'
            f'secret = "{pbx.ami_secret}"\n'
        )
    if dialog:
        parts.append(
            "[[sources.dialog]]\n"
            'name = "pbx-dialog"\n'
            f'pbx = "{pbx.sip[0]}:{pbx.sip[1]}"\n'
            'listen = "127.0.0.1:0"\n'
            f'username = "{pbx.watcher_username}"\n'
            f'password = "{pbx.watcher_password}"\n'
            'domain = "127.0.0.1"\n'
        )
    return "\n".join(parts)


def cluster_config(
    pbx: RunningAsterisk,
    port: int,
    store_url: str,
    instance: str,
    lease_retry: float = 1.0,
    *,
    dialog: bool = False,
) -> str:
    """One instance of several on one PostgreSQL database (`store_url`), as instance
    `instance`: the rig's AMI only, or with `dialog` its dialog-info only (both are leased: one
    instance logs in, or subscribes to the lines, at a time)."""
    config = bridge_config(pbx, port, hep=False, ami=not dialog, dialog=dialog)
    config = config.replace('url = "sqlite:///var/bridge.db"', f'url = "{store_url}"')
    return config + f'\n[cluster]\ninstance = "{instance}"\nlease_retry = {lease_retry}\n'


def _spawn(config: Path, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "desktop_api.cli", "serve", "--config", str(config)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@dataclass
class BridgeProcess:
    """One bridge process at a time in `workdir` (so ./var/ survives restarts)."""

    workdir: Path
    config: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    async def start(self, *, sources: tuple[str, ...] = ("pbx-hep", "pbx-ami")) -> None:
        """Start and wait until /healthz answers and the named sources are up."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        config = self.workdir / "bridge.toml"
        config.write_text(self.config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFER_BRIDGE_")}
        log = self.workdir / f"bridge-{self.runs}.log"
        self.logs.append(log)
        self.proc = _spawn(config, self.workdir, env, log)
        await self.wait_healthy(sources)

    async def wait_healthy(self, sources: tuple[str, ...], within: float = 20.0) -> dict:  # type: ignore[type-arg]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        health: dict = {}  # type: ignore[type-arg]
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"bridge exited {self.proc.returncode}:\n{self.log_text()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.url + "/healthz") as r:
                        health = await r.json()
                        states = {n: s.get("status") for n, s in health["sources"].items()}
                        if all(states.get(n) in HEALTHY for n in sources):
                            return health
                if loop.time() > deadline:
                    raise RuntimeError(f"bridge not healthy: {health}\n{self.log_text()[-3000:]}")
                await asyncio.sleep(0.05)

    async def health(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """Its `/healthz` body now (200 or 503)."""
        async with http.get(self.url + "/healthz") as r:
            body: dict[str, Any] = await r.json()
            return body

    async def wait_for_health(
        self, http: aiohttp.ClientSession, done: Callable[[dict[str, Any]], bool], within: float
    ) -> dict[str, Any]:
        """Poll `/healthz` every 20 ms until `done(body)`; the body (assert after `within` s)."""
        deadline = time.monotonic() + within
        while True:
            h = await self.health(http)
            if done(h):
                return h
            assert time.monotonic() < deadline, h
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
            raise RuntimeError(f"bridge ignored SIGTERM:\n{self.log_text()[-3000:]}") from None


@contextlib.asynccontextmanager
async def running_bridge_process(
    workdir: Path,
    pbx: RunningAsterisk,
    *,
    hep: bool = True,
    ami: bool = True,
    dialog: bool = False,
    hep_listen: int | None = None,
) -> AsyncIterator[BridgeProcess]:
    port = free_tcp_port()
    config = bridge_config(pbx, port, hep=hep, ami=ami, dialog=dialog, hep_listen=hep_listen)
    bridge = BridgeProcess(workdir, config, port)
    named = (("pbx-hep", hep), ("pbx-ami", ami), ("pbx-dialog", dialog))
    sources = tuple(n for n, on in named if on)
    await bridge.start(sources=sources)
    try:
        yield bridge
    finally:
        code = await bridge.stop()
        assert code == 0, f"bridge exited {code}:\n{bridge.log_text()[-3000:]}"


async def admin_client(http: aiohttp.ClientSession, bridge: BridgeProcess) -> ApiClient:
    return ApiClient(http, bridge.url, ADMIN)
