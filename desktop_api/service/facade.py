"""The bridge service: one place that ties the pure state machine to the store and the feed.

Open sessions, agents, accounts and token hashes live in memory (the store is read once at
start-up); every change is committed to the store, off the event loop, before it becomes
visible. Writes for one agent are serialised by a lock, so a click and a piece of phone evidence
for the same agent never race.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog

from bridge.errors import InvalidInput, TransferNotAllowed
from bridge.evidence import CallStateChanged, PhoneEvent
from bridge.model import (
    Account,
    Action,
    Agent,
    Binding,
    Call,
    CallState,
    Customer,
    Phone,
    Session,
    SessionStatus,
)
from bridge.session.correlation import PhoneCalls, bind_candidates, route
from bridge.session.machine import (
    AuditEntry,
    Outcome,
    apply_binding,
    apply_evidence,
    desktop_step,
    end_session,
)
from bridge.session.view import session_view
from bridge.store import Change, SessionWrite, Store, StoreConflict
from bridge.uris import phone_key
from desktop_api.changes import ChangeHub
from desktop_api.clock import utc_now
from desktop_api.metrics import Metrics
from desktop_api.service.errors import NotFound
from desktop_api.service.open_sessions import AgentKey, OpenSessions
from desktop_api.service.registry import Registry
from desktop_api.service.runner import StoreRunner
from desktop_api.service.writer import SessionWriter, newly_transferred

log = structlog.get_logger("transfer_bridge.service")


class BridgeService:
    """Accounts, agents, sessions and phone evidence, over a `Store`."""

    def __init__(
        self, store: Store, metrics: Metrics, *, clock: Callable[[], str] = utc_now
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.hub = ChangeHub()
        self._db = StoreRunner(store)
        self._open = OpenSessions()
        self._writer = SessionWriter(self._db, self._open, self.hub, metrics, clock)
        self._registry = Registry(self._db, self._writer, clock)
        self._phone_calls: dict[str, PhoneCalls] = {}

    # --- life cycle ---

    async def start(self) -> None:
        """Load what the store holds; nothing is lost across a restart."""
        await self._registry.load()
        await self._writer.load()
        self.hub.last_seq = await self._db.run(self._db.store.last_change_seq)
        log.info(
            "store_loaded",
            accounts=len(self.accounts),
            agents=len(self.agents),
            open_sessions=len(self._open),
        )

    async def close(self) -> None:
        """Release waiters, finish queued writes and close the store."""
        self.hub.close()
        await self._db.close()

    @property
    def accounts(self) -> dict[str, Account]:
        """All accounts by id (read-only use: change them through the methods)."""
        return self._registry.accounts

    @property
    def agents(self) -> dict[AgentKey, Agent]:
        """All agents by (account id, agent id); a live mapping the sources watch."""
        return self._registry.agents

    @property
    def on_agents_changed(self) -> list[Callable[[], None]]:
        """Called after an agent (and so possibly a phone) changes: sources re-read the phones."""
        return self._registry.on_agents_changed

    # --- accounts and tokens ---

    def account_for_token(self, token: str) -> str | None:
        """The account an account token belongs to."""
        return self._registry.account_for_token(token)

    def get_account(self, account_id: str) -> Account:
        """An account, or NotFound."""
        return self._registry.get_account(account_id)

    async def create_account(self, account_id: str, name: str, transfer_enabled: bool) -> Account:
        """Create a tenant; its id must be new."""
        return await self._registry.create_account(account_id, name, transfer_enabled)

    async def update_account(
        self, account_id: str, *, name: str | None, transfer_enabled: bool | None
    ) -> Account:
        """Rename an account or switch its transfer feature."""
        return await self._registry.update_account(
            account_id, name=name, transfer_enabled=transfer_enabled
        )

    async def mint_token(self, account_id: str) -> str:
        """A new account token; it is returned once and only its hash is kept."""
        return await self._registry.mint_token(account_id)

    # --- agents ---

    def get_agent(self, account_id: str, agent_id: str) -> Agent:
        """An agent of this account, or NotFound."""
        return self._registry.get_agent(account_id, agent_id)

    async def put_agent(
        self, account_id: str, agent_id: str, name: str, phone: Phone
    ) -> tuple[Agent, bool]:
        """Create or replace an agent; a phone belongs to one agent only."""
        return await self._registry.put_agent(account_id, agent_id, name, phone)

    def agent_view(self, agent: Agent) -> dict[str, Any]:
        """The agent with its availability (rule 5) and current call."""
        open_sessions = self._open.of_agent((agent.account_id, agent.id))
        blocking = sorted(s.id for s in open_sessions if s.status is SessionStatus.CALL_TRANSFERRED)
        current = None
        live = [
            s
            for s in open_sessions
            if s.call.state in (CallState.RINGING, CallState.CONNECTED, CallState.ON_HOLD)
        ]
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
            "blocked_reason": (
                None
                if not blocking
                else "a transferred session must be ended with a result before new requests"
            ),
            "current_call": current,
            "updated_at": agent.updated_at,
        }

    # --- sessions ---

    def view(self, session: Session) -> dict[str, Any]:
        """The session as the API shows it."""
        account = self.accounts.get(session.account_id)
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

    async def open_session(
        self,
        account_id: str,
        session_id: str,
        agent_id: str,
        customer: Customer,
        call_state: CallState | None,
        sip_call_id: str | None,
    ) -> Session:
        """Open a customer session; refused while the agent has a transferred session (rule 5)."""
        agent = self.agents.get((account_id, agent_id))
        if agent is None:
            raise InvalidInput("unknown_agent", f"no agent {agent_id!r}", field="/agent_id")
        async with self._writer.lock((account_id, agent_id)):
            view = self.agent_view(agent)
            if not view["can_take_requests"]:
                raise TransferNotAllowed(
                    "agent_blocked",
                    "the agent has a transferred session that is not ended with a result: "
                    + ", ".join(view["blocking_sessions"]),
                )
            if self._open.get(account_id, session_id) is not None:
                raise TransferNotAllowed("already_exists", f"session {session_id!r} exists")
            now = self.clock()
            call = Call(
                state=call_state or CallState.NONE,
                sip_call_id=sip_call_id,
                since=now if call_state else None,
                binding=Binding.CALL_ID if sip_call_id else Binding.NONE,
            )
            session = Session(
                account_id, session_id, agent_id, customer, now, call=call, updated_at=now
            )
            detail: dict[str, Any] = {"agent_id": agent_id, "call_state": call.state.value}
            audit = [AuditEntry(now, "desktop", "session_opened", detail)]
            calls = self._phone_calls.get(phone_key(agent.phone.sip_uri))
            if calls is not None:
                session, more = self._bind_new(session, calls, now)
                audit += more
            try:
                await self._writer.commit([SessionWrite(session, audit, create=True)])
            except StoreConflict as exc:
                raise TransferNotAllowed(
                    "already_exists", f"session {session_id!r} exists"
                ) from exc
        log.info("session_opened", account_id=account_id, session_id=session_id, agent_id=agent_id)
        self.metrics.sessions_opened.inc()
        return session

    def _bind_new(
        self, session: Session, calls: PhoneCalls, now: str
    ) -> tuple[Session, list[AuditEntry]]:
        """A session opened while its call is already known to the sources binds at once."""
        if session.call.sip_call_id is not None:
            known = calls.calls.get(session.call.sip_call_id)
            if known is None:
                return session, []
            call = replace(session.call, state=known.state)
            return replace(session, call=call), []
        change = bind_candidates(session, calls)
        if change is None:
            return session, []
        known = calls.calls.get(change.call_id) if change.call_id else None
        outcome = apply_binding(
            session, change.binding, change.call_id, known.state if known else None, now=now
        )
        # The session is new: its first stored version is 1, whatever binding added.
        return replace(outcome.session, version=1), list(outcome.audit)

    async def transfer_step(self, account_id: str, session_id: str, action: Action) -> Session:
        """One desktop click of the seed's flow."""
        session = await self.get_session(account_id, session_id)
        async with self._writer.lock((account_id, session.agent_id)):
            session = await self.get_session(account_id, session_id)
            account = self.get_account(account_id)
            outcome = desktop_step(
                session, action, transfer_enabled=account.transfer_enabled, now=self.clock()
            )
            await self._writer.commit_outcomes([outcome])
        log.info(
            "transfer_step",
            account_id=account_id,
            session_id=session_id,
            action=action.value,
            transfer_state=outcome.session.transfer.state.value,
        )
        self.metrics.desktop_steps.labels(action.value).inc()
        if newly_transferred(session, outcome.session):
            self.metrics.transfers.labels("agent").inc()
        return outcome.session

    async def end(self, account_id: str, session_id: str, result: str) -> Session:
        """Set the result and end the session (rule 4)."""
        session = await self.get_session(account_id, session_id)
        async with self._writer.lock((account_id, session.agent_id)):
            session = await self.get_session(account_id, session_id)
            outcome = end_session(session, result, now=self.clock())
            await self._writer.commit_outcomes([outcome])
        log.info("session_ended", account_id=account_id, session_id=session_id)
        return outcome.session

    async def open_sessions(self, account_id: str, agent_id: str | None) -> list[Session]:
        """The account's open sessions (of one agent if given), oldest first."""
        return self._open.of_account(account_id, agent_id)

    async def changes_after(self, account_id: str, seq: int, limit: int) -> list[Change]:
        """The change feed after a cursor, from the store."""
        return await self._db.run(self._db.store.changes_after, account_id, seq, limit)

    async def first_change_seq(self) -> int:
        """The oldest cursor the change feed can still replay from (0: empty)."""
        return await self._db.run(self._db.store.first_change_seq)

    async def prune_changes(self, keep: int) -> int:
        """Drop all but the newest `keep` changes of the feed; how many went."""
        dropped = await self._db.run(self._db.store.prune_changes, keep)
        if dropped:
            log.info("change_feed_pruned", dropped=dropped, kept=keep)
        return dropped

    async def ping_store(self) -> None:
        """Raise if the store cannot answer."""
        await self._db.ping()

    async def audit(self, account_id: str, session_id: str) -> list[dict[str, Any]]:
        """The session's append-only trail."""
        await self.get_session(account_id, session_id)
        return await self._db.run(self._db.store.read_audit, account_id, session_id)

    # --- phone evidence ---

    async def ingest(self, event: PhoneEvent) -> Session | None:
        """Route one phone event to its session and apply it; returns the session it changed.

        Events for phones no agent uses, or for calls no session can be tied to exactly, are
        counted and dropped.
        """
        pkey = phone_key(event.phone)
        source = event.evidence.source
        agent_key = self._registry.agent_of_phone(pkey)
        if agent_key is None:
            self.metrics.evidence_dropped.labels(source, "unknown_phone").inc()
            return None
        obs = event.evidence.observation
        calls = self._phone_calls.setdefault(pkey, PhoneCalls())
        if event.call_id is not None:
            state = obs.state if isinstance(obs, CallStateChanged) else None
            calls.update(event.call_id, event.remote, state, source)
        async with self._writer.lock(agent_key):
            now = self.clock()
            sessions = self._open.of_agent(agent_key)
            by_id = {s.id: s for s in sessions}
            target, changes = route(sessions, calls, event.call_id)
            outcomes: dict[str, Outcome] = {}
            for change in changes:
                s = by_id[change.session_id]
                known = calls.calls.get(change.call_id) if change.call_id else None
                # When the event itself is the call's new state, let apply_evidence set it, with
                # the time the phone observed it.
                same_call = change.call_id == event.call_id
                event_sets_it = same_call and isinstance(obs, CallStateChanged)
                state = None if known is None or event_sets_it else known.state
                o = apply_binding(s, change.binding, change.call_id, state, now=now)
                if o.changed:
                    outcomes[s.id] = o
            if target is None:
                await self._writer.commit_outcomes(list(outcomes.values()))
                self.metrics.evidence_dropped.labels(source, "no_session").inc()
                return None
            base = outcomes.get(target.id)
            current = base.session if base else target
            o = apply_evidence(current, event.evidence, now=now)
            if base is not None:
                o = Outcome(o.session, (*base.audit, *o.audit), True)
            outcomes[target.id] = o
            await self._writer.commit_outcomes(list(outcomes.values()))
        self.metrics.evidence_applied.labels(source, type(obs).__name__).inc()
        if newly_transferred(current, o.session):
            self.metrics.transfers.labels("phone").inc()
        log.info(
            "phone_evidence",
            account_id=agent_key[0],
            session_id=target.id,
            source=source,
            observation=type(obs).__name__,
            changed=o.changed,
        )
        return o.session
