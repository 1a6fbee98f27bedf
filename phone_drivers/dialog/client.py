"""An asyncio UDP SIP client for one `[[sources.dialog]]`: one subscription per watched line.

The protocol lives in `bridge.dialog` (sans-I/O); this module owns the socket, the clock and
the timers, and hands the evidence of each NOTIFY to `sink` synchronously, in arrival order.
Malformed SIP or XML is counted and dropped; a subscription that fails is retried with back-off
and shown in `health`; nothing here can stop the API. The password is only ever hashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.dialog import (
    DialogLines,
    DigestCredentials,
    LineView,
    Outgoing,
    Step,
    Subscription,
    SubscriptionSettings,
    SubState,
)
from bridge.dialog.wire import response
from bridge.evidence import PhoneEvent
from bridge.sip import SipParseError, parse_message
from bridge.timefmt import rfc3339

__all__ = ["DialogClient", "DialogStats", "EvidenceSink"]

log = structlog.get_logger("transfer_bridge.dialog")

EvidenceSink = Callable[[list[PhoneEvent]], None]
MAX_DATAGRAM = 65_535
TICK = 0.25  # the timer loop never sleeps longer than this


@dataclass(slots=True)
class DialogStats:
    """Counters for /metrics."""

    datagrams: int = 0
    notifies: int = 0
    documents: int = 0
    malformed: int = 0
    stale: int = 0
    unknown: int = 0  # datagrams for no subscription of ours
    sent: int = 0
    failures: int = 0
    evidence: int = 0

    def as_dict(self) -> dict[str, int]:
        """Name -> count."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Watched:
    subscription: Subscription
    view: LineView = field(default_factory=LineView)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: DialogClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.client.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.warning("dialog_socket_error", source=self.client.name, error=str(exc))


def _local_address(pbx: tuple[str, int], bound: tuple[str, int]) -> tuple[str, int]:
    """The address the PBX can send NOTIFYs to: the bound one, or the route's source address."""
    host, port = bound
    if host not in ("0.0.0.0", "::", ""):
        return host, port
    family = socket.AF_INET6 if ":" in pbx[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(pbx)
        return str(probe.getsockname()[0]), port


class DialogClient:
    """Subscribes to each watched extension's dialog state and turns NOTIFYs into evidence."""

    def __init__(
        self,
        name: str,
        pbx: tuple[str, int],
        listen: tuple[str, int],
        username: str,
        password: str,
        sink: EvidenceSink,
        *,
        domain: str | None = None,
        expires: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for what, value in (("username", username), ("password", password)):
            if not value or any(c in value for c in '\r\n\x00"\\'):
                raise ValueError(f"dialog source {name!r}: {what} is empty or has bad characters")
        self.name = name
        self.pbx = pbx
        self.listen = listen
        self.domain = domain or (f"{pbx[0]}:{pbx[1]}" if pbx[1] != 5060 else pbx[0])
        self.expires = expires
        self._credentials = DigestCredentials(username, password)
        self._sink = sink
        self._clock = clock
        self.lines = DialogLines(name, epoch=f"{int(clock() * 1000):x}")
        self.watched: dict[str, _Watched] = {}
        self._by_call_id: dict[str, str] = {}
        self._phones: dict[str, str] = {}
        self.stats = DialogStats()
        self.local: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.error: str | None = None
        self.since = clock()

    def __repr__(self) -> str:
        return f"<DialogClient {self.name} pbx={self.pbx} lines={len(self.watched)}>"

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the UDP socket and subscribe to every line set so far (an error is reported in
        `health`, not raised)."""
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=self.listen
            )
        except OSError as exc:
            self.error = f"cannot bind {self.listen[0]}:{self.listen[1]}: {exc.strerror or exc}"
            log.error("dialog_listen_failed", source=self.name, error=self.error)
            return
        self._transport = transport
        bound = transport.get_extra_info("sockname")
        self.local = _local_address(self.pbx, (str(bound[0]), int(bound[1])))
        self._task = asyncio.create_task(self._run(), name=f"dialog-{self.name}")
        self._resync()

    async def close(self) -> None:
        """Unsubscribe everything (best effort), close the socket, stop the timers; `start()`
        may be called again."""
        now = self._clock()
        for watched in self.watched.values():
            self._send(watched.subscription.stop(now))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        # Started again later (a lease taken back), every line is subscribed afresh.
        self._task = None
        self.watched.clear()
        self._index()
        self.error = None

    def set_phones(self, phones: dict[str, str]) -> None:
        """Watch exactly these extensions (`exten -> the agent's phone URI`)."""
        self._phones = dict(phones)
        self.lines.set_phones(self._phones)
        if self._transport is not None:
            self._resync()

    def _resync(self) -> None:
        assert self.local is not None
        now = self._clock()
        for ext in [e for e in self.watched if e not in self._phones]:
            self._send(self.watched.pop(ext).subscription.stop(now))
        settings = SubscriptionSettings(
            pbx=self.pbx,
            local=self.local,
            credentials=self._credentials,
            domain=self.domain,
            expires=self.expires,
        )
        for ext in self._phones:
            if ext not in self.watched:
                watched = _Watched(Subscription(ext, settings))
                self.watched[ext] = watched
                self._send(watched.subscription.start(now))
                log.info("dialog_subscribing", source=self.name, extension=ext)
        self._index()
        self._wake.set()

    def _index(self) -> None:
        self._by_call_id = {w.subscription.call_id: e for e, w in self.watched.items()}

    # --- I/O --------------------------------------------------------------------------------

    def _send(self, out: list[Outgoing], to: tuple[str, int] | None = None) -> None:
        if self._transport is None:
            return
        for item in out:
            self._transport.sendto(item.data, to if item.reply and to else self.pbx)
            self.stats.sent += 1

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram from the network (never raises)."""
        self.stats.datagrams += 1
        if len(data) > MAX_DATAGRAM or not data.strip():
            self.stats.malformed += 1
            return
        try:
            message = parse_message(data)
        except SipParseError:
            self.stats.malformed += 1
            return
        ext = self._by_call_id.get(message.call_id)
        if ext is None:
            self.stats.unknown += 1
            if message.is_request and (message.method or "").upper() != "ACK":
                self._send([Outgoing(response(message, 481, "No Subscription"), True)], addr)
            return
        now = self._clock()
        watched = self.watched[ext]
        before = watched.subscription.state
        try:
            step = watched.subscription.receive(message, now)
        except SipParseError:
            self.stats.malformed += 1
            return
        self._send(step.outgoing, addr)
        self._after(ext, watched, before, step, now)

    def _after(self, ext: str, watched: _Watched, before: SubState, step: Step, now: float) -> None:
        sub = watched.subscription
        self.stats.malformed += step.malformed
        if step.new_dialog:
            watched.view.reset()
        if sub.call_id not in self._by_call_id:
            self._index()
        if sub.state is SubState.WAITING and before is not SubState.WAITING:
            self.stats.failures += 1
            log.warning(
                "dialog_subscription_failed", source=self.name, extension=ext, reason=sub.reason
            )
        elif sub.state is SubState.ACTIVE and before is SubState.SUBSCRIBING:
            log.info("dialog_subscribed", source=self.name, extension=ext)
        for document in step.documents:
            self.stats.notifies += 1
            stale_before = watched.view.stale
            if not watched.view.apply(document):
                self.stats.stale += watched.view.stale - stale_before
                continue
            self.stats.documents += 1
            events = self.lines.update(ext, list(watched.view.dialogs.values()), now)
            self._deliver(events)
        self._wake.set()

    def _deliver(self, events: list[PhoneEvent]) -> None:
        if not events:
            return
        self.stats.evidence += len(events)
        try:
            self._sink(events)
        except Exception:
            log.exception("dialog_sink_failed", source=self.name)

    async def _run(self) -> None:
        """Timers: retransmissions, refreshes, re-subscriptions and the lines' settle windows."""
        while True:
            now = self._clock()
            for ext, watched in list(self.watched.items()):
                sub = watched.subscription
                deadline = sub.next_deadline()
                if deadline is not None and deadline <= now:
                    before = sub.state
                    out = sub.timer(now)
                    self._send(out)
                    if sub.state is SubState.SUBSCRIBING and before is SubState.WAITING:
                        watched.view.reset()
                    self._after(ext, watched, before, Step(), now)
            deadline = self.lines.next_deadline()
            if deadline is not None and deadline <= now:
                self._deliver(self.lines.expire(now))
            times = [w.subscription.next_deadline() for w in self.watched.values()]
            times.append(self.lines.next_deadline())
            upcoming = min((t for t in times if t is not None), default=now + TICK)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(upcoming - now, TICK)))

    # --- health -----------------------------------------------------------------------------

    @property
    def subscribed(self) -> int:
        """Lines watched for real: a live subscription whose first state document arrived.

        RFC 6665 starts a subscription with the PBX's NOTIFY, not with the 200 to SUBSCRIBE: until
        that NOTIFY the line's state is unknown, and a call that rings then is read as "already
        up when we subscribed" (no caller number, nothing to bind a session to)."""
        return sum(
            w.subscription.state in (SubState.ACTIVE, SubState.REFRESHING)
            and w.view.version is not None
            for w in self.watched.values()
        )

    def health(self) -> dict[str, Any]:
        """What /healthz shows: `subscribed` (all lines), `subscribing`, or `failing`."""
        total = len(self.watched)
        up = self.subscribed
        out: dict[str, Any] = {
            "kind": "dialog",
            "address": f"{self.pbx[0]}:{self.pbx[1]}",
            "subscribed": f"{up}/{total}",
        }
        if self.local is not None:
            out["listen"] = f"{self.local[0]}:{self.local[1]}"
        reasons = sorted(
            {
                f"{e}: {w.subscription.reason}"
                for e, w in self.watched.items()
                if w.subscription.state is SubState.WAITING and w.subscription.reason
            }
        )
        if self.error is not None:
            out.update(status="failing", error=self.error)
        elif reasons:
            out.update(status="failing", reason=reasons[0].split(": ", 1)[1])
            out["error"] = "; ".join(reasons[:5])
        elif up == total:
            out["status"] = "subscribed"
        else:
            out["status"] = "subscribing"
        out["since"] = rfc3339(self.since)
        return out
