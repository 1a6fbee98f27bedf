"""What the API reads: session and agent views, sessions, and audit trails."""

from __future__ import annotations

import json
from typing import Any

from bridge.model import Agent, CallState, Session, SessionStatus
from bridge.session.view import session_view
from desktop_api.service.errors import NotFound
from desktop_api.service.open_sessions import OpenSessions
from desktop_api.service.registry import Registry
from desktop_api.service.runner import StoreRunner

LIVE_CALL = (CallState.RINGING, CallState.CONNECTED, CallState.ON_HOLD)
BLOCKED_REASON = "a transferred session must be ended with a result before new requests"


class Reads:
    """Open sessions from memory, everything else from the store; nothing here writes."""

    def __init__(self, db: StoreRunner, registry: Registry, open_sessions: OpenSessions) -> None:
        self._db = db
        self._registry = registry
        self._open = open_sessions

    def view(self, session: Session) -> dict[str, Any]:
        """The session as the API shows it."""
        account = self._registry.accounts.get(session.account_id)
        return session_view(session, bool(account and account.transfer_enabled))

    def view_bytes(self, session: Session) -> bytes:
        """`view` encoded as JSON, cached per open session and version.

        Sessions are immutable values and every change (the account's transfer switch too)
        bumps the version, so the encoding of a version never goes stale.
        """
        body = self._open.encoded(session)
        if body is None:
            body = json.dumps(self.view(session)).encode()
            self._open.keep_encoded(session, body)
        return body

    def agent_view(self, agent: Agent) -> dict[str, Any]:
        """The agent with its availability (rule 5) and current call."""
        open_sessions = self._open.of_agent((agent.account_id, agent.id))
        blocking = sorted(s.id for s in open_sessions if s.status is SessionStatus.CALL_TRANSFERRED)
        current = None
        live = [s for s in open_sessions if s.call.state in LIVE_CALL]
        if live:
            s = max(live, key=lambda s: (s.call.since or "", s.created_at))
            current = {
                "session_id": s.id,
                "state": s.call.state.value,
                "sip_call_id": s.call.sip_call_id,
            }
        return {
            "id": agent.id,
            "account_id": agent.account_id,
            "name": agent.name,
            "phone": agent.phone.to_json(),
            "can_take_requests": not blocking,
            "blocking_sessions": blocking,
            "blocked_reason": None if not blocking else BLOCKED_REASON,
            "current_call": current,
            "updated_at": agent.updated_at,
        }

    def cached_session(self, account_id: str, session_id: str) -> Session | None:
        """An open session from memory, without a trip to the store."""
        return self._open.get(account_id, session_id)

    async def get_session(self, account_id: str, session_id: str) -> Session:
        """An open session from memory, an ended one from the store, or NotFound."""
        session = self._open.get(account_id, session_id)
        if session is None:
            session = await self._db.run(self._db.store.get_session, account_id, session_id)
        if session is None:
            raise NotFound(session_id)
        return session

    async def list_sessions(
        self, account_id: str, agent_id: str | None, status: str | None, limit: int
    ) -> list[Session]:
        """Sessions of an account, newest first."""
        return await self._db.run(self._db.store.list_sessions, account_id, agent_id, status, limit)

    def open_of_agent(self, account_id: str, agent_id: str) -> list[Session]:
        """The agent's open sessions, from memory."""
        return self._open.of_agent((account_id, agent_id))

    async def open_sessions(self, account_id: str, agent_id: str | None) -> list[Session]:
        """The account's open sessions (of one agent if given), oldest first."""
        return self._open.of_account(account_id, agent_id)

    async def audit(self, account_id: str, session_id: str) -> list[dict[str, Any]]:
        """The session's append-only trail (NotFound for a session the account does not have)."""
        await self.get_session(account_id, session_id)
        return await self._db.run(self._db.store.read_audit, account_id, session_id)
