"""The open sessions in memory: by session, by agent, and each one's encoded view."""

from __future__ import annotations

from bridge.model import Session, SessionStatus

AgentKey = tuple[str, str]  # (account_id, agent_id)
SessionKey = tuple[str, str]  # (account_id, session_id)
ENDED_KEPT = 100_000  # ended session ids remembered against stale versions


class OpenSessions:
    """Sessions not ended, as last committed; a session leaves as soon as it ends."""

    def __init__(self) -> None:
        self._by_key: dict[SessionKey, Session] = {}
        self._by_agent: dict[AgentKey, dict[str, Session]] = {}
        self._encoded: dict[SessionKey, tuple[int, bytes]] = {}
        # Sessions seen ended (ids are never reused): an older version arriving later from
        # another instance's feed must not bring one back. Bounded; the oldest go first.
        self._ended: dict[SessionKey, None] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, account_id: str, session_id: str) -> Session | None:
        """The open session, or None (ended, another account's, or never opened)."""
        return self._by_key.get((account_id, session_id))

    def of_agent(self, key: AgentKey) -> list[Session]:
        """The agent's open sessions."""
        return list(self._by_agent.get(key, {}).values())

    def agents_of(self, account_id: str) -> list[str]:
        """Ids of the account's agents that have (or had) open sessions, sorted."""
        return sorted({agent for (acc, agent) in self._by_agent if acc == account_id})

    def of_account(self, account_id: str, agent_id: str | None) -> list[Session]:
        """The account's open sessions (of one agent if given), oldest first."""
        found = [
            s
            for (acc, _), s in self._by_key.items()
            if acc == account_id and (agent_id is None or s.agent_id == agent_id)
        ]
        return sorted(found, key=lambda s: (s.created_at, s.id))

    def remember(self, session: Session) -> bool:
        """Take a committed version: kept while open, dropped (with its encoding) once ended.

        A version older than the one held (another instance's change read late) is ignored;
        returns whether the session was new here (not held, never seen ended)."""
        key = (session.account_id, session.id)
        if key in self._ended:
            return False
        held = self._by_key.get(key)
        if held is not None and held.version >= session.version:
            return False
        by_agent = self._by_agent.setdefault((session.account_id, session.agent_id), {})
        if session.status is SessionStatus.ENDED:
            self._forget(key, by_agent)
        else:
            self._by_key[key] = session
            by_agent[session.id] = session
        return held is None

    def replace_agent(self, key: AgentKey, stored: list[Session]) -> None:
        """The agent's open sessions as the store has them now (after losing a race to another
        instance): newer versions are taken, sessions no longer open are dropped."""
        by_agent = self._by_agent.setdefault(key, {})
        still_open = {s.id for s in stored}
        for session_id in [i for i in by_agent if i not in still_open]:
            self._forget((key[0], session_id), by_agent)
        for session in stored:
            self.remember(session)

    def _forget(self, key: SessionKey, by_agent: dict[str, Session]) -> None:
        self._by_key.pop(key, None)
        self._encoded.pop(key, None)
        by_agent.pop(key[1], None)
        self._ended[key] = None
        if len(self._ended) > ENDED_KEPT:
            for old in list(self._ended)[: ENDED_KEPT // 10]:
                del self._ended[old]

    def encoded(self, session: Session) -> bytes | None:
        """The cached JSON of exactly this version of the session, if any."""
        cached = self._encoded.get((session.account_id, session.id))
        if cached is not None and cached[0] == session.version:
            return cached[1]
        return None

    def keep_encoded(self, session: Session, body: bytes) -> None:
        """Cache a version's JSON; only open sessions are cached, so the cache cannot grow."""
        key = (session.account_id, session.id)
        current = self._by_key.get(key)
        if current is not None and current.version == session.version:  # not a replayed one
            self._encoded[key] = (session.version, body)
