"""Kamailio as a second HEP source: render the rig's config and run ``kamailio -DD -E``.

The config is ``docker/kamailio/kamailio.cfg``; this module writes a copy into a work folder with
``#!define`` lines for the listen address, the collector, the HEP auth key and capture id, and
with its phone map (user part -> static address) in place of the default one.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.rig.procs import (
    LOCALHOST,
    ManagedProcess,
    ProcessFailed,
    RigStartError,
    udp_port_bound,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG_TEMPLATE = REPO / "docker" / "kamailio" / "kamailio.cfg"
DEFAULT_AUTH_KEY = "rig-hep-secret"
DEFAULT_CAPTURE_ID = 2001

_PHONES = re.compile(r"(?ms)^([ \t]*)# BEGIN PHONES\n.*?^[ \t]*# END PHONES\n")


def kamailio_binary() -> str | None:
    """Path of the kamailio binary (Debian puts it in /usr/sbin), or None."""
    found = shutil.which("kamailio")
    if found:
        return found
    candidate = Path("/usr/sbin/kamailio")
    return str(candidate) if candidate.exists() else None


@dataclass
class KamailioSettings:
    """What the rendered config needs; ``phones`` maps a user part to a UDP port on ``host``."""

    listen_port: int
    hep_port: int
    phones: Mapping[str, int] = field(default_factory=dict)
    host: str = LOCALHOST
    hep_host: str = LOCALHOST
    auth_key: str = DEFAULT_AUTH_KEY
    capture_id: int = DEFAULT_CAPTURE_ID
    log_level: int = 2


def _quote(value: str) -> str:
    if any(c in value for c in '"\\\n'):
        raise ValueError(f"value not allowed in a Kamailio define: {value!r}")
    return f'"{value}"'


def render_config(settings: KamailioSettings, template: str | None = None) -> str:
    """The config text: the template with defines prepended and the phone map replaced."""
    text = CONFIG_TEMPLATE.read_text() if template is None else template
    for user in settings.phones:
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", user):
            raise ValueError(f"bad user part {user!r}")

    def phones(match: re.Match[str]) -> str:
        indent = match.group(1)
        lines = [f"{indent}# BEGIN PHONES"]
        for user, port in settings.phones.items():
            lines.append(
                f'{indent}if ($rU == "{user}") {{ $du = "sip:{settings.host}:{int(port)}"; '
                "return; }"
            )
        lines.append(f"{indent}# END PHONES")
        return "\n".join(lines) + "\n"

    text, count = _PHONES.subn(phones, text)
    if count != 1:
        raise ValueError("template has no '# BEGIN PHONES' ... '# END PHONES' block")
    defines = [
        f"#!define LISTEN udp:{settings.host}:{int(settings.listen_port)}",
        f"#!define HEP_URI {_quote(f'sip:{settings.hep_host}:{int(settings.hep_port)}')}",
        f"#!define HEP_AUTH_KEY {_quote(settings.auth_key)}",
        f"#!define HEP_CAPTURE_ID {int(settings.capture_id)}",
        f"#!define LOG_LEVEL {int(settings.log_level)}",
    ]
    head, sep, rest = text.partition("\n")
    if not head.startswith("#!KAMAILIO"):
        head, sep, rest = "#!KAMAILIO", "\n", text
    return head + sep + "\n".join(defines) + "\n" + rest


@dataclass
class RunningKamailio:
    settings: KamailioSettings
    config_path: Path
    process: ManagedProcess

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.host, self.settings.listen_port


def write_config(settings: KamailioSettings, workdir: Path) -> tuple[Path, Path]:
    """Write ``workdir/kamailio.cfg`` and make a runtime folder; returns both paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "kamailio-run"
    run_dir.mkdir(exist_ok=True)
    config = workdir / "kamailio.cfg"
    config.write_text(render_config(settings))
    return config, run_dir


@asynccontextmanager
async def running_kamailio(
    settings: KamailioSettings,
    workdir: Path,
    *,
    start_limit: float = 10.0,
    max_life: float = 600.0,
) -> AsyncIterator[RunningKamailio]:
    """Write the config into ``workdir``, start Kamailio in the foreground, wait until its
    SIP port is bound, and stop it (and all its worker processes) on exit."""
    binary = kamailio_binary()
    if binary is None:
        raise ProcessFailed("kamailio is not installed (scripts/rig/install.sh)")
    config, run_dir = write_config(settings, workdir)
    argv = [
        binary,
        "-DD",  # foreground, no daemon
        "-E",  # log to stderr
        "-f", str(config),
        "-P", str(run_dir / "kamailio.pid"),
        "-Y", str(run_dir),
        "-m", "32",  # shared memory, MB
        "-M", "4",  # private memory per process, MB
    ]  # fmt: skip
    process = ManagedProcess(
        "kamailio", argv, workdir / "kamailio.log", cwd=workdir, max_life=max_life
    )
    if udp_port_bound(settings.listen_port, settings.host):
        raise RigStartError(f"UDP port {settings.listen_port} is already in use")
    await process.start()
    try:
        await wait_until(
            lambda: (
                not process.running()
                or udp_port_bound(settings.listen_port, settings.host, pgid=process.pid)
            ),
            start_limit,
            what=f"kamailio to bind udp:{settings.host}:{settings.listen_port}",
        )
        if not process.running():
            raise RigStartError(
                f"kamailio exited with {process.proc.returncode if process.proc else '?'}; "
                f"log tail:\n{process.log_tail()}"
            )
        yield RunningKamailio(settings, config, process)
    finally:
        await process.stop()
