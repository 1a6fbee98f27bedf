"""`transfer-bridge serve` as a real process for the hostile-client tests: its own port, its
own SQLite file, JSON logs in a file the test reads (secrets must never appear there)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ADMIN = "hostile-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BridgeProc:
    """One bridge process."""

    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _spawn(
    cwd: Path, env: dict[str, str], log: Path, nofile: int | None, config: Path | None = None
) -> subprocess.Popen[bytes]:
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "desktop_api.cli", "serve"]
            + ([] if config is None else ["--config", str(config)]),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )


async def start(
    directory: Path,
    settings: dict[str, str] | None = None,
    *,
    nofile: int | None = None,
    config: str | None = None,
) -> BridgeProc:
    """Start a bridge in `directory` (its ./var/ survives restarts) and wait for /healthz.

    `config`: the text of a TOML file (sources are configured in a file only); the environment
    (`settings`) still wins over it."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    config_path = None
    if config is not None:
        config_path = directory / "bridge.toml"
        await asyncio.to_thread(config_path.write_text, config)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFER_BRIDGE_")}
    env.update(
        TRANSFER_BRIDGE_HTTP_LISTEN=f"127.0.0.1:{port}",
        TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN=ADMIN,
        TRANSFER_BRIDGE_LOG_FORMAT="json",
        **(settings or {}),
    )
    log = directory / "bridge.log"
    proc = _spawn(directory, env, log, nofile, config_path)
    bridge = BridgeProc(proc, f"http://127.0.0.1:{port}", port, log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None, f"exited {proc.returncode}: {bridge.log_text()}"
            assert loop.time() < deadline, f"no /healthz: {bridge.log_text()}"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(bridge.url + "/healthz") as r:
                    if r.status == 200:
                        return bridge
            await asyncio.sleep(0.05)


async def stop(bridge: BridgeProc, sig: int = signal.SIGTERM) -> int:
    """Signal the process and wait for it (SIGKILL after 10 s)."""
    if bridge.proc.poll() is None:
        bridge.proc.send_signal(sig)
    try:
        return await asyncio.to_thread(bridge.proc.wait, 10)
    except subprocess.TimeoutExpired:
        bridge.proc.kill()
        return await asyncio.to_thread(bridge.proc.wait, 5)


@contextlib.asynccontextmanager
async def running(
    directory: Path, settings: dict[str, str] | None = None, *, nofile: int | None = None
) -> AsyncIterator[BridgeProc]:
    """A bridge for the length of the block, stopped (killed if it must be) at the end."""
    bridge = await start(directory, settings, nofile=nofile)
    try:
        yield bridge
    finally:
        await stop(bridge)
