"""SQLite store: WAL mode, numbered schema migrations, an append-only audit trail."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.model import Account, Agent, Phone, Session
from bridge.session.view import session_from_record, session_record
from bridge.store import Change, SessionWrite, StoreConflict, TokenRecord

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
]


TOKEN_COLUMNS = "id, account_id, created_at, expires_at, revoked_at"


class SqliteStore:
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

    def _write(self, fn: Any) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
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

    # --- loading at start-up ---

    def load_accounts(self) -> list[Account]:
        rows = self._read("SELECT id, name, transfer_enabled, created_at FROM accounts")
        return [Account(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    def load_agents(self) -> list[Agent]:
        rows = self._read("SELECT account_id, id, name, phone, updated_at FROM agents")
        return [Agent(r[0], r[1], r[2], Phone.from_json(json.loads(r[3])), r[4]) for r in rows]

    def load_open_sessions(self) -> list[Session]:
        rows = self._read("SELECT body FROM sessions WHERE status != 'ended'")
        return [session_from_record(json.loads(r[0])) for r in rows]

    # --- accounts, tokens, agents ---

    def create_account(self, account: Account) -> None:
        self._write(
            lambda db: db.execute(
                "INSERT INTO accounts (id, name, transfer_enabled, created_at) VALUES (?,?,?,?)",
                (account.id, account.name, int(account.transfer_enabled), account.created_at),
            )
        )

    def update_account(self, account: Account) -> None:
        self._write(
            lambda db: db.execute(
                "UPDATE accounts SET name = ?, transfer_enabled = ? WHERE id = ?",
                (account.name, int(account.transfer_enabled), account.id),
            )
        )

    def add_token(self, token_hash: str, token: TokenRecord) -> None:
        self._write(
            lambda db: db.execute(
                "INSERT INTO account_tokens (token_hash, id, account_id, created_at, expires_at)"
                " VALUES (?,?,?,?,?)",
                (token_hash, token.id, token.account_id, token.created_at, token.expires_at),
            )
        )

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        rows = self._read(
            f"SELECT {TOKEN_COLUMNS} FROM account_tokens WHERE token_hash = ?", (token_hash,)
        )
        return TokenRecord(*rows[0]) if rows else None

    def list_tokens(self, account_id: str) -> list[TokenRecord]:
        rows = self._read(
            f"SELECT {TOKEN_COLUMNS} FROM account_tokens WHERE account_id = ?"
            " ORDER BY created_at, id",
            (account_id,),
        )
        return [TokenRecord(*r) for r in rows]

    def revoke_token(
        self, account_id: str, token_id: str, at: str
    ) -> tuple[TokenRecord, str] | None:
        """Mark a token revoked (once: a second revocation keeps the first time); returns the
        token and its hash, or None if the account has no such token."""

        def run(db: sqlite3.Connection) -> tuple[TokenRecord, str] | None:
            db.execute(
                "UPDATE account_tokens SET revoked_at = ?"
                " WHERE account_id = ? AND id = ? AND revoked_at IS NULL",
                (at, account_id, token_id),
            )
            rows = db.execute(
                f"SELECT {TOKEN_COLUMNS}, token_hash FROM account_tokens"
                " WHERE account_id = ? AND id = ?",
                (account_id, token_id),
            ).fetchall()
            return (TokenRecord(*rows[0][:5]), rows[0][5]) if rows else None

        result: tuple[TokenRecord, str] | None = self._write(run)
        return result

    def put_agent(self, agent: Agent, phone_key: str) -> None:
        self._write(
            lambda db: db.execute(
                "INSERT INTO agents (account_id, id, name, phone, phone_key, updated_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (account_id, id) DO UPDATE SET"
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

    # --- sessions, audit, change feed ---

    def write_sessions(self, writes: Sequence[SessionWrite]) -> list[int]:
        def run(db: sqlite3.Connection) -> list[int]:
            seqs = []
            for w in writes:
                s = w.session
                body = json.dumps(session_record(s), separators=(",", ":"))
                if w.create:
                    db.execute(
                        "INSERT INTO sessions (account_id, id, agent_id, status, version,"
                        " created_at, body) VALUES (?,?,?,?,?,?,?)",
                        (
                            s.account_id,
                            s.id,
                            s.agent_id,
                            s.status.value,
                            s.version,
                            s.created_at,
                            body,
                        ),
                    )
                else:
                    cur = db.execute(
                        "UPDATE sessions SET status = ?, version = ?, body = ?"
                        " WHERE account_id = ? AND id = ? AND version < ?",
                        (s.status.value, s.version, body, s.account_id, s.id, s.version),
                    )
                    if cur.rowcount != 1:
                        raise StoreConflict(
                            f"session {s.id} changed underneath version {s.version}"
                        )
                db.executemany(
                    "INSERT INTO audit (account_id, session_id, version, at, kind, event, detail)"
                    " VALUES (?,?,?,?,?,?,?)",
                    [
                        (
                            s.account_id,
                            s.id,
                            s.version,
                            e.at,
                            e.kind,
                            e.event,
                            json.dumps(e.detail, separators=(",", ":")),
                        )
                        for e in w.audit
                    ],
                )
                # The account's own cursor: it counts this tenant's changes only.
                cursor = db.execute(
                    "INSERT INTO account_cursors (account_id, last) VALUES (?, 1)"
                    " ON CONFLICT (account_id) DO UPDATE SET last = last + 1 RETURNING last",
                    (s.account_id,),
                ).fetchone()[0]
                db.execute(
                    "INSERT INTO changes (account_id, session_id, version, body, cursor)"
                    " VALUES (?,?,?,?,?)",
                    (s.account_id, s.id, s.version, body, cursor),
                )
                seqs.append(int(cursor))
            return seqs

        result: list[int] = self._write(run)
        return result

    def append_audit(self, session: Session, audit: Sequence[Any]) -> None:
        """Audit lines for evidence that changed nothing (duplicates, evidence after the end)."""
        self._write(
            lambda db: db.executemany(
                "INSERT INTO audit (account_id, session_id, version, at, kind, event, detail)"
                " VALUES (?,?,?,?,?,?,?)",
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
        )

    def get_session(self, account_id: str, session_id: str) -> Session | None:
        rows = self._read(
            "SELECT body FROM sessions WHERE account_id = ? AND id = ?", (account_id, session_id)
        )
        return session_from_record(json.loads(rows[0][0])) if rows else None

    def list_sessions(
        self, account_id: str, agent_id: str | None, status: str | None, limit: int
    ) -> list[Session]:
        sql = "SELECT body FROM sessions WHERE account_id = ?"
        args: list[Any] = [account_id]
        if agent_id is not None:
            sql += " AND agent_id = ?"
            args.append(agent_id)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        args.append(limit)
        return [session_from_record(json.loads(r[0])) for r in self._read(sql, args)]

    def read_audit(self, account_id: str, session_id: str) -> list[dict[str, Any]]:
        # `seq` as the API shows it is the entry's place in this session's trail (1, 2, ...):
        # the table's own counter is shared by every tenant and would show their volume.
        rows = self._read(
            "SELECT row_number() OVER (ORDER BY seq), version, at, kind, event, detail FROM audit"
            " WHERE account_id = ? AND session_id = ? ORDER BY seq",
            (account_id, session_id),
        )
        return [
            {
                "seq": r[0],
                "version": r[1],
                "at": r[2],
                "kind": r[3],
                "event": r[4],
                "detail": json.loads(r[5]),
            }
            for r in rows
        ]

    def changes_after(self, account_id: str, seq: int, limit: int) -> list[Change]:
        rows = self._read(
            "SELECT cursor, body FROM changes WHERE account_id = ? AND cursor > ?"
            " ORDER BY cursor LIMIT ?",
            (account_id, seq, limit),
        )
        return [Change(r[0], account_id, session_from_record(json.loads(r[1]))) for r in rows]

    def last_change_cursors(self) -> dict[str, int]:
        """Each account's newest change cursor."""
        return {r[0]: int(r[1]) for r in self._read("SELECT account_id, last FROM account_cursors")}

    def first_change_seq(self, account_id: str) -> int:
        """The account's oldest cursor still kept; when none is kept, one past its newest (so
        every older cursor counts as pruned), 0 for an account with no change yet."""
        first, last = self._read(
            "SELECT (SELECT min(cursor) FROM changes WHERE account_id = ?),"
            " (SELECT last FROM account_cursors WHERE account_id = ?)",
            (account_id, account_id),
        )[0]
        if last is None:
            return 0
        return int(first) if first is not None else int(last) + 1

    def prune_changes(self, keep: int) -> int:
        def run(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (keep,)
            )
            return int(cur.rowcount)

        return int(self._write(run))

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()
