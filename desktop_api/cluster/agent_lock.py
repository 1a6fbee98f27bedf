"""One agent's writes, held for one instance while it decides again after losing a race.

A session write on PostgreSQL takes the agent's advisory lock for its own transaction only:
two instances may read the same version, and the second one's write is refused
(`StoreConflict`). The loser then decides again holding the same lock for the whole
read-decide-write, on a connection of its own (a session-level `pg_advisory_lock`), so the
second attempt cannot lose: other instances' writes for that agent wait for it (milliseconds).
Without this, an instance could lose again and again to a busy one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg

from bridge.store import StoreUnavailable
from desktop_api.storage import redacted_url
from desktop_api.storage.postgres import agent_lock_args

WAIT_MS = 5000  # at most this long for another instance's write to finish


class AgentLocks:
    """Session-level advisory locks per agent, each on a short-lived connection (rare path)."""

    def __init__(self, url: str, instance: str) -> None:
        self._url = url
        self._where = redacted_url(url)
        self._name = f"transfer-bridge {instance} retry"[:63]

    @contextlib.asynccontextmanager
    async def hold(self, account_id: str, agent_id: str) -> AsyncIterator[None]:
        """The agent's lock, across transactions, until the block ends."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=5, application_name=self._name
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot reach the store at {self._where}") from exc
        async with conn:
            try:
                await conn.execute(f"SET statement_timeout = {WAIT_MS}")
                await conn.execute(
                    "SELECT pg_advisory_lock(hashtextextended(%s, %s))",
                    agent_lock_args(account_id, agent_id),
                )
            except psycopg.Error as exc:
                raise StoreUnavailable(f"the store at {self._where} did not answer") from exc
            yield  # closing the connection releases the lock
