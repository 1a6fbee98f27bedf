"""SQLite store: WAL mode, numbered schema migrations, an append-only audit trail; the queries
are `desktop_api/storage/queries.py`, shared with PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bridge.store import StoreConflict
from desktop_api.storage.queries import SqlStore, Tx

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, transfer_enabled INTEGER NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE account_tokens (
        token_hash TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id),
        created_at TEXT NOT NULL);
    CREATE TABLE agents (
        account_id TEXT NOT NULL REFERENCES accounts(id), id TEXT NOT NULL, name TEXT NOT NULL,
        phone TEXT NOT NULL, phone_key TEXT NOT NULL UNIQUE, updated_at TEXT NOT NULL,
        PRIMARY KEY (account_id, id));
    CREATE TABLE sessions (
        account_id TEXT NOT NULL, id TEXT NOT NULL, agent_id TEXT NOT NULL,
        status TEXT NOT NULL, version INTEGER NOT NULL, created_at TEXT NOT NULL,
        body TEXT NOT NULL, PRIMARY KEY (account_id, id));
    CREATE INDEX sessions_by_agent ON sessions (account_id, agent_id, status);
    CREATE INDEX sessions_open ON sessions (status) WHERE status != 'ended';
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL,
        session_id TEXT NOT NULL, version INTEGER NOT NULL, at TEXT NOT NULL,
        kind TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL);
    CREATE INDEX audit_by_session ON audit (account_id, session_id, seq);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL,
        session_id TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL);
    CREATE INDEX changes_by_account ON changes (account_id, seq);
    """,
    # 2: tenants are separate namespaces (issue 14). A phone belongs to one agent per account,
    # not across accounts; change cursors count per account, so a cursor shows nothing of
    # other tenants' volume (existing cursors keep their values, so a desktop resumes across
    # the upgrade); tokens get an id to list and revoke them by, an optional expiry and a
    # revocation time.
    """
    CREATE TABLE agents_v2 (
        account_id TEXT NOT NULL REFERENCES accounts(id), id TEXT NOT NULL, name TEXT NOT NULL,
        phone TEXT NOT NULL, phone_key TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (account_id, id), UNIQUE (account_id, phone_key));
    INSERT INTO agents_v2 (account_id, id, name, phone, phone_key, updated_at)
        SELECT account_id, id, name, phone, phone_key, updated_at FROM agents;
    DROP TABLE agents;
    ALTER TABLE agents_v2 RENAME TO agents;
    ALTER TABLE changes ADD COLUMN cursor INTEGER;
    UPDATE changes SET cursor = seq;
    CREATE UNIQUE INDEX changes_by_cursor ON changes (account_id, cursor);
    CREATE TABLE account_cursors (account_id TEXT PRIMARY KEY, last INTEGER NOT NULL);
    INSERT INTO account_cursors (account_id, last)
        SELECT account_id, max(seq) FROM changes GROUP BY account_id;
    ALTER TABLE account_tokens ADD COLUMN id TEXT;
    ALTER TABLE account_tokens ADD COLUMN expires_at TEXT;
    ALTER TABLE account_tokens ADD COLUMN revoked_at TEXT;
    UPDATE account_tokens SET id = 'tok_' || substr(token_hash, 1, 16);
    CREATE UNIQUE INDEX account_tokens_by_id ON account_tokens (account_id, id);
    """,
    # 3: digests of applied phone evidence (the same schema as PostgreSQL's, where several
    # instances may receive one event; kept an hour, pruned with the change feed)
    """
    CREATE TABLE evidence_seen (digest TEXT PRIMARY KEY, at REAL NOT NULL);
    CREATE INDEX evidence_seen_by_age ON evidence_seen (at);
    """,
]


class SqliteStore(SqlStore):
    """`bridge.store.Store` on one SQLite file; safe to call from one worker thread at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} has schema version {current}, newer than this bridge knows "
                f"({len(MIGRATIONS)}); upgrade transfer-bridge"
            )
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        """The migration the file is at."""
        return int(self._db.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    def _write(self, fn: Callable[[Tx], T]) -> T:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)  # type: ignore[arg-type]  # sqlite3 is a Tx
                self._db.execute("COMMIT")
                return result
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise StoreConflict(str(exc)) from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
