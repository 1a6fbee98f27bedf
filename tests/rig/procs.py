"""Process and port helpers for the rig: free UDP ports, readiness by bound port, and child
processes that are always bounded in time and never left behind."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

LOCALHOST = "127.0.0.1"


# Ports are picked below the kernel's ephemeral range (32768-60999 by default), where other
# processes' outgoing sockets cannot take them between our check and the rig's bind.
_PORT_LOW, _PORT_HIGH = 10000, 32000


def free_udp_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """``count`` distinct UDP ports that were free on ``host`` a moment ago."""
    rng = random.Random()
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((host, rng.randrange(_PORT_LOW, _PORT_HIGH)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _udp_inodes(port: int, host: str) -> set[str]:
    """Socket inodes of the UDP sockets bound to host:port or *:port (from /proc/net/udp)."""
    want_ip = "".join(f"{int(b):02X}" for b in reversed(host.split(".")))
    wanted = {f"{want_ip}:{port:04X}", f"00000000:{port:04X}"}
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {parts[9] for line in lines if len(parts := line.split()) > 9 and parts[1] in wanted}


def udp_port_bound(port: int, host: str = LOCALHOST, pgid: int | None = None) -> bool:
    """True when a UDP socket is bound to host:port; with ``pgid``, one held by a process of
    that process group (a rig process and its children)."""
    inodes = _udp_inodes(port, host)
    if not inodes or pgid is None:
        return bool(inodes)
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in process_group(pgid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(fd) in wanted:
                    return True
    return False


def tail_of(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ("" when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ProcessFailed(RuntimeError):
    """A rig process failed to start, exited badly or overran its time."""


class RigStartError(ProcessFailed):
    """A process could not start (typically a port taken meanwhile): worth a retry."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGTERM this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def process_group(pgid: int) -> list[int]:
    """Pids of the live processes whose process group is ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            pids.append(int(entry.name))
    return pids


@dataclass
class ManagedProcess:
    """A child process in its own session (so its whole group can be ended), logging to a file.

    With ``max_life`` it runs under coreutils ``timeout`` so it ends on its own even if nobody
    stops it; and it gets SIGTERM if the Python process that started it dies."""

    name: str
    argv: Sequence[str]
    log_path: Path
    cwd: Path | None = None
    env: dict[str, str] | None = None
    max_life: float | None = None
    proc: asyncio.subprocess.Process | None = field(default=None, init=False)
    returncode: int | None = field(default=None, init=False)

    def _open_log(self) -> BinaryIO:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.log_path, "wb")  # closed by start()

    async def start(self) -> None:
        argv = list(self.argv)
        if self.max_life is not None:
            argv = ["timeout", "-k", "3", f"{self.max_life:.0f}s", *argv]
        with self._open_log() as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_tail(self, lines: int = 40) -> str:
        return tail_of(self.log_path, lines)

    async def wait(self, time_limit: float) -> int:
        """Wait for the process to exit on its own; on overrun end it and raise."""
        assert self.proc is not None
        try:
            self.returncode = await asyncio.wait_for(self.proc.wait(), time_limit)
        except TimeoutError:
            await self.stop()
            raise ProcessFailed(
                f"{self.name} did not finish within {time_limit:.0f} s; "
                f"log tail:\n{self.log_tail()}"
            ) from None
        return self.returncode

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process, then SIGKILL its whole process group if it lingers."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        # Children of the process (Kamailio's workers) share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        self.returncode = proc.returncode


async def wait_until(
    predicate: Callable[[], bool], time_limit: float, *, interval: float = 0.02, what: str = ""
) -> None:
    """Poll ``predicate()`` until true; raise :class:`ProcessFailed` after ``time_limit`` s."""
    deadline = time.monotonic() + time_limit
    while not predicate():
        if time.monotonic() > deadline:
            raise ProcessFailed(f"timed out after {time_limit:.1f} s waiting for {what}")
        await asyncio.sleep(interval)
