"""A real Asterisk 22 for tests: the chroot root of ``scripts/asterisk/``, the configuration of
``docker/asterisk/`` rendered with the test's ports and secrets, started once and stopped fast.

    settings = AsteriskSettings.fresh()                     # free phone ports + HEP port, secrets
    async with running_asterisk(settings, workdir) as pbx:
        pbx.sip              # ("127.0.0.1", 5070): where phones send SIP
        pbx.ami              # ("127.0.0.1", 5038), pbx.ami_username / pbx.ami_secret
        pbx.watcher_username / pbx.watcher_password   # SIP digest login allowed to SUBSCRIBE
        pbx.hep_port         # where Asterisk sends HEPv3 (the bridge or a collector binds it)
        pbx.phone_ports      # {"1001": port, "1002": ..., "1003": ..., "2000": ..., "1004": ...}
        print(await pbx.acli("core show channels"))

Only one Asterisk can run on a machine (fixed SIP and AMI ports, one root): the context holds
an exclusive ``fcntl.flock`` on ``/tmp/transfer-bridge-asterisk.lock`` from before the start to
after the stop. It is meant to be entered once per pytest session; the HEP port is chosen up
front so whoever listens for HEP can bind it later (Asterisk sends HEP over UDP and does not
care whether anyone listens).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.rig.procs import LOCALHOST, free_udp_ports, tail_of

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "asterisk"
CONFIG_SRC = REPO / "docker" / "asterisk"
LOCK_PATH = Path("/tmp/transfer-bridge-asterisk.lock")
SIP_PORT = 5070
AMI_PORT = 5038
AMI_USERNAME = "bridge"
WATCHER_USERNAME = "watcher"  # pjsip.conf: the endpoint allowed to SUBSCRIBE (dialog state)
PHONES = ("1001", "1002", "1003", "2000", "2001", "1004")
_HELD = False  # whether this process holds LOCK_PATH (see asterisk_lock)


class AsteriskFailed(RuntimeError):
    """Asterisk could not be built, configured, started or locked."""


@dataclass(frozen=True)
class AsteriskSettings:
    """What the rendered configuration points at. ``phone_ports`` maps each extension of
    ``pjsip.conf`` (1001, 1002, 1003, 1004, 2000, 2001) to the UDP port its phone listens on."""

    phone_ports: dict[str, int]
    hep_port: int
    hep_password: str
    ami_secret: str
    watcher_password: str = ""
    lock_timeout: float = 180.0
    start_timeout: float = 60.0
    build_timeout: float = 600.0
    config_src: Path = CONFIG_SRC

    @classmethod
    def fresh(cls, **overrides: object) -> AsteriskSettings:
        """Free UDP ports for the phones and for HEP, random secrets."""
        ports = free_udp_ports(len(PHONES) + 1)
        values: dict[str, object] = {
            "phone_ports": dict(zip(PHONES, ports[:-1], strict=True)),
            "hep_port": ports[-1],
            "hep_password": "hep-" + secrets.token_hex(8),
            "ami_secret": "ami-" + secrets.token_hex(8),
            "watcher_password": "watch-" + secrets.token_hex(8),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def render_env(self) -> dict[str, str]:
        env = {f"PORT_{ext}": str(port) for ext, port in self.phone_ports.items()}
        env.update(
            HEP_PORT=str(self.hep_port),
            HEP_PASSWORD=self.hep_password,
            AMI_SECRET=self.ami_secret,
        )
        if self.watcher_password:
            env["WATCHER_PASSWORD"] = self.watcher_password
        return env


@dataclass
class RunningAsterisk:
    """A started Asterisk: addresses, credentials, CLI access and log files."""

    root: Path
    pid: int
    config_dir: Path
    settings: AsteriskSettings
    sip: tuple[str, int] = (LOCALHOST, SIP_PORT)
    ami: tuple[str, int] = (LOCALHOST, AMI_PORT)
    ami_username: str = AMI_USERNAME
    started_at: float = field(default_factory=time.time)

    @property
    def ami_secret(self) -> str:
        return self.settings.ami_secret

    @property
    def watcher_username(self) -> str:
        """The SIP digest user of endpoint ``watcher`` (allowed to SUBSCRIBE to the hints)."""
        return WATCHER_USERNAME

    @property
    def watcher_password(self) -> str:
        return self.settings.watcher_password

    @property
    def hep_port(self) -> int:
        return self.settings.hep_port

    @property
    def hep_password(self) -> str:
        return self.settings.hep_password

    @property
    def phone_ports(self) -> dict[str, int]:
        return self.settings.phone_ports

    @property
    def log_path(self) -> Path:
        """Asterisk's own log (notice and up, verbose 3, millisecond time stamps)."""
        return self.root / "var" / "log" / "asterisk" / "messages.log"

    @property
    def out_path(self) -> Path:
        """Asterisk's stdout/stderr."""
        return self.root / "tmp" / "asterisk.out"

    def cli_argv(self, command: str) -> list[str]:
        return [
            "chroot",
            "--userspec=asterisk:asterisk",
            str(self.root),
            "asterisk",
            "-rx",
            command,
        ]

    def cli(self, command: str, timeout: float = 10.0) -> str:
        """``asterisk -rx COMMAND`` as the asterisk user (blocking); its output."""
        done = subprocess.run(
            self.cli_argv(command), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise AsteriskFailed(f"asterisk -rx {command!r} failed: {done.stderr.strip()}")
        return done.stdout

    async def acli(self, command: str, time_limit: float = 10.0) -> str:
        """``cli`` without blocking the event loop."""
        proc = await asyncio.create_subprocess_exec(
            *self.cli_argv(command),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), time_limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AsteriskFailed(f"asterisk -rx {command!r} took over {time_limit} s") from None
        if proc.returncode != 0:
            raise AsteriskFailed(f"asterisk -rx {command!r} failed: {err.decode().strip()}")
        return out.decode()

    def log_tail(self, lines: int = 40) -> str:
        return tail_of(self.log_path, lines)


async def _run_script(
    argv: list[str], what: str, time_limit: float, env: dict[str, str] | None = None
) -> str:
    """Run a helper script; its stdout, or AsteriskFailed with its stderr."""
    full_env = None if env is None else {**os.environ, **env}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
        cwd=REPO,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), time_limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise AsteriskFailed(f"{what} did not finish within {time_limit:.0f} s") from None
    if proc.returncode != 0:
        raise AsteriskFailed(f"{what} failed (exit {proc.returncode}):\n{err.decode()[-3000:]}")
    return out.decode()


@asynccontextmanager
async def asterisk_lock(time_limit: float = 180.0) -> AsyncIterator[None]:
    """Hold the machine-wide Asterisk lock (waits at most ``time_limit`` s for it).

    flock locks belong to an open file, so a second holder in the same process would wait on
    itself: that is refused at once instead."""
    global _HELD
    if _HELD:
        raise AsteriskFailed(
            f"this process already holds {LOCK_PATH}: share the running Asterisk (tests: the "
            "session fixture `pbx`) instead of starting a second one"
        )
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + time_limit
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AsteriskFailed(
                        f"{LOCK_PATH} still held by another Asterisk user after {time_limit:.0f} s"
                    ) from None
                await asyncio.sleep(0.2)
        _HELD = True
        try:
            yield
        finally:
            _HELD = False
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def build_root(time_limit: float = 600.0) -> Path:
    """Build (first time: about a minute) or reuse the Asterisk root; its path."""
    out = await _run_script(["bash", str(SCRIPTS / "build-root.sh")], "build-root.sh", time_limit)
    lines = out.strip().splitlines()
    if not lines:
        raise AsteriskFailed("build-root.sh printed no root path")
    return Path(lines[-1])


async def render_config(settings: AsteriskSettings, dst: Path) -> Path:
    """``docker/asterisk/*.conf`` with the placeholders filled in, written to ``dst``."""
    await _run_script(
        ["bash", str(SCRIPTS / "render-config.sh"), str(dst), str(settings.config_src)],
        "render-config.sh",
        30,
        env=settings.render_env(),
    )
    return dst


async def stop_asterisk(root: Path, time_limit: float = 20.0) -> None:
    await _run_script(["bash", str(SCRIPTS / "stop.sh"), str(root)], "stop.sh", time_limit)


@asynccontextmanager
async def running_asterisk(
    settings: AsteriskSettings, workdir: Path
) -> AsyncIterator[RunningAsterisk]:
    """Lock, build/reuse the root, render the configuration into ``workdir/asterisk-conf``,
    start Asterisk and wait until it is fully booted; stop it and release the lock on exit."""
    if os.geteuid() != 0:
        raise AsteriskFailed("the Asterisk rig needs root (chroot, mount)")
    root = await build_root(settings.build_timeout)
    conf = await render_config(settings, workdir / "asterisk-conf")
    async with asterisk_lock(settings.lock_timeout):
        # A previous run that died without stopping its Asterisk leaves it running: stop it.
        await stop_asterisk(root)
        out = await _run_script(
            ["bash", str(SCRIPTS / "run.sh"), str(root), str(conf)],
            "run.sh",
            settings.start_timeout + 15,
            env={"ASTERISK_START_TIMEOUT": str(int(settings.start_timeout))},
        )
        pid = int(out.strip().splitlines()[-1])
        running = RunningAsterisk(root=root, pid=pid, config_dir=conf, settings=settings)
        try:
            yield running
        finally:
            await stop_asterisk(root)
