"""PostgreSQL store: the same contract as the SQLite one, on a server a contact centre runs.

`[store] url = "postgresql://user:password@host:port/database"`. The `Store` interface is
blocking (the service runs every call on its one store thread), so this uses psycopg's
synchronous connection: one connection, autocommit off, one transaction per call. The queries
are `desktop_api/storage/queries.py`, shared with SQLite; the schema is this module's.

Guarantees, as with SQLite:
- numbered migrations in `schema_version`, applied under an advisory lock (two bridges starting
  together migrate once); a database from a newer bridge is refused;
- an append-only audit trail (a trigger refuses UPDATE and DELETE);
- optimistic versions: a session row is only replaced by a higher version;
- per-account change cursors (`account_cursors`, one row per account, locked by the update
  that takes the next number, so concurrent writers never share or skip a cursor);
- a write is acknowledged only after COMMIT (synchronous_commit as the server has it: keep it
  `on` for "nothing acknowledged is ever lost").

A lost connection raises `StoreUnavailable` (the API answers 503 `store_unavailable`); the next
call reconnects, so the bridge recovers by itself when the server is back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from bridge.store import StoreConflict, StoreUnavailable
from desktop_api.storage import redacted_url
from desktop_api.storage.queries import SqlStore, Tx

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: the schema SQLite reached at its migration 2 (phones per account, per-account cursors,
    # tokens with ids, expiry and revocation)
    """
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, transfer_enabled BOOLEAN NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE account_tokens (
        token_hash TEXT PRIMARY KEY, id TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id), created_at TEXT NOT NULL,
        expires_at TEXT, revoked_at TEXT, UNIQUE (account_id, id));
    CREATE TABLE agents (
        account_id TEXT NOT NULL REFERENCES accounts(id), id TEXT NOT NULL, name TEXT NOT NULL,
        phone TEXT NOT NULL, phone_key TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (account_id, id), UNIQUE (account_id, phone_key));
    CREATE TABLE sessions (
        account_id TEXT NOT NULL, id TEXT NOT NULL, agent_id TEXT NOT NULL,
        status TEXT NOT NULL, version BIGINT NOT NULL, created_at TEXT NOT NULL,
        body TEXT NOT NULL, PRIMARY KEY (account_id, id));
    CREATE INDEX sessions_by_agent ON sessions (account_id, agent_id, status);
    CREATE INDEX sessions_open ON sessions (status) WHERE status <> 'ended';
    CREATE TABLE audit (
        seq BIGSERIAL PRIMARY KEY, account_id TEXT NOT NULL,
        session_id TEXT NOT NULL, version BIGINT NOT NULL, at TEXT NOT NULL,
        kind TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL);
    CREATE INDEX audit_by_session ON audit (account_id, session_id, seq);
    CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$;
    CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION audit_append_only();
    CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
    CREATE TABLE changes (
        seq BIGSERIAL PRIMARY KEY, account_id TEXT NOT NULL, cursor BIGINT NOT NULL,
        session_id TEXT NOT NULL, version BIGINT NOT NULL, body TEXT NOT NULL,
        UNIQUE (account_id, cursor));
    CREATE TABLE account_cursors (account_id TEXT PRIMARY KEY, last BIGINT NOT NULL);
    """,
    # 2: digests of applied phone evidence: an event two instances received (a HEP stream
    # sent to both) is applied once; kept an hour, pruned with the change feed
    """
    CREATE TABLE evidence_seen (digest TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL);
    CREATE INDEX evidence_seen_by_age ON evidence_seen (at);
    """,
]

MIGRATION_LOCK = 0x7472616E73666572  # pg_advisory_xact_lock key: "transfer" in ASCII
LOCK_TIMEOUT_MS = 5000
AGENT_LOCK_SEED = 0x6167656E74  # hashtextextended seed of per-agent write locks ("agent")


def agent_lock_args(account_id: str, agent_id: str) -> tuple[str, int]:
    """`hashtextextended`'s arguments for an agent's advisory lock: the one key shared by the
    store's per-transaction lock and `desktop_api.cluster.agent_lock`'s session lock."""
    return f"{account_id}/{agent_id}", AGENT_LOCK_SEED


class PostgresStore(SqlStore):
    """`bridge.store.Store` on one PostgreSQL database; safe from one worker thread at a time."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.where = redacted_url(url)
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._db: psycopg.Connection[Any] | None = None
        with self._lock:
            try:
                self._migrate(self._connection())
            except psycopg.OperationalError as exc:
                self._forget()
                raise StoreUnavailable(f"the store at {self.where} did not answer") from exc
            except BaseException:
                self._forget()
                raise

    # --- connection --------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db
        self._db = None
        try:
            self._db = psycopg.connect(
                self.url, connect_timeout=max(1, int(self._connect_timeout)), autocommit=False
            )
            # A write waiting for another instance's lock on an agent gives up after this
            # (503, retried by the client) rather than wait forever on a stuck peer.
            self._db.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            self._db.commit()
        except psycopg.OperationalError as exc:
            self._forget()
            raise StoreUnavailable(f"cannot reach the store at {self.where}") from exc
        return self._db

    def _write(self, fn: Callable[[Tx], T]) -> T:
        """`fn` in one transaction: committed if it returns, rolled back if it raises."""
        with self._lock:
            db = self._connection()
            try:
                with db.transaction():
                    return fn(_Placeholders(db))
            except pg_errors.IntegrityError as exc:
                raise StoreConflict(_first_line(exc)) from exc
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # The server went away (restart, network): the transaction is lost, nothing of
                # it was acknowledged. Drop the connection; the next call connects again.
                self._forget()
                raise StoreUnavailable(f"the store at {self.where} did not answer") from exc

    def _forget(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(psycopg.Error):
                db.close()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self._write(lambda tx: tx.execute(sql, args).fetchall())

    def _migrate(self, db: psycopg.Connection[Any]) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0] or 0) if row else 0
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.where} has schema version {current}, newer than this bridge knows "
                    f"({len(MIGRATIONS)}); upgrade transfer-bridge"
                )
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                db.execute(script)  # fixed DDL of this module, no parameters
                db.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))

    def _lock_agent(self, tx: Tx, account_id: str, agent_id: str) -> None:
        # Held until COMMIT/ROLLBACK: two instances writing for one agent take turns, so rule 5
        # and the evidence digests are checked against what the other one committed.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(?, ?))",
            agent_lock_args(account_id, agent_id),
        )

    def _notify(self, tx: Tx, channel: str, payload: str) -> None:
        tx.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def schema_version(self) -> int:
        """The migration the database is at."""
        rows = self._read("SELECT max(version) FROM schema_version")
        return int(rows[0][0])

    def close(self) -> None:
        with self._lock:
            self._forget()


class _Placeholders:
    """psycopg behind the shared queries' `?` placeholders."""

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql.replace("?", "%s"), args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        with self._db.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
