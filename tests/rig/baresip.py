"""baresip (libre) as an agent phone on the Asterisk rig, driven over its ``ctrl_tcp`` module.

Debian's ``baresip-core`` 1.0.0 (``scripts/rig/install.sh``). One process per phone, no
registration (Asterisk reaches it through the static contact of ``docker/asterisk/pjsip.conf``
and recognises it by its source port), UDP on ``127.0.0.1:PORT``, a 440 Hz sine as microphone
and ``/dev/null`` as speaker (there is no sound card). libre writes its Contact user as
``<user>-0x<address>`` (``sip:1001-0x55d0c6a1b2c0@127.0.0.1:PORT``), one reason the bridge never
reads a phone's identity from its Contact.

Control (``ctrl_tcp``): netstrings of JSON both ways, ``{"command": "dial", "params": "...",
"token": "n"}`` answered by ``{"response": true, "ok": ..., "token": "n"}``; events such as
``{"event": true, "type": "CALL_ESTABLISHED", "peeruri": "sip:2000@127.0.0.1", ...}``. This
baresip names no call in its events, so calls are told apart by the far end's user part
(``peeruri``): the refs of this driver are those users (``"2000"``, ``"1002"``). Commands act on
the current call; ``/line N`` picks another one. It does blind transfer (``/transfer``) only:
attended transfer (REFER with Replaces) came in later baresip versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.rig.agent import AgentPhone, AgentPhoneFailed, user_of
from tests.rig.procs import LOCALHOST, free_udp_ports, tail_of

BARESIP = "baresip"
MODULES = ("g711.so", "ausine.so", "aufile.so", "menu.so", "ctrl_tcp.so", "account.so")
STATES = {
    "CALL_INCOMING": "incoming",
    "CALL_RINGING": "ringing",
    "CALL_PROGRESS": "ringing",
    "CALL_ESTABLISHED": "established",
    "CALL_CLOSED": "closed",
}


def have_baresip() -> bool:
    return shutil.which(BARESIP) is not None


def write_config(folder: Path, ext: str, port: int, ctrl_port: int) -> None:
    rtp = free_udp_ports(1)[0]
    lines = [
        "poll_method epoll",
        f"sip_listen {LOCALHOST}:{port}",
        "sip_trans_def udp",
        "audio_player aufile,/dev/null",
        "audio_source ausine,440",
        "ausrc_srate 48000",  # ausine makes 48 kHz stereo only; baresip resamples for PCMU
        "ausrc_channels 2",
        "audio_alert aufile,/dev/null",
        "module_path /usr/lib/baresip/modules",
        *(f"module {m}" for m in MODULES),
        f"ctrl_tcp_listen {LOCALHOST}:{ctrl_port}",
        f"rtp_ports {rtp}-{rtp + 40}",
        f"net_interface {LOCALHOST}",
    ]
    (folder / "config").write_text("\n".join(lines) + "\n")
    (folder / "accounts").write_text(
        f"<sip:{ext}@{LOCALHOST}>;regint=0;audio_codecs=PCMU;answermode=manual\n"
    )
    for name in ("contacts", "current_contact", "uuid"):
        (folder / name).touch()


class Baresip(AgentPhone):
    """One baresip process for one extension."""

    name = "baresip"
    attended = False

    def __init__(self, ext: str, port: int, pbx: tuple[str, int], workdir: Path) -> None:
        super().__init__(ext, port, pbx)
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._token = 0
        self._pump: asyncio.Task[None] | None = None
        self.raw: list[dict[str, Any]] = []  # every event, as sent
        self._lines: list[str] = []  # peer users in the order their calls appeared (line 1, 2..)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"baresip-{self.ext}.log"

    def log_tail(self, lines: int = 30) -> str:
        return tail_of(self.log_path, lines)

    async def start(self, time_limit: float = 10.0) -> None:
        ctrl_port = free_udp_ports(1)[0]  # free for TCP as well on this loopback-only rig
        conf = self.workdir / f"baresip-{self.ext}"
        conf.mkdir(parents=True, exist_ok=True)
        write_config(conf, self.ext, self.port, ctrl_port)
        log = self.log_path.open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                BARESIP,
                "-f",
                str(conf),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit
        while True:
            try:
                self.reader, self.writer = await asyncio.open_connection(LOCALHOST, ctrl_port)
                break
            except OSError:
                if self.proc.returncode is not None or loop.time() > deadline:
                    raise AgentPhoneFailed(f"baresip did not start:\n{self.log_tail()}") from None
                await asyncio.sleep(0.1)
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.reader is not None
        buf = b""
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    colon = buf.find(b":")
                    if colon < 0 or not buf[:colon].isdigit():
                        break
                    size = int(buf[:colon])
                    if len(buf) < colon + 1 + size + 1:
                        break
                    body = buf[colon + 1 : colon + 1 + size]
                    buf = buf[colon + 2 + size :]
                    with contextlib.suppress(ValueError):
                        self._message(json.loads(body))
        finally:
            self.closed = True
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(AgentPhoneFailed(f"baresip gone:\n{self.log_tail()}"))
            self.changed()

    def _message(self, msg: dict[str, Any]) -> None:
        if msg.get("response"):
            fut = self._replies.pop(str(msg.get("token")), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        self.raw.append(msg)
        state = STATES.get(str(msg.get("type")))
        peer = user_of(str(msg.get("peeruri") or ""))
        if state is None or peer is None:
            return
        if state != "closed" and peer not in self._lines:
            self._lines.append(peer)
        elif state == "closed" and peer in self._lines:
            self._lines.remove(peer)
        self.report(peer, state, msg)

    async def command(self, text: str, time_limit: float = 5.0) -> dict[str, Any]:
        """A menu command (``/dial sip:...``, ``/hold``): its response."""
        if self.writer is None or self.closed:
            raise AgentPhoneFailed(f"baresip gone:\n{self.log_tail()}")
        self._token += 1
        token = str(self._token)
        cmd, _, params = text.lstrip("/").partition(" ")
        data = json.dumps({"command": cmd, "params": params, "token": token}).encode()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[token] = fut
        self.writer.write(str(len(data)).encode() + b":" + data + b",")
        await self.writer.drain()
        reply = await asyncio.wait_for(fut, time_limit)
        if not reply.get("ok"):
            raise AgentPhoneFailed(f"baresip {text!r}: {reply.get('data')}")
        return reply

    async def _select(self, ref: str) -> None:
        """Make call ``ref`` the current one (line numbers count from 1, in arrival order)."""
        if ref not in self._lines:
            raise AgentPhoneFailed(f"baresip has no call with {ref} (has {self._lines})")
        await self.command(f"/line {self._lines.index(ref) + 1}")

    # -- AgentPhone
    async def call(self, to: str) -> str:
        await self.command(f"/dial sip:{to}@{self.pbx[0]}:{self.pbx[1]}")
        return to

    async def answer(self, ref: str) -> None:
        await self._select(ref)
        await self.command("/accept")

    async def hangup(self, ref: str) -> None:
        await self._select(ref)
        await self.command("/hangup")
        # This baresip sends no CALL_CLOSED for a call it hangs up itself.
        if self.state_of(ref) != "closed":
            self._lines.remove(ref)
            self.report(ref, "closed", {"type": "local_hangup"})

    async def hold(self, ref: str) -> None:
        await self._select(ref)
        await self.command("/hold")

    async def resume(self, ref: str) -> None:
        await self._select(ref)
        await self.command("/resume")

    async def blind_transfer(self, ref: str, target: str) -> None:
        await self._select(ref)
        await self.command(f"/transfer sip:{target}@{self.pbx[0]}:{self.pbx[1]}")

    async def close(self) -> None:
        if self.writer is not None and not self.closed:
            with contextlib.suppress(Exception):
                await self.command("/quit", 2.0)
        if self.writer is not None:
            self.writer.close()
        await self.stop_process(self.proc)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


@asynccontextmanager
async def running_baresip(
    ext: str, port: int, pbx: tuple[str, int], workdir: Path | None = None
) -> AsyncIterator[Baresip]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rig-bs-")))
        phone = Baresip(ext, port, pbx, workdir)
        try:
            await phone.start()
            yield phone
        finally:
            await phone.close()
