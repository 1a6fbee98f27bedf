"""What the rig needs of an agent phone that is not pjsua2 (``tests/rig/baresip.py``,
``tests/rig/linphone.py``): place, answer, hold, resume and end calls, transfer them, and
report each call's state.

Calls are named by refs the driver chooses; states are ``incoming``, ``ringing``,
``established``, ``closed``. Every report is kept in ``events`` (dicts with ``ref``, ``state``,
``t`` = wall-clock time and the client's own fields), and ``wait_state`` looks at those already
received and then at new ones, so a test never misses a report that came before it waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from bridge.uris import uri_of_header, user_of_uri


class AgentPhoneFailed(RuntimeError):
    """The client died, refused a command, or an awaited state did not come."""


def user_of(uri: str) -> str | None:
    """The user part of a URI or name-addr (``"Customer" <sip:2000@host>`` -> ``2000``)."""
    return user_of_uri(uri_of_header(uri)) if uri else None


class AgentPhone:
    """Base of the client drivers: call-state reports and waiting for them."""

    name = "agent"
    attended = False  # whether the client can send a REFER with Replaces

    def __init__(self, ext: str, port: int, pbx: tuple[str, int]) -> None:
        self.ext = ext
        self.port = port
        self.pbx = pbx
        self.events: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    def report(self, ref: str, state: str, detail: dict[str, Any] | None = None) -> None:
        self.events.append({"ref": ref, "state": state, "t": time.time(), **(detail or {})})
        self.changed()

    def log_tail(self, lines: int = 30) -> str:
        return ""

    def state_of(self, ref: str) -> str | None:
        states = [e["state"] for e in self.events if e["ref"] == ref]
        return states[-1] if states else None

    async def wait_state(
        self, state: str, ref: str | None = None, time_limit: float = 10.0, since: int = 0
    ) -> dict[str, Any]:
        """The first report of ``state`` (for call ``ref``) from index ``since`` on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit
        index = since
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if event["state"] == state and (ref is None or event["ref"] == ref):
                    return event
            if self.closed:
                raise AgentPhoneFailed(f"{self.name} {self.ext} ended:\n{self.log_tail()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = [(e["ref"], e["state"]) for e in self.events[-10:]]
                raise AgentPhoneFailed(
                    f"{self.name} {self.ext}: no {state} of {ref} within {time_limit} s; "
                    f"last reports {recent}\n{self.log_tail()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def stop_process(self, proc: asyncio.subprocess.Process | None, grace: float = 3.0):
        """End the client's process group (it was started in a session of its own)."""
        if proc is None or proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    # -- what each driver implements
    async def call(self, to: str) -> str:
        raise NotImplementedError

    async def answer(self, ref: str) -> None:
        raise NotImplementedError

    async def hangup(self, ref: str) -> None:
        raise NotImplementedError

    async def hold(self, ref: str) -> None:
        raise NotImplementedError

    async def resume(self, ref: str) -> None:
        raise NotImplementedError

    async def blind_transfer(self, ref: str, target: str) -> None:
        raise NotImplementedError

    async def attended_transfer(self, ref: str, consult_ref: str) -> None:
        raise AgentPhoneFailed(f"{self.name} cannot do an attended transfer")

    async def close(self) -> None:
        raise NotImplementedError
