"""An asyncio AMI client for one ``[[sources.ami]]``: connect, log in, hand on every event.

The bytes are framed by the sans-I/O ``bridge.ami.AmiParser``; this module owns the socket, the
timers and the retries. docs/benchmarks.md: Asterisk drops a manager client that does not read fast
enough, so every event read is handed to the sink synchronously, in order, with no await per
event. Any failure (unreachable, refused login, garbage, a silent peer) closes the connection,
is counted and shown in ``health``, and the client tries again with back-off until ``close()``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog

from bridge.ami import (
    DEFAULT_MAX_MESSAGE_SIZE,
    AmiBanner,
    AmiConnectionClosed,
    AmiEvent,
    AmiResponse,
    encode_action,
)
from phone_drivers.ami.backoff import AmiTimeouts, Backoff
from phone_drivers.ami.connection import (
    READ_SIZE,
    AmiConnection,
    ConnectionFailure,
    describe,
    open_connection,
)
from phone_drivers.ami.stats import AmiHealth, AmiStats, AmiStatus, FailureReason, count_failure

__all__ = ["AmiClient", "AmiNotConnected", "ConnectedHook", "EventSink"]

log = structlog.get_logger("transfer_bridge.ami")

EventSink = Callable[[AmiEvent, float], None]
ConnectedHook = Callable[[], Awaitable[None] | None]


class AmiNotConnected(ConnectionError):
    """There is no logged-in AMI connection to send an action on (or it dropped meanwhile)."""


class AmiClient:
    """Keeps one logged-in AMI connection to ``host:port`` and hands every event to ``sink``.

    ``sink(event, received_at)`` is called synchronously, in wire order; an exception in it is
    counted and logged, never fatal. ``on_connected()`` runs after each successful login, before
    any event of that connection reaches the sink (a returned awaitable runs as a task, so it
    may itself ``await action(...)``).
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        username: str,
        secret: str,
        sink: EventSink,
        *,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        timeouts: AmiTimeouts | None = None,
        on_connected: ConnectedHook | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        for what, value in (("username", username), ("secret", secret)):
            # Checked here so that no later error message can ever quote the secret.
            if not value or any(c in value for c in "\r\n\x00"):
                raise ValueError(f"AMI source {name!r}: {what} is empty or has CR, LF or NUL")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"AMI source {name!r}: {what} is not valid text") from None
        self.name = name
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self._sink = sink
        self._clock = clock
        self.backoff = backoff or Backoff()
        self.timeouts = timeouts or AmiTimeouts()
        self.on_connected = on_connected
        self._max_message_size = max_message_size
        self._rng = rng or random.Random()
        self.stats = AmiStats()
        self.banner: str | None = None  # e.g. "Asterisk Call Manager/11.0.0", once seen
        self._health = AmiHealth(_address(host, port), clock)
        self._conn: AmiConnection | None = None
        self._up = asyncio.Event()
        self._pending: dict[str, asyncio.Future[AmiResponse]] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<AmiClient {self.name} {self.address} {self._health.status}>"

    @property
    def address(self) -> str:
        """``host:port`` as configured (IPv6 hosts in brackets)."""
        return self._health.address

    @property
    def connected(self) -> bool:
        """True while logged in."""
        return self._health.status is AmiStatus.CONNECTED

    @property
    def health(self) -> dict[str, Any]:
        """What /healthz shows: ``{"kind": "ami", "status", "address", "reason", "error",
        "since"}`` (plus ``retry_in`` seconds while failing); ``since`` is clock time."""
        return self._health.as_dict()

    def start(self) -> None:
        """Start connecting in a background task (needs a running loop); idempotent."""
        if self._task is None:
            self._health.starting()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"ami-{self.name}"
            )

    async def close(self) -> None:
        """Stop at once, whatever the client is doing; no task or socket is left behind."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:
            log.exception("ami_client_error", source=self.name)
        finally:
            self._health.stopped()
        log.info("ami_closed", source=self.name)

    async def wait_connected(self, within: float) -> bool:
        """Wait up to ``within`` seconds until logged in; False when the time ran out."""
        try:
            async with asyncio.timeout(within):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    async def action(
        self,
        name: str,
        fields: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        response_timeout: float | None = None,
        **more: str,
    ) -> AmiResponse:
        """Send ``Action: name`` with ``fields`` (and ``Key=value`` keywords); await its response.

        Returns the response whatever it says (check ``.ok``). Raises ``AmiNotConnected`` when
        not logged in or when the connection drops first, ``TimeoutError`` after
        ``response_timeout`` (default ``timeouts.action``), ``AmiActionError`` (a ValueError)
        for a field that cannot be sent. The events of a list action (``EventList: start``)
        go to the sink like every other event.
        """
        conn = self._conn
        if conn is None or conn.up_since is None:
            raise AmiNotConnected(f"AMI source {self.name} is not connected")
        pairs = list(fields.items() if isinstance(fields, Mapping) else fields)
        pairs.extend(more.items())
        action_id = f"tb-{next(self._ids)}"
        data = encode_action(name, pairs, action_id)
        wait = self.timeouts.action if response_timeout is None else response_timeout
        future: asyncio.Future[AmiResponse] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            async with asyncio.timeout(wait):
                conn.send(data)
                await conn.writer.drain()
                return await future
        except TimeoutError:
            self.stats.action_timeouts += 1
            raise TimeoutError(f"no response to {name} within {wait:g} s") from None
        except AmiNotConnected:
            raise
        except OSError as exc:  # the socket failed under the write
            raise AmiNotConnected(f"AMI source {self.name}: {describe(exc)}") from None
        finally:
            self._pending.pop(action_id, None)

    # --- the connection loop -----------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            failure, up_since = await self._attempt()
            if up_since is not None and loop.time() - up_since >= self.backoff.stable_after:
                failures = 0
            failures += 1
            delay = self.backoff.delay(
                failures, self._rng, auth_failed=failure.reason is FailureReason.AUTH_FAILED
            )
            was_up = up_since is not None
            count_failure(self.stats, failure.reason, was_up=was_up)
            self._health.failing(failure.reason, failure.detail, delay)
            log.warning(
                "ami_disconnected" if was_up else "ami_connect_failed",
                source=self.name,
                address=self.address,
                reason=str(failure.reason),
                error=failure.detail,
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _attempt(self) -> tuple[ConnectionFailure, float | None]:
        """One connection from connect to its end: why it ended, and since when it was up."""
        self.stats.attempts += 1
        try:
            conn = await open_connection(
                self.host,
                self.port,
                self.timeouts.connect,
                source=self.name,
                stats=self.stats,
                max_message_size=self._max_message_size,
            )
        except ConnectionFailure as refused:
            return refused, None
        self._conn = conn
        try:
            await self._handshake(conn)
            self._logged_in(conn)
            await self._serve(conn)
            failure = ConnectionFailure(FailureReason.DISCONNECTED, "connection ended")
        except ConnectionFailure as exc:
            failure = exc
        except OSError as exc:
            failure = ConnectionFailure(FailureReason.DISCONNECTED, describe(exc))
        except Exception as exc:  # a bug here must not end the source: count, log, retry
            log.exception("ami_client_error", source=self.name)
            failure = ConnectionFailure(FailureReason.INTERNAL_ERROR, type(exc).__name__)
        finally:
            self._drop(conn)
            await conn.close()
        return conn.failure or failure, conn.up_since

    async def _handshake(self, conn: AmiConnection) -> None:
        """Banner, then Login; returns when Asterisk accepted the login."""
        deadline = asyncio.get_running_loop().time()
        t = self.timeouts
        detail = f"no AMI banner within {t.banner:g} s"
        item = await conn.read_item(
            deadline + t.banner, FailureReason.NO_BANNER, detail, self._clock
        )
        if not isinstance(item, AmiBanner):
            raise ConnectionFailure(FailureReason.DISCONNECTED, "closed before sending a banner")
        self.banner = f"{item.product}/{item.version}"
        login_id = f"tb-{next(self._ids)}"
        conn.send(self._login(login_id))
        deadline = asyncio.get_running_loop().time() + t.login
        detail = f"no answer to Login within {t.login:g} s"
        while True:
            item = await conn.read_item(deadline, FailureReason.NO_LOGIN_REPLY, detail, self._clock)
            if isinstance(item, AmiResponse) and item.action_id == login_id:
                break
            if isinstance(item, AmiConnectionClosed):
                detail = "closed before answering Login"
                raise ConnectionFailure(FailureReason.DISCONNECTED, detail)
            self.stats.unexpected += 1  # nothing but the answer is due before the login
        if item.response == "Success":
            return
        message = item.get("Message") or f"Response: {item.response}"
        if "authentication" in message.lower():
            raise ConnectionFailure(FailureReason.AUTH_FAILED, message)
        raise ConnectionFailure(FailureReason.LOGIN_FAILED, message)

    def _login(self, action_id: str) -> bytes:
        # Its own frame, so that no traceback of the handshake holds the secret in a local.
        fields = (("Username", self.username), ("Secret", self._secret), ("Events", "on"))
        return encode_action("Login", fields, action_id)

    def _logged_in(self, conn: AmiConnection) -> None:
        conn.up_since = asyncio.get_running_loop().time()
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self._health.connected()
        self._up.set()
        log.info("ami_connected", source=self.name, address=self.address, banner=self.banner)
        conn.tasks.append(asyncio.create_task(self._keepalive(conn), name=f"ami-ping-{self.name}"))
        if self.on_connected is None:
            return
        try:
            result = self.on_connected()
        except Exception:
            self.stats.hook_errors += 1
            log.exception("ami_on_connected_failed", source=self.name)
            return
        if inspect.isawaitable(result):
            conn.tasks.append(asyncio.ensure_future(self._await_hook(result)))

    async def _await_hook(self, result: Awaitable[None]) -> None:
        try:
            await result
        except AmiNotConnected:
            pass  # the connection dropped meanwhile; the hook runs again after the next login
        except Exception:
            self.stats.hook_errors += 1
            log.exception("ami_on_connected_failed", source=self.name)

    async def _serve(self, conn: AmiConnection) -> None:
        """Read and dispatch until the connection ends (always by raising)."""
        reader, clock = conn.reader, self._clock
        while True:
            self._dispatch(conn)
            data = await reader.read(READ_SIZE)
            conn.received_at = clock()
            conn.receive(data)

    def _dispatch(self, conn: AmiConnection) -> None:
        """Hand every buffered event to the sink and every response to its waiter."""
        sink, stats, at = self._sink, self.stats, conn.received_at
        while True:
            item = conn.next_item()
            if isinstance(item, AmiEvent):
                stats.events += 1
                try:
                    sink(item, at)
                except Exception:
                    stats.sink_errors += 1
                    log.exception("ami_event_failed", source=self.name, ami_event=item.name)
            elif isinstance(item, AmiResponse):
                future = self._pending.get(item.action_id or "")
                if future is None or future.done():
                    stats.unexpected += 1  # e.g. the answer to an action that timed out
                else:
                    future.set_result(item)
            elif isinstance(item, AmiConnectionClosed):
                detail = "Asterisk closed the connection"
                raise ConnectionFailure(FailureReason.DISCONNECTED, detail)
            else:
                return

    async def _keepalive(self, conn: AmiConnection) -> None:
        t = self.timeouts
        while True:
            await asyncio.sleep(t.ping_interval)
            try:
                await self.action("Ping", response_timeout=t.ping_timeout)
            except TimeoutError:
                detail = f"no answer to Ping within {t.ping_timeout:g} s"
                conn.abort(ConnectionFailure(FailureReason.PING_TIMEOUT, detail))
                return
            except AmiNotConnected:
                return

    def _drop(self, conn: AmiConnection) -> None:
        """Forget the connection; every action still waiting fails with AmiNotConnected."""
        self._conn = None
        self._up.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AmiNotConnected(f"AMI source {self.name}: connection lost"))
        self._pending.clear()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
