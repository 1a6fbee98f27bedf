"""The narrow storage interface the service needs; implementations live outside the core."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.model import Account, Agent, Session
from bridge.session.outcome import AuditEntry


@dataclass(frozen=True, slots=True)
class SessionWrite:
    """One session's new state and the audit lines that explain it, written together."""

    session: Session
    audit: Sequence[AuditEntry]
    create: bool = False
    # The version the change was decided on: the write is refused (`StoreConflict`) if the
    # stored session is no longer at it (another instance wrote first). None: any older one.
    base: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed (SSE): a session as it was at `version`; `seq` is the
    account's own cursor (it counts that account's changes only)."""

    seq: int
    account_id: str
    session: Session


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An account token as stored: never the token itself, only its hash."""

    id: str
    account_id: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None

    def to_json(self) -> dict[str, Any]:
        """The token as `GET /v1/accounts/{id}/tokens` lists it (no secret, no hash)."""
        return {
            "id": self.id,
            "account_id": self.account_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


class StoreUnavailable(Exception):
    """The store cannot answer now (a database server restarting, a network cut). Nothing of
    the call that raised it was stored; the API answers 503 and the next call tries again."""


class StoreConflict(Exception):
    """A unique key is taken (an id that exists, a phone another agent uses)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class AgentBlocked(Exception):
    """Rule 5, as the store sees it: the agent has open sessions in `call_transferred`."""

    def __init__(self, blocking: list[str]) -> None:
        super().__init__(", ".join(blocking))
        self.blocking = blocking


class EvidenceSeen(Exception):
    """This piece of phone evidence was already applied (by this or another instance)."""


@dataclass(frozen=True, slots=True)
class WriteGuard:
    """Checks made inside a write's transaction, under the agent's lock.

    `agent_free`: refuse (`AgentBlocked`) when the agent has a transferred open session (rule 5,
    for a session being opened). `evidence`: the digest of the phone event behind the write;
    refuse (`EvidenceSeen`) when it was already applied.
    """

    agent: tuple[str, str] | None = None
    agent_free: bool = False
    evidence: str | None = None
    agent_locked: bool = False  # the caller holds the agent's lock already (cluster.agent_lock)


class Store(Protocol):
    """Durable state. Every call is blocking; the service runs them off the event loop."""

    def load_accounts(self) -> list[Account]: ...
    def load_agents(self) -> list[Agent]: ...
    def load_open_sessions(self) -> list[Session]: ...
    def get_account(self, account_id: str) -> Account | None: ...
    def get_agent(self, account_id: str, agent_id: str) -> Agent | None: ...
    def create_account(self, account: Account) -> None: ...
    def update_account(self, account: Account) -> None: ...
    def add_token(self, token_hash: str, token: TokenRecord) -> None: ...
    def token_by_hash(self, token_hash: str) -> TokenRecord | None: ...
    def list_tokens(self, account_id: str) -> list[TokenRecord]: ...
    def revoke_token(
        self, account_id: str, token_id: str, at: str
    ) -> tuple[TokenRecord, str] | None: ...
    def put_agent(self, agent: Agent, phone_key: str) -> None: ...
    def write_sessions(
        self, writes: Sequence[SessionWrite], guard: WriteGuard | None = None
    ) -> list[int]: ...
    def append_audit(
        self, session: Session, audit: Sequence[AuditEntry], guard: WriteGuard | None = None
    ) -> None: ...
    def open_sessions_of_agent(self, account_id: str, agent_id: str) -> list[Session]: ...
    def get_session(self, account_id: str, session_id: str) -> Session | None: ...
    def list_sessions(
        self, account_id: str, agent_id: str | None, status: str | None, limit: int
    ) -> list[Session]: ...
    def read_audit(self, account_id: str, session_id: str) -> list[dict[str, Any]]: ...
    def changes_after(self, account_id: str, seq: int, limit: int) -> list[Change]: ...
    def last_change_cursors(self) -> dict[str, int]: ...
    def first_change_seq(self, account_id: str) -> int: ...
    def prune_changes(self, keep: int) -> int: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...
