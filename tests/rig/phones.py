"""Asyncio client for the pjsua2 phone process (``tests/rig/softphone.py``).

    async with running_phones({"1001": p1, "1002": p2, "2000": p3}, workdir=tmp) as phones:
        await phones.behaviour("1002", "auto", delay_ms=200)
        call = await phones.call("2000", "1001")          # {"ref": "c1", "call_id": "..."}
        incoming = await phones.wait_state("1001", "INCOMING")
        await phones.answer("1001", incoming["ref"])
        await phones.wait_state("2000", "CONFIRMED", ref=call["ref"])
        await phones.blind_transfer("1001", incoming["ref"], "1002")
        await phones.wait_for(lambda e: e["ev"] == "xfer_status" and e["final"], 10)

Every report the process wrote is kept in ``phones.events`` (dicts, in order); ``wait_for``
looks at those already received (from ``since``, an index into ``events``) and then at new
ones. If the process dies, every wait and command fails with :class:`PhonesFailed` showing the
tail of its stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.rig.procs import LOCALHOST, tail_of, udp_port_bound

REPO = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


class PhonesFailed(RuntimeError):
    """A phone process died, refused a command, or an awaited report did not come."""


class _PhoneProcess:
    """One softphone process (one phone: this pjsua2 build holds at most 4 calls a process)."""

    def __init__(self, owner: Phones, ext: str, proc: asyncio.subprocess.Process, stderr: Path):
        self.owner = owner
        self.ext = ext
        self.proc = proc
        self.stderr_path = stderr
        self.replies: dict[int, asyncio.Future[Event]] = {}
        self.eof = False
        self.reader = asyncio.create_task(self._read())

    def stderr_tail(self, lines: int = 30) -> str:
        return tail_of(self.stderr_path, lines)

    def died(self) -> PhonesFailed:
        return PhonesFailed(
            f"phone {self.ext} process exited (code {self.proc.returncode}); stderr tail "
            f"({self.stderr_path}):\n{self.stderr_tail()}"
        )

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("ev") == "reply":
                    fut = self.replies.pop(event.get("id", -1), None)
                    if fut is not None and not fut.done():
                        fut.set_result(event)
                self.owner._add(event)
        finally:
            self.eof = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(self.died())
            self.replies.clear()
            self.owner._add(None)

    async def command(self, cid: int, cmd: str, time_limit: float, args: dict[str, Any]) -> Event:
        if self.eof:
            raise self.died()
        assert self.proc.stdin is not None
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self.replies[cid] = fut
        line = json.dumps({"id": cid, "cmd": cmd, **args}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            self.replies.pop(cid, None)
            raise self.died() from None
        try:
            return await asyncio.wait_for(fut, time_limit)
        except TimeoutError:
            self.replies.pop(cid, None)
            raise PhonesFailed(
                f"phone {self.ext}: no reply to {cmd} {args} in {time_limit} s"
            ) from None

    async def close(self, grace: float) -> None:
        """Close stdin (the process hangs up and exits); kill it if it lingers."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.proc.stdin.wait_closed()
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.reader, 2)
        if not self.reader.done():
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


class Phones:
    """The running phones (one process each): send commands, await reports."""

    def __init__(self, ports: dict[str, int], pbx: tuple[str, int], workdir: Path) -> None:
        self.ports = dict(ports)
        self.pbx = pbx
        self.workdir = workdir
        self.events: list[Event] = []
        self.procs: dict[str, _PhoneProcess] = {}
        self._changed = asyncio.Event()
        self._next_id = 1

    def _add(self, event: Event | None) -> None:
        if event is not None:
            self.events.append(event)
        self._changed.set()

    def _dead(self) -> PhonesFailed | None:
        for p in self.procs.values():
            if p.eof:
                return p.died()
        return None

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(f"[{ext}]\n{p.stderr_tail(lines)}" for ext, p in self.procs.items())

    async def command(
        self, cmd: str, time_limit: float = 5.0, *, phone: str, **args: Any
    ) -> dict[str, Any]:
        """Send one command to ``phone``'s process and return its ``result``."""
        proc = self.procs.get(phone)
        if proc is None:
            raise PhonesFailed(f"no phone {phone!r} (have {sorted(self.procs)})")
        cid = self._next_id
        self._next_id += 1
        reply = await proc.command(cid, cmd, time_limit, {"phone": phone, **args})
        if not reply.get("ok"):
            raise PhonesFailed(f"{phone}: {cmd} {args} failed: {reply.get('error')}")
        result: dict[str, Any] = reply.get("result") or {}
        return result

    async def wait_for(
        self, predicate: Callable[[Event], bool], time_limit: float = 10.0, *, since: int = 0
    ) -> Event:
        """The first report (from index ``since``) for which ``predicate`` holds."""
        index = since
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if predicate(event):
                    return event
            dead = self._dead()
            if dead is not None:
                raise dead
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n".join(json.dumps(e) for e in self.events[-15:])
                raise PhonesFailed(
                    f"no matching phone report within {time_limit} s; last reports:\n{recent}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_state(
        self,
        phone: str,
        state: str,
        *,
        ref: str | None = None,
        time_limit: float = 10.0,
        since: int = 0,
    ) -> Event:
        """The first ``call_state`` report of ``phone`` (and call ``ref``) reaching ``state``."""

        def match(e: Event) -> bool:
            return (
                e.get("ev") == "call_state"
                and e.get("phone") == phone
                and e.get("state") == state
                and (ref is None or e.get("ref") == ref)
            )

        return await self.wait_for(match, time_limit, since=since)

    async def wait_xfer_final(self, phone: str, ref: str, time_limit: float = 10.0) -> Event:
        """The final ``xfer_status`` (last NOTIFY) of the transfer made on ``phone``'s ``ref``."""
        return await self.wait_for(
            lambda e: (
                e.get("ev") == "xfer_status"
                and e.get("phone") == phone
                and e.get("ref") == ref
                and bool(e.get("final"))
            ),
            time_limit,
        )

    def calls_of(self, phone: str) -> dict[str, Event]:
        """Last known state of each call of ``phone`` (ref -> last call_state report)."""
        out: dict[str, Event] = {}
        for e in self.events:
            if e.get("ev") == "call_state" and e.get("phone") == phone:
                out[e["ref"]] = e
        return out

    def state_of(self, ref: str) -> str | None:
        """The last reported state of call ``ref``."""
        state = None
        for e in self.events:
            if e.get("ev") == "call_state" and e.get("ref") == ref:
                state = e.get("state")
        return state

    # ---- commands
    async def call(self, phone: str, to: str) -> dict[str, Any]:
        """``phone`` dials extension ``to``; returns ``{"ref", "call_id"}``."""
        return await self.command("call", phone=phone, to=to)

    async def answer(self, phone: str, ref: str, code: int = 200) -> None:
        await self.command("answer", phone=phone, ref=ref, code=code)

    async def hangup(self, phone: str, ref: str, code: int = 0) -> bool:
        """Hang up (BYE, CANCEL, or reject with ``code``); False if the far end had ended it."""
        result = await self.command("hangup", phone=phone, ref=ref, code=code)
        return not result.get("already_ended", False)

    async def hold(self, phone: str, ref: str) -> None:
        await self.command("hold", phone=phone, ref=ref)

    async def unhold(self, phone: str, ref: str) -> None:
        await self.command("unhold", phone=phone, ref=ref)

    async def blind_transfer(
        self, phone: str, ref: str, target: str, *, hangup_on_success: bool = True
    ) -> None:
        """REFER call ``ref`` to extension ``target``; the phone hangs the call up after a final
        2xx NOTIFY unless ``hangup_on_success`` is false (Asterisk does not BYE it)."""
        await self.command(
            "blind_transfer",
            phone=phone,
            ref=ref,
            target=target,
            hangup_on_success=hangup_on_success,
        )

    async def answer_then_transfer(
        self, phone: str, ref: str, target: str, *, hangup_on_success: bool = True
    ) -> None:
        """200 OK and REFER in the same instant (the race Asterisk answers with Invalid)."""
        await self.command(
            "answer_then_transfer",
            phone=phone,
            ref=ref,
            target=target,
            hangup_on_success=hangup_on_success,
        )

    async def attended_transfer(
        self, phone: str, ref: str, consult_ref: str, *, hangup_on_success: bool = True
    ) -> None:
        """REFER call ``ref`` with Replaces naming the consult call ``consult_ref``."""
        await self.command(
            "attended_transfer",
            phone=phone,
            ref=ref,
            consult_ref=consult_ref,
            hangup_on_success=hangup_on_success,
        )

    async def behaviour(self, phone: str, mode: str, delay_ms: int = 0, code: int = 200) -> None:
        """Incoming calls: ``manual`` (ring until told), ``auto`` (ring delay_ms, then answer
        with ``code``: 200, or e.g. 486/603 to refuse after ringing), ``busy`` (486 at once)."""
        await self.command("behaviour", phone=phone, mode=mode, delay_ms=delay_ms, code=code)

    async def calls(self, phone: str) -> list[Event]:
        """What ``phone``'s process knows of its calls now."""
        result = await self.command("calls", phone=phone)
        calls: list[Event] = result["calls"]
        return calls

    # ---- life cycle
    async def start(self, ext: str, start_timeout: float) -> None:
        port = self.ports[ext]
        stderr_path = self.workdir / f"phone-{ext}.stderr"
        argv = [
            sys.executable,
            "-m",
            "tests.rig.softphone",
            "--pbx",
            f"{self.pbx[0]}:{self.pbx[1]}",
        ]
        argv += ["--phone", f"{ext}={port}", "--log", str(self.workdir / f"pjsua-{ext}.log")]
        err = stderr_path.open("wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=REPO,
            )
        finally:
            err.close()
        self.procs[ext] = _PhoneProcess(self, ext, proc, stderr_path)
        try:
            await self.wait_for(
                lambda e: e.get("ev") == "ready" and ext in e.get("phones", {}), start_timeout
            )
        except PhonesFailed as exc:
            raise PhonesFailed(f"{exc}\n(port {port} bound now: {udp_port_bound(port)})") from None

    async def close(self, grace: float = 3.0) -> None:
        """End every phone process (each hangs up what it has left first)."""
        await asyncio.gather(*(p.close(grace) for p in self.procs.values()))


@asynccontextmanager
async def running_phones(
    ports: dict[str, int],
    pbx: tuple[str, int] = (LOCALHOST, 5070),
    workdir: Path | None = None,
    *,
    start_timeout: float = 10.0,
) -> AsyncIterator[Phones]:
    """Start the phones ``ext -> UDP port`` (one pjsua2 process each); stop them on exit.

    ``workdir`` receives ``phone-<ext>.stderr`` and ``pjsua-<ext>.log`` (default: a temp
    folder, removed on exit)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rig-phones-")))
        workdir.mkdir(parents=True, exist_ok=True)
        phones = Phones(ports, pbx, workdir)
        try:
            await asyncio.gather(*(phones.start(ext, start_timeout) for ext in ports))
            yield phones
        finally:
            await phones.close()
