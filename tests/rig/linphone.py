"""liblinphone (belle-sip) as an agent phone on the Asterisk rig, driven through
``linphone-daemon``, the command-line daemon of Debian's ``linphone-cli`` 5.1
(``scripts/rig/install.sh``; the same stack as ``linphonec``).

One process per phone, no registration (a proxy configuration with ``reg_sendregister=0`` gives
the identity ``sip:<ext>@127.0.0.1``; Asterisk reaches the phone through the static contact of
``docker/asterisk/pjsip.conf`` and recognises it by its source port), UDP on
``127.0.0.1:PORT``. There is no sound card: liblinphone runs the calls without one. Its Contact
has no user part (``<sip:127.0.0.1:PORT;transport=udp>;+sip.instance=...``), one reason the
bridge never reads a phone's identity from its Contact.

Control: one command a line on stdin (``call sip:...``, ``answer ID``, ``call-pause ID``,
``call-resume ID``, ``terminate ID``, ``call-transfer ID sip:...`` blind, ``call-transfer ID
ID2`` attended: REFER with Replaces naming call ID2); each is answered by ``Status: Ok`` (with
``Id: N`` for ``call``) or ``Status: Error`` / ``Reason: ...``, and events arrive as
``Event-type: call-state-changed`` / ``Event: LinphoneCall<State>`` / ``From: ...`` / ``Id: N``.
The refs of this driver are the far end's user part (``"2000"``, ``"1002"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.rig.agent import AgentPhone, AgentPhoneFailed, user_of
from tests.rig.procs import LOCALHOST, free_udp_ports, tail_of

DAEMON = "linphone-daemon"
PROMPT = b"daemon-linphone>"
STATES = {
    "LinphoneCallIncomingReceived": "incoming",
    "LinphoneCallOutgoingRinging": "ringing",
    "LinphoneCallOutgoingEarlyMedia": "ringing",
    "LinphoneCallConnected": "established",
    "LinphoneCallPaused": "paused",
    "LinphoneCallResuming": "resuming",
    "LinphoneCallStreamsRunning": "streams",
    "LinphoneCallEnd": "closed",
    "LinphoneCallError": "closed",
    "LinphoneCallReleased": "released",
}


def have_linphone() -> bool:
    return shutil.which(DAEMON) is not None


def write_config(path: Path, ext: str) -> None:
    rtp = free_udp_ports(1)[0]
    path.write_text(
        "\n".join(
            [
                "[sip]",
                "sip_tcp_port=-1",
                "sip_tls_port=-1",
                "default_proxy=0",
                "[rtp]",
                f"audio_rtp_port={rtp}",
                "[video]",
                "enabled=0",
                "automatically_initiate=0",
                "automatically_accept=0",
                "[proxy_0]",
                f"reg_proxy=<sip:{LOCALHOST}:5070>",
                f"reg_identity=sip:{ext}@{LOCALHOST}",
                "reg_sendregister=0",
                "",
            ]
        )
    )


class Linphone(AgentPhone):
    """One linphone-daemon process for one extension."""

    name = "linphone"
    attended = True

    def __init__(self, ext: str, port: int, pbx: tuple[str, int], workdir: Path) -> None:
        super().__init__(ext, port, pbx)
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._reply: asyncio.Future[dict[str, str]] | None = None
        self._lock = asyncio.Lock()
        self._ids: dict[str, str] = {}  # ref -> the daemon's call id
        self._refs: dict[str, str] = {}  # call id -> ref
        self._event: dict[str, str] | None = None
        self._answer: dict[str, str] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"linphone-{self.ext}.log"

    def log_tail(self, lines: int = 30) -> str:
        return tail_of(self.workdir / f"linphone-{self.ext}.out", lines)

    async def start(self, time_limit: float = 10.0) -> None:
        rc = self.workdir / f"linphonerc-{self.ext}"
        write_config(rc, self.ext)
        home = self.workdir / f"linphone-home-{self.ext}"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            DAEMON,
            "--config",
            str(rc),
            "--log",
            str(self.log_path),
            "--disable-stats-events",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
        self._pump = asyncio.create_task(self._read())
        await self.command(f"port sip {self.port} udp", time_limit)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out = (self.workdir / f"linphone-{self.ext}.out").open("ab")
        buf = b""
        try:
            while True:
                chunk = await self.proc.stdout.read(65536)
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
                buf += chunk
                while True:
                    prompt = buf.find(PROMPT)
                    newline = buf.find(b"\n")
                    if prompt >= 0 and (newline < 0 or prompt < newline):
                        self._line(buf[:prompt].decode(errors="replace"))
                        self._prompt()
                        buf = buf[prompt + len(PROMPT) :]
                    elif newline >= 0:
                        self._line(buf[:newline].decode(errors="replace"))
                        buf = buf[newline + 1 :]
                    else:
                        break
        finally:
            out.close()
            self.closed = True
            if self._reply is not None and not self._reply.done():
                self._reply.set_exception(AgentPhoneFailed(f"linphone gone:\n{self.log_tail()}"))
            self.changed()

    def _prompt(self) -> None:
        """The daemon waits for the next command: the answer to the last one is complete."""
        if self._answer is not None and self._reply is not None and not self._reply.done():
            self._reply.set_result(self._answer)
        self._answer = None

    def _line(self, line: str) -> None:
        key, sep, value = line.strip().partition(": ")
        if not sep:
            return
        if key == "Status":
            self._answer = {"Status": value}
        elif key == "Event-type":
            self._prompt()
            self._event = {"Event-type": value}
        elif self._event is not None:
            self._event[key] = value
            if key == "Id":
                self._call_event(self._event)
                self._event = None
        elif self._answer is not None:
            self._answer[key] = value

    def _call_event(self, event: dict[str, str]) -> None:
        if event.get("Event-type") != "call-state-changed":
            return
        state = STATES.get(event.get("Event", ""))
        call_id = event["Id"]
        ref = self._refs.get(call_id)
        if ref is None:
            ref = user_of(event.get("From", "")) or f"call-{call_id}"
            self._refs[call_id], self._ids[ref] = ref, call_id
        if state is not None:
            self.report(ref, state, {"linphone": event.get("Event")})

    async def command(self, text: str, time_limit: float = 5.0) -> dict[str, str]:
        if self.proc is None or self.proc.stdin is None or self.closed:
            raise AgentPhoneFailed(f"linphone gone:\n{self.log_tail()}")
        async with self._lock:
            self._reply = asyncio.get_running_loop().create_future()
            self.proc.stdin.write(text.encode() + b"\n")
            await self.proc.stdin.drain()
            try:
                reply = await asyncio.wait_for(self._reply, time_limit)
            except TimeoutError:
                raise AgentPhoneFailed(f"linphone: no answer to {text!r}") from None
        if reply.get("Status") != "Ok":
            raise AgentPhoneFailed(f"linphone {text!r}: {reply.get('Reason')}")
        return reply

    def _id(self, ref: str) -> str:
        call_id = self._ids.get(ref)
        if call_id is None:
            raise AgentPhoneFailed(f"linphone has no call with {ref} (has {sorted(self._ids)})")
        return call_id

    # -- AgentPhone
    async def call(self, to: str) -> str:
        reply = await self.command(f"call sip:{to}@{self.pbx[0]}:{self.pbx[1]}")
        call_id = reply["Id"]
        self._ids[to], self._refs[call_id] = call_id, to
        return to

    async def answer(self, ref: str) -> None:
        await self.command(f"answer {self._id(ref)}")

    async def hangup(self, ref: str) -> None:
        await self.command(f"terminate {self._id(ref)}")

    async def hold(self, ref: str) -> None:
        await self.command(f"call-pause {self._id(ref)}")

    async def resume(self, ref: str) -> None:
        await self.command(f"call-resume {self._id(ref)}")

    async def blind_transfer(self, ref: str, target: str) -> None:
        await self.command(
            f"call-transfer {self._id(ref)} sip:{target}@{self.pbx[0]}:{self.pbx[1]}"
        )

    async def attended_transfer(self, ref: str, consult_ref: str) -> None:
        await self.command(f"call-transfer {self._id(ref)} {self._id(consult_ref)}")

    async def close(self) -> None:
        proc = self.proc
        if proc is not None and proc.stdin is not None and not self.closed:
            with contextlib.suppress(Exception):
                for ref in list(self._ids):
                    if self.state_of(ref) not in ("closed", "released", None):
                        await self.command(f"terminate {self._ids[ref]}", 2.0)
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
                proc.stdin.close()
        await self.stop_process(proc)
        if self._pump is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 2)


@asynccontextmanager
async def running_linphone(
    ext: str, port: int, pbx: tuple[str, int], workdir: Path | None = None
) -> AsyncIterator[Linphone]:
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rig-lp-")))
        phone = Linphone(ext, port, pbx, workdir)
        try:
            await phone.start()
            yield phone
        finally:
            await phone.close()
