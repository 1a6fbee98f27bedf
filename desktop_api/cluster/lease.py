"""Source leases: a source that must run on one instance at a time (an AMI login, a dialog-info
subscriber) runs only on the instance that holds its lease.

A lease is a PostgreSQL *session* advisory lock (`pg_try_advisory_lock(key)`, key = the first 8
bytes of sha256("transfer-bridge lease " + name)) taken on a connection of its own, whose
`application_name` is `transfer-bridge <instance>`: the server itself says who holds what
(`pg_locks` joined with `pg_stat_activity`), and drops the lock the moment it drops the
connection (the holding process died, was killed, or its connection broke).

One :class:`LeaseKeeper` per instance keeps every lease of the instance on that connection:

- a lease not held is tried every `retry` seconds (a standby);
- the keeper watches its connection all the time (it waits on the socket between two checks, so
  a connection the server ends is seen at once) and checks it every `retry` seconds with a short
  time-out; when the connection breaks, every held lease is lost *at once*: its source is
  stopped before anything else, because another instance may take the lease now;
- the server is told to probe an idle lease connection (TCP keepalives), so that a holder cut
  off from the network loses its locks within a few seconds, not hours.

The URL and its password are never logged (`redacted_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from desktop_api.storage import redacted_url

__all__ = ["APPLICATION_PREFIX", "Lease", "LeaseKeeper", "lease_key", "lock_ids"]

log = structlog.get_logger("transfer_bridge.cluster")

APPLICATION_PREFIX = "transfer-bridge "  # + the instance name: the lease connection's name
KEY_PREFIX = "transfer-bridge lease "

Hook = Callable[[], Awaitable[None]]

# Who holds which advisory lock of this database, by lock id (classid, objid) and instance.
HOLDERS_SQL = """
SELECT l.classid::bigint, l.objid::bigint, a.application_name, l.pid = pg_backend_pid()
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def lease_key(name: str) -> int:
    """The advisory lock key of a lease: a stable signed 64-bit integer."""
    digest = hashlib.sha256((KEY_PREFIX + name).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_ids(key: int) -> tuple[int, int]:
    """`(classid, objid)` of the key in `pg_locks`: its high and low 32 bits."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def instance_of(application_name: str | None) -> str | None:
    """The instance named by a lease connection's `application_name` (None: not a bridge)."""
    if not application_name or not application_name.startswith(APPLICATION_PREFIX):
        return None
    return application_name.removeprefix(APPLICATION_PREFIX)


@dataclass(eq=False)
class Lease:
    """One named lease of this instance; its source runs between `on_acquired` and
    `on_lost`."""

    name: str
    on_acquired: Hook
    on_lost: Hook
    held: bool = False
    holder: str | None = None  # the instance holding it, as the server said at the last check

    @property
    def key(self) -> int:
        return lease_key(self.name)

    @property
    def state(self) -> str:
        """`held` or `standby` (what the source's health shows)."""
        return "held" if self.held else "standby"


class LeaseKeeper(Collector):
    """Every lease of one instance, on one dedicated connection (see the module docstring)."""

    def __init__(
        self,
        url: str,
        instance: str,
        retry: float,
        *,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.where = redacted_url(url)
        self.instance = instance
        self.retry = retry
        self._connect_timeout = connect_timeout
        self.leases: dict[str, Lease] = {}
        self.connected = False
        self.error: str | None = None  # why the lease connection is down, when it is
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Future[None]] = set()  # checks cut off by the time-out

    def add(self, name: str, on_acquired: Hook, on_lost: Hook) -> Lease:
        """A lease to take; call before `start()`."""
        lease = self.leases[name] = Lease(name, on_acquired, on_lost)
        return lease

    def start(self) -> None:
        """Try for the leases in the background (needs a running loop); idempotent."""
        if self._task is None and self.leases:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="leases")

    async def close(self) -> None:
        """Stop every held lease's source, then let the leases go (closing the connection)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._lose_all("closed")
        await self._disconnect()
        for check in list(self._abandoned):
            check.cancel()
        if self._abandoned:
            await asyncio.wait(self._abandoned, timeout=1)

    def holders(self) -> dict[str, dict[str, Any]]:
        """What /healthz shows: `{lease: {"holder": instance or None, "mine": bool}}`, as the
        server said at the last check (every `retry` seconds). While the lease connection is
        down the holders are unknown (None)."""
        return {n: {"holder": x.holder, "mine": x.held} for n, x in self.leases.items()}

    def collect(self) -> Iterator[Metric]:
        """`transfer_bridge_lease_held{lease}`: 1 while this instance holds the lease."""
        held = GaugeMetricFamily(
            "transfer_bridge_lease_held", "1 while this instance holds the lease", labels=["lease"]
        )
        for name, lease in self.leases.items():
            held.add_metric([name], 1 if lease.held else 0)
        yield held

    # --- the connection loop -------------------------------------------------------------

    async def _run(self) -> None:
        reported: str | None = None
        while True:
            try:
                await self._session()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self.error = _describe(exc)
            except Exception as exc:  # a bug here must not leave a source running unleased
                log.exception("lease_error", instance=self.instance)
                self.error = type(exc).__name__
            await self._lose_all(self.error or "connection lost")
            if self.connected:
                log.warning("lease_connection_lost", store=self.where, error=self.error)
            elif self.error != reported:  # a standby that cannot connect: said once per reason
                log.warning("lease_connect_failed", store=self.where, error=self.error)
            reported = self.error
            self.connected = False
            await self._disconnect()
            for lease in self.leases.values():
                lease.holder = None  # unknown until the next check
            await asyncio.sleep(self.retry)

    async def _session(self) -> None:
        """Connect, then check and watch until the connection breaks (always by raising)."""
        async with asyncio.timeout(self._connect_timeout + 1):
            conn = await psycopg.AsyncConnection.connect(
                self.url,
                autocommit=True,
                application_name=APPLICATION_PREFIX + self.instance,
                connect_timeout=max(2, math.ceil(self._connect_timeout)),
            )
        self._conn = conn
        # The server answers a check within `retry` or cancels it. It probes the connection
        # once it goes quiet, so a holder cut off by the network loses its locks in seconds,
        # but only after it stopped its sources: that takes at most 2 x retry + 1 s from the cut
        # (a wait on the socket, then a check that times out), while the server frees the locks
        # no sooner than idle - retry + 3 s after it (the last packet it got, then three
        # unanswered probes a second apart). idle = 3 x retry + 2 keeps the stop 4 s ahead.
        idle = math.ceil(3 * self.retry) + 2
        await conn.execute(
            f"SET statement_timeout = {max(100, int(self.retry * 1000))};"
            f" SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = 1;"
            " SET tcp_keepalives_count = 3"
        )
        if not self.connected:
            log.info("lease_connected", store=self.where, instance=self.instance)
        self.connected, self.error = True, None
        while True:
            await self._check_within(conn, self.retry + 1)
            await self._watch(conn)

    async def _check_within(self, conn: psycopg.AsyncConnection[Any], limit: float) -> None:
        """`_check`, or, when the server does not answer within `limit` (a network cut), stop
        every held lease's source *first*: cancelling the query can take psycopg seconds more
        (it asks the server to cancel it over a new connection), and the server may free the
        locks meanwhile."""
        check = asyncio.ensure_future(self._check(conn))
        try:
            done, _ = await asyncio.wait({check}, timeout=limit)
        except asyncio.CancelledError:
            check.cancel()
            raise
        if not done:
            await self._lose_all(f"no answer within {limit:g} s")
            check.cancel()
            self._abandoned.add(check)  # let psycopg finish cancelling in the background
            check.add_done_callback(self._forget_abandoned)
            raise TimeoutError(f"no answer within {limit:g} s")
        check.result()

    def _forget_abandoned(self, task: asyncio.Future[None]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the connection is gone anyway

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Try each lease not held; read who holds what."""
        for lease in self.leases.values():
            if lease.held:
                continue
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lease.key,))
            row = await cur.fetchone()
            if row and row[0]:
                lease.held = True
                lease.holder = self.instance
                log.info("lease_acquired", lease=lease.name, instance=self.instance)
                try:
                    await lease.on_acquired()
                except Exception:
                    log.exception("lease_source_start_failed", lease=lease.name)
        cur = await conn.execute(HOLDERS_SQL)
        rows = await cur.fetchall()
        found = {(int(c), int(o)): (instance_of(app), bool(mine)) for c, o, app, mine in rows}
        for lease in self.leases.values():
            holder, mine = found.get(lock_ids(lease.key), (None, False))
            if lease.held and not mine:  # cannot happen while the connection lives; be sure
                await self._lose(lease, "not held any more")
            lease.holder = self.instance if lease.held else holder

    async def _watch(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Wait `retry` seconds on the connection's socket: a connection the server ends
        (restart, pg_terminate_backend) raises here at once."""
        async for _ in conn.notifies(timeout=self.retry):
            pass  # nothing LISTENs on this connection

    async def _lose(self, lease: Lease, why: str) -> None:
        lease.held = False
        lease.holder = None
        if why == "closed":
            log.info("lease_released", lease=lease.name, instance=self.instance)
        else:
            log.warning("lease_lost", lease=lease.name, instance=self.instance, reason=why)
        try:
            await lease.on_lost()
        except Exception:
            log.exception("lease_source_stop_failed", lease=lease.name)

    async def _lose_all(self, why: str) -> None:
        for lease in self.leases.values():
            if lease.held:
                await self._lose(lease, why)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _describe(exc: BaseException) -> str:
    """A short reason for logs and health, without the URL (libpq names host and user only,
    never the password; the first line is enough)."""
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: {exc}" if str(exc) else "TimeoutError: no answer in time"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
