"""PostgreSQL store: the same contract as the SQLite one, on a server a contact centre runs.

`[store] url = "postgresql://user:password@host:port/database"`. The `Store` interface is
blocking (the service runs every call on its one store thread), so this uses psycopg's
synchronous connection: one connection, autocommit off, one transaction per call.

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
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors

from bridge.model import Account, Agent, Phone, Session
from bridge.session.view import session_from_record, session_record
from bridge.store import Change, SessionWrite, StoreConflict, StoreUnavailable, TokenRecord

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
]

TOKEN_COLUMNS = "id, account_id, created_at, expires_at, revoked_at"
MIGRATION_LOCK = 0x7472616E73666572  # pg_advisory_xact_lock key: "transfer" in ASCII


def describe_url(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class PostgresStore:
    """`bridge.store.Store` on one PostgreSQL database; safe from one worker thread at a time."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.where = describe_url(url)
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
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach the store at {self.where}") from exc
        return self._db

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`fn` in one transaction: committed if it returns, rolled back if it raises."""
        with self._lock:
            db = self._connection()
            try:
                with db.transaction():
                    return fn(db)
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
        return self._run(lambda db: db.execute(sql, args).fetchall())

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

    def schema_version(self) -> int:
        """The migration the database is at."""
        rows = self._read("SELECT max(version) FROM schema_version")
        return int(rows[0][0])

    # --- loading at start-up -----------------------------------------------------------------

    def load_accounts(self) -> list[Account]:
        rows = self._read("SELECT id, name, transfer_enabled, created_at FROM accounts")
        return [Account(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    def load_agents(self) -> list[Agent]:
        rows = self._read("SELECT account_id, id, name, phone, updated_at FROM agents")
        return [Agent(r[0], r[1], r[2], Phone.from_json(json.loads(r[3])), r[4]) for r in rows]

    def load_open_sessions(self) -> list[Session]:
        rows = self._read("SELECT body FROM sessions WHERE status <> 'ended'")
        return [session_from_record(json.loads(r[0])) for r in rows]

    # --- accounts, tokens, agents ------------------------------------------------------------

    def create_account(self, account: Account) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT INTO accounts (id, name, transfer_enabled, created_at)"
                " VALUES (%s, %s, %s, %s)",
                (account.id, account.name, account.transfer_enabled, account.created_at),
            )
        )

    def update_account(self, account: Account) -> None:
        self._run(
            lambda db: db.execute(
                "UPDATE accounts SET name = %s, transfer_enabled = %s WHERE id = %s",
                (account.name, account.transfer_enabled, account.id),
            )
        )

    def add_token(self, token_hash: str, token: TokenRecord) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT INTO account_tokens (token_hash, id, account_id, created_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (token_hash, token.id, token.account_id, token.created_at, token.expires_at),
            )
        )

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        rows = self._read(
            f"SELECT {TOKEN_COLUMNS} FROM account_tokens WHERE token_hash = %s", (token_hash,)
        )
        return TokenRecord(*rows[0]) if rows else None

    def list_tokens(self, account_id: str) -> list[TokenRecord]:
        rows = self._read(
            f"SELECT {TOKEN_COLUMNS} FROM account_tokens WHERE account_id = %s"
            " ORDER BY created_at, id",
            (account_id,),
        )
        return [TokenRecord(*r) for r in rows]

    def revoke_token(
        self, account_id: str, token_id: str, at: str
    ) -> tuple[TokenRecord, str] | None:
        """Mark a token revoked (once: a second revocation keeps the first time); returns the
        token and its hash, or None if the account has no such token."""

        def run(db: psycopg.Connection[Any]) -> tuple[TokenRecord, str] | None:
            db.execute(
                "UPDATE account_tokens SET revoked_at = %s"
                " WHERE account_id = %s AND id = %s AND revoked_at IS NULL",
                (at, account_id, token_id),
            )
            rows = db.execute(
                f"SELECT {TOKEN_COLUMNS}, token_hash FROM account_tokens"
                " WHERE account_id = %s AND id = %s",
                (account_id, token_id),
            ).fetchall()
            return (TokenRecord(*rows[0][:5]), rows[0][5]) if rows else None

        return self._run(run)

    def put_agent(self, agent: Agent, phone_key: str) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT INTO agents (account_id, id, name, phone, phone_key, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (account_id, id) DO UPDATE SET"
                " name = excluded.name, phone = excluded.phone, phone_key = excluded.phone_key,"
                " updated_at = excluded.updated_at",
                (
                    agent.account_id,
                    agent.id,
                    agent.name,
                    json.dumps(agent.phone.to_json()),
                    phone_key,
                    agent.updated_at,
                ),
            )
        )

    # --- sessions, audit, change feed --------------------------------------------------------

    def write_sessions(self, writes: Sequence[SessionWrite]) -> list[int]:
        def run(db: psycopg.Connection[Any]) -> list[int]:
            cursors = []
            for w in writes:
                s = w.session
                body = json.dumps(session_record(s), separators=(",", ":"))
                if w.create:
                    db.execute(
                        "INSERT INTO sessions (account_id, id, agent_id, status, version,"
                        " created_at, body) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (s.account_id, s.id, s.agent_id, s.status.value, s.version,
                         s.created_at, body),
                    )  # fmt: skip
                else:
                    cur = db.execute(
                        "UPDATE sessions SET status = %s, version = %s, body = %s"
                        " WHERE account_id = %s AND id = %s AND version < %s",
                        (s.status.value, s.version, body, s.account_id, s.id, s.version),
                    )
                    if cur.rowcount != 1:
                        raise StoreConflict(
                            f"session {s.id} changed underneath version {s.version}"
                        )
                _insert_audit(db, s, w.audit)
                # The account's own cursor: the row lock serialises concurrent writers.
                row = db.execute(
                    "INSERT INTO account_cursors (account_id, last) VALUES (%s, 1)"
                    " ON CONFLICT (account_id) DO UPDATE SET last = account_cursors.last + 1"
                    " RETURNING last",
                    (s.account_id,),
                ).fetchone()
                assert row is not None
                cursor = int(row[0])
                db.execute(
                    "INSERT INTO changes (account_id, cursor, session_id, version, body)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (s.account_id, cursor, s.id, s.version, body),
                )
                cursors.append(cursor)
            return cursors

        return self._run(run)

    def append_audit(self, session: Session, audit: Sequence[Any]) -> None:
        """Audit lines for evidence that changed nothing (duplicates, evidence after the end)."""
        self._run(lambda db: _insert_audit(db, session, audit))

    def get_session(self, account_id: str, session_id: str) -> Session | None:
        rows = self._read(
            "SELECT body FROM sessions WHERE account_id = %s AND id = %s",
            (account_id, session_id),
        )
        return session_from_record(json.loads(rows[0][0])) if rows else None

    def list_sessions(
        self, account_id: str, agent_id: str | None, status: str | None, limit: int
    ) -> list[Session]:
        sql = "SELECT body FROM sessions WHERE account_id = %s"
        args: list[Any] = [account_id]
        if agent_id is not None:
            sql += " AND agent_id = %s"
            args.append(agent_id)
        if status is not None:
            sql += " AND status = %s"
            args.append(status)
        sql += " ORDER BY created_at DESC, id LIMIT %s"
        args.append(limit)
        return [session_from_record(json.loads(r[0])) for r in self._read(sql, args)]

    def read_audit(self, account_id: str, session_id: str) -> list[dict[str, Any]]:
        # `seq` as the API shows it is the entry's place in this session's trail (1, 2, ...).
        rows = self._read(
            "SELECT row_number() OVER (ORDER BY seq), version, at, kind, event, detail"
            " FROM audit WHERE account_id = %s AND session_id = %s ORDER BY seq",
            (account_id, session_id),
        )
        return [
            {
                "seq": int(r[0]),
                "version": int(r[1]),
                "at": r[2],
                "kind": r[3],
                "event": r[4],
                "detail": json.loads(r[5]),
            }
            for r in rows
        ]

    def changes_after(self, account_id: str, seq: int, limit: int) -> list[Change]:
        rows = self._read(
            "SELECT cursor, body FROM changes WHERE account_id = %s AND cursor > %s"
            " ORDER BY cursor LIMIT %s",
            (account_id, seq, limit),
        )
        return [Change(int(r[0]), account_id, session_from_record(json.loads(r[1]))) for r in rows]

    def last_change_cursors(self) -> dict[str, int]:
        """Each account's newest change cursor."""
        return {r[0]: int(r[1]) for r in self._read("SELECT account_id, last FROM account_cursors")}

    def first_change_seq(self, account_id: str) -> int:
        """The account's oldest cursor still kept; when none is kept, one past its newest (so
        every older cursor counts as pruned), 0 for an account with no change yet."""
        first, last = self._read(
            "SELECT (SELECT min(cursor) FROM changes WHERE account_id = %s),"
            " (SELECT last FROM account_cursors WHERE account_id = %s)",
            (account_id, account_id),
        )[0]
        if last is None:
            return 0
        return int(first) if first is not None else int(last) + 1

    def prune_changes(self, keep: int) -> int:
        def run(db: psycopg.Connection[Any]) -> int:
            cur = db.execute(
                "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - %s", (keep,)
            )
            return int(cur.rowcount)

        return self._run(run)

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._forget()


def _insert_audit(db: psycopg.Connection[Any], session: Session, audit: Sequence[Any]) -> None:
    if not audit:
        return
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO audit (account_id, session_id, version, at, kind, event, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    session.account_id,
                    session.id,
                    session.version,
                    e.at,
                    e.kind,
                    e.event,
                    json.dumps(e.detail, separators=(",", ":")),
                )
                for e in audit
            ],
        )


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
