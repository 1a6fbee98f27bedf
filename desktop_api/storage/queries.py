"""The store's queries, written once for both engines (SQLite and PostgreSQL).

Each engine gives `SqlStore` two things: `_read(sql, args)` and `_write(fn)` (run `fn(tx)` in one
transaction, map a unique-key violation to `StoreConflict`), where `tx.execute` takes the SQL
below with `?` placeholders (PostgreSQL's adapter turns them into `%s`; no query here holds a
literal `?`). The schema and its migrations stay per engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from bridge.model import Account, Agent, Phone, Session, SessionStatus
from bridge.session.view import session_from_record, session_record
from bridge.store import (
    AgentBlocked,
    Change,
    EvidenceSeen,
    SessionWrite,
    StoreConflict,
    TokenRecord,
    WriteGuard,
)

T = TypeVar("T")

TOKEN_COLUMNS = "id, account_id, created_at, expires_at, revoked_at"
EVIDENCE_KEPT_SECONDS = 3600.0  # how long an applied event's digest is remembered
AUDIT_INSERT = (
    "INSERT INTO audit (account_id, session_id, version, at, kind, event, detail)"
    " VALUES (?,?,?,?,?,?,?)"
)


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """What a write function may do inside its transaction."""

    def execute(self, sql: str, args: Sequence[Any] = ...) -> Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...


CHANGES_CHANNEL = "transfer_bridge_changes"  # payload: "<account id> <its newest cursor>"
REGISTRY_CHANNEL = "transfer_bridge_registry"  # payload: the account whose agents/tokens changed


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _audit_rows(session: Session, audit: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [
        (session.account_id, session.id, session.version, e.at, e.kind, e.event, _json(e.detail))
        for e in audit
    ]


class SqlStore:
    """`bridge.store.Store` on top of an engine's `_read` and `_write`."""

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _write(self, fn: Callable[[Tx], T]) -> T:
        raise NotImplementedError

    # Engine hooks for several instances on one database (no-ops for a single-process engine).

    def _lock_agent(self, tx: Tx, account_id: str, agent_id: str) -> None:
        """Serialise writes for one agent across processes, until the transaction ends."""

    def _notify(self, tx: Tx, channel: str, payload: str) -> None:
        """Tell the other instances, at commit, that something changed."""

    def _now(self) -> float:
        return time.time()

    def _guard(self, tx: Tx, guard: WriteGuard | None) -> None:
        """The checks a write makes inside its transaction (see `WriteGuard`)."""
        if guard is None:
            return
        if guard.agent is not None:
            account_id, agent_id = guard.agent
            if not guard.agent_locked:
                self._lock_agent(tx, account_id, agent_id)
            if guard.agent_free:
                rows = tx.execute(
                    "SELECT id FROM sessions WHERE account_id = ? AND agent_id = ? AND status = ?"
                    " ORDER BY id",
                    (account_id, agent_id, SessionStatus.CALL_TRANSFERRED.value),
                ).fetchall()
                if rows:
                    raise AgentBlocked([r[0] for r in rows])
        if guard.evidence is not None:
            cur = tx.execute(
                "INSERT INTO evidence_seen (digest, at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (guard.evidence, self._now()),
            )
            if cur.rowcount != 1:
                raise EvidenceSeen(guard.evidence)

    # --- loading at start-up ---

    def load_accounts(self) -> list[Account]:
        rows = self._read("SELECT id, name, transfer_enabled, created_at FROM accounts")
        return [Account(r[0], r[1], bool(r[2]), r[3]) for r in rows]

    def load_agents(self) -> list[Agent]:
        rows = self._read("SELECT account_id, id, name, phone, updated_at FROM agents")
        return [Agent(r[0], r[1], r[2], Phone.from_json(json.loads(r[3])), r[4]) for r in rows]

    def get_account(self, account_id: str) -> Account | None:
        rows = self._read(
            "SELECT id, name, transfer_enabled, created_at FROM accounts WHERE id = ?",
            (account_id,),
        )
        return Account(rows[0][0], rows[0][1], bool(rows[0][2]), rows[0][3]) if rows else None

    def get_agent(self, account_id: str, agent_id: str) -> Agent | None:
        rows = self._read(
            "SELECT account_id, id, name, phone, updated_at FROM agents"
            " WHERE account_id = ? AND id = ?",
            (account_id, agent_id),
        )
        if not rows:
            return None
        r = rows[0]
        return Agent(r[0], r[1], r[2], Phone.from_json(json.loads(r[3])), r[4])

    def load_open_sessions(self) -> list[Session]:
        rows = self._read("SELECT body FROM sessions WHERE status <> 'ended'")
        return [session_from_record(json.loads(r[0])) for r in rows]

    # --- accounts, tokens, agents ---

    def _registry_write(self, account_id: str, sql: str, args: Sequence[Any]) -> None:
        """One statement on accounts, agents or tokens; the other instances reload them."""

        def run(tx: Tx) -> None:
            tx.execute(sql, args)
            self._notify(tx, REGISTRY_CHANNEL, account_id)

        self._write(run)

    def create_account(self, account: Account) -> None:
        self._registry_write(
            account.id,
            "INSERT INTO accounts (id, name, transfer_enabled, created_at) VALUES (?,?,?,?)",
            (account.id, account.name, account.transfer_enabled, account.created_at),
        )

    def update_account(self, account: Account) -> None:
        self._registry_write(
            account.id,
            "UPDATE accounts SET name = ?, transfer_enabled = ? WHERE id = ?",
            (account.name, account.transfer_enabled, account.id),
        )

    def add_token(self, token_hash: str, token: TokenRecord) -> None:
        self._write(
            lambda tx: tx.execute(
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

        def run(tx: Tx) -> tuple[TokenRecord, str] | None:
            tx.execute(
                "UPDATE account_tokens SET revoked_at = ?"
                " WHERE account_id = ? AND id = ? AND revoked_at IS NULL",
                (at, account_id, token_id),
            )
            rows = tx.execute(
                f"SELECT {TOKEN_COLUMNS}, token_hash FROM account_tokens"
                " WHERE account_id = ? AND id = ?",
                (account_id, token_id),
            ).fetchall()
            self._notify(tx, REGISTRY_CHANNEL, account_id)
            return (TokenRecord(*rows[0][:5]), rows[0][5]) if rows else None

        return self._write(run)

    def put_agent(self, agent: Agent, phone_key: str) -> None:
        self._registry_write(
            agent.account_id,
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

    # --- sessions, audit, change feed ---

    def write_sessions(
        self, writes: Sequence[SessionWrite], guard: WriteGuard | None = None
    ) -> list[int]:
        """All or nothing; returns each write's change cursor (its account's own count)."""

        def run(tx: Tx) -> list[int]:
            self._guard(tx, guard)
            cursors = []
            for w in writes:
                s = w.session
                body = _json(session_record(s))
                if w.create:
                    tx.execute(
                        "INSERT INTO sessions (account_id, id, agent_id, status, version,"
                        " created_at, body) VALUES (?,?,?,?,?,?,?)",
                        (s.account_id, s.id, s.agent_id, s.status.value, s.version,
                         s.created_at, body),
                    )  # fmt: skip
                elif w.base is not None:
                    cur = tx.execute(
                        "UPDATE sessions SET status = ?, version = ?, body = ?"
                        " WHERE account_id = ? AND id = ? AND version = ? AND version < ?",
                        (s.status.value, s.version, body, s.account_id, s.id, w.base, s.version),
                    )
                else:
                    cur = tx.execute(
                        "UPDATE sessions SET status = ?, version = ?, body = ?"
                        " WHERE account_id = ? AND id = ? AND version < ?",
                        (s.status.value, s.version, body, s.account_id, s.id, s.version),
                    )
                if not w.create and cur.rowcount != 1:
                    raise StoreConflict(f"session {s.id} changed underneath version {s.version}")
                if w.audit:
                    tx.executemany(AUDIT_INSERT, _audit_rows(s, w.audit))
                # The account's own cursor (the row's lock serialises concurrent writers).
                cursor = int(
                    tx.execute(
                        "INSERT INTO account_cursors (account_id, last) VALUES (?, 1)"
                        " ON CONFLICT (account_id) DO UPDATE SET last = account_cursors.last + 1"
                        " RETURNING last",
                        (s.account_id,),
                    ).fetchone()[0]
                )
                tx.execute(
                    "INSERT INTO changes (account_id, session_id, version, body, cursor)"
                    " VALUES (?,?,?,?,?)",
                    (s.account_id, s.id, s.version, body, cursor),
                )
                cursors.append(cursor)
            newest: dict[str, int] = {}
            for w, cursor in zip(writes, cursors, strict=True):
                newest[w.session.account_id] = cursor
            for account_id, cursor in sorted(newest.items()):
                self._notify(tx, CHANGES_CHANNEL, f"{account_id} {cursor}")
            return cursors

        return self._write(run)

    def append_audit(
        self, session: Session, audit: Sequence[Any], guard: WriteGuard | None = None
    ) -> None:
        """Audit lines for evidence that changed nothing (duplicates, evidence after the end)."""
        if not audit:
            return

        def run(tx: Tx) -> None:
            self._guard(tx, guard)
            tx.executemany(AUDIT_INSERT, _audit_rows(session, audit))

        self._write(run)

    def open_sessions_of_agent(self, account_id: str, agent_id: str) -> list[Session]:
        """The agent's open sessions as stored (another instance may have changed them)."""
        rows = self._read(
            "SELECT body FROM sessions WHERE account_id = ? AND agent_id = ? AND status <> 'ended'",
            (account_id, agent_id),
        )
        return [session_from_record(json.loads(r[0])) for r in rows]

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
            "SELECT cursor, body FROM changes WHERE account_id = ? AND cursor > ?"
            " ORDER BY cursor LIMIT ?",
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
            "SELECT (SELECT min(cursor) FROM changes WHERE account_id = ?),"
            " (SELECT last FROM account_cursors WHERE account_id = ?)",
            (account_id, account_id),
        )[0]
        if last is None:
            return 0
        return int(first) if first is not None else int(last) + 1

    def prune_changes(self, keep: int) -> int:
        """Keep the newest `keep` change-feed entries (all accounts), and the digests of phone
        evidence applied within the last hour; the audit is never pruned."""

        def run(tx: Tx) -> int:
            tx.execute(
                "DELETE FROM evidence_seen WHERE at < ?", (self._now() - EVIDENCE_KEPT_SECONDS,)
            )
            dropped: int = tx.execute(
                "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (keep,)
            ).rowcount
            return dropped

        return self._write(run)

    def ping(self) -> None:
        self._read("SELECT 1")
