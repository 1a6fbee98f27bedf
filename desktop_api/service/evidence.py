"""Phone evidence: find the one session an event belongs to, then let the machine apply it.

Correlation is `bridge.session.correlation` (exact matches only); the rules are
`bridge.session.phone`. The calls each phone is on are remembered here, per phone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from bridge.evidence import CallStateChanged, PhoneEvent
from bridge.model import Agent, CallState, Session
from bridge.session.correlation import BindingChange, PhoneCalls, route
from bridge.session.machine import apply_binding
from bridge.session.outcome import AuditEntry, Outcome
from bridge.session.phone import apply_evidence
from bridge.store import EvidenceSeen, WriteGuard
from bridge.uris import phone_key
from desktop_api.metrics import Metrics
from desktop_api.service.open_sessions import AgentKey, OpenSessions
from desktop_api.service.registry import Registry
from desktop_api.service.writer import SessionWriter, newly_transferred

log = structlog.get_logger("transfer_bridge.service")


class EvidenceRouter:
    """Routes `PhoneEvent`s from the sources to sessions, under the agent's lock."""

    def __init__(
        self,
        registry: Registry,
        open_sessions: OpenSessions,
        writer: SessionWriter,
        metrics: Metrics,
        clock: Callable[[], str],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._open = open_sessions
        self._writer = writer
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic  # the bridge's own time for call liveness
        self._phone_calls: dict[tuple[str, str], PhoneCalls] = {}  # by account, phone_key

    async def ingest(self, event: PhoneEvent) -> Session | None:
        """Route one phone event to its session and apply it; returns the session it changed.

        Events for phones no agent uses, or for calls no session can be tied to exactly, are
        counted and dropped.
        """
        pkey = phone_key(event.phone)
        source = event.evidence.source
        agent_key = self._registry.agent_of_phone(event.account_id, pkey)
        if agent_key is None:
            shared = event.account_id is None and self._registry.phone_accounts(pkey) > 1
            reason = "ambiguous_phone" if shared else "unknown_phone"
            self._metrics.evidence_dropped.labels(source, reason).inc()
            return None
        obs = event.evidence.observation
        calls = self._phone_calls.setdefault((agent_key[0], pkey), PhoneCalls())
        if event.call_id is not None:
            state = obs.state if isinstance(obs, CallStateChanged) else None
            calls.update(event.call_id, event.remote, state, source, self._monotonic())
        guard = WriteGuard(agent=agent_key, evidence=event_digest(event))

        async def attempt(guard: WriteGuard) -> tuple[Session, Session, Outcome] | None:
            return await self._apply(agent_key, calls, event, guard)

        async with self._writer.lock(agent_key):
            try:
                applied = await self._writer.settle(agent_key, attempt, guard)
            except EvidenceSeen:
                # Another instance (sent the same capture) applied it already: what it wrote
                # is the agent's state now.
                self._metrics.evidence_dropped.labels(source, "already_applied").inc()
                await self._writer.refresh_agent(agent_key)
                return None
        if applied is None:
            self._metrics.evidence_dropped.labels(source, "no_session").inc()
            return None
        target, current, o = applied
        self._metrics.evidence_applied.labels(source, type(obs).__name__).inc()
        if newly_transferred(current, o.session):
            self._metrics.transfers.labels("phone").inc()
        self._log(agent_key, target, event, o)
        return o.session

    async def _apply(
        self, agent_key: AgentKey, calls: PhoneCalls, event: PhoneEvent, guard: WriteGuard
    ) -> tuple[Session, Session, Outcome] | None:
        """Route and apply under the agent's lock; (target as it was, as it was before the
        evidence itself, outcome), or None when no session takes the event."""
        now = self._clock()
        sessions = self._open.of_agent(agent_key)
        bases = {s.id: s.version for s in sessions}
        target, changes = route(sessions, calls, event.call_id, self._monotonic())
        outcomes = self._bindings(sessions, changes, calls, event, now)
        if target is None:
            await self._writer.commit_outcomes(list(outcomes.values()), guard, bases)
            return None
        base = outcomes.get(target.id)
        current = base.session if base else target
        o = apply_evidence(current, event.evidence, now=now)
        if base is not None:
            # The binding and the evidence that caused it are one write: one version more.
            merged = replace(o.session, version=target.version + 1)
            o = Outcome(merged, (*base.audit, *o.audit), True)
        outcomes[target.id] = o
        await self._writer.commit_outcomes(list(outcomes.values()), guard, bases)
        return target, current, o

    async def rebind(self, agent_key: AgentKey) -> None:
        """Bind the agent's sessions to calls this instance's sources saw, when a session
        another instance opened arrives here (that instance may not see the phone's calls)."""
        agent = self._registry.agents.get(agent_key)
        if agent is None:
            return
        calls = self._phone_calls.get((agent.account_id, phone_key(agent.phone.sip_uri)))
        if calls is None or not calls.calls:
            return

        async def attempt(guard: WriteGuard) -> None:
            sessions = self._open.of_agent(agent_key)
            _, changes = route(sessions, calls, None, self._monotonic())
            outcomes = self._bindings(sessions, changes, calls, None, self._clock())
            bases = {s.id: s.version for s in sessions}
            await self._writer.commit_outcomes(list(outcomes.values()), guard, bases)

        async with self._writer.lock(agent_key):
            await self._writer.settle(agent_key, attempt, WriteGuard(agent=agent_key))

    def _bindings(
        self,
        sessions: list[Session],
        changes: list[BindingChange],
        calls: PhoneCalls,
        event: PhoneEvent | None,
        now: str,
    ) -> dict[str, Outcome]:
        """The sessions whose binding to a call changed (on this event, or on a session another
        instance opened: `event` None), by session id."""
        by_id = {s.id: s for s in sessions}
        obs = event.evidence.observation if event is not None else None
        outcomes: dict[str, Outcome] = {}
        for change in changes:
            s = by_id[change.session_id]
            known = calls.calls.get(change.call_id) if change.call_id else None
            # When the event itself is the call's new state, let apply_evidence set it, with
            # the time the phone observed it (unless the session's old call ended: evidence
            # does not revive an ended call, a binding to a new one does).
            same_call = event is not None and change.call_id == event.call_id
            event_sets_it = (
                same_call
                and isinstance(obs, CallStateChanged)
                and s.call.state is not CallState.ENDED
            )
            state = None if known is None or event_sets_it else known.state
            o = _bind(s, change, state, now)
            if o.changed:
                outcomes[s.id] = o
        return outcomes

    @staticmethod
    def _log(agent_key: AgentKey, target: Session, event: PhoneEvent, outcome: Outcome) -> None:
        log.info(
            "phone_evidence",
            account_id=agent_key[0],
            session_id=target.id,
            source=event.evidence.source,
            observation=type(event.evidence.observation).__name__,
            changed=outcome.changed,
        )

    def bind_new(
        self, session: Session, agent: Agent, now: str
    ) -> tuple[Session, list[AuditEntry]]:
        """A session opened while its call is already known to the sources binds at once."""
        calls = self._phone_calls.get((agent.account_id, phone_key(agent.phone.sip_uri)))
        if calls is None:
            return session, []
        if session.call.sip_call_id is not None:
            known = calls.calls.get(session.call.sip_call_id)
            if known is None:
                return session, []
            call = replace(session.call, state=known.state)
            return replace(session, call=call), []
        others = [s for s in self._open.of_agent((agent.account_id, agent.id))]
        _, changes = route([*others, session], calls, None, self._monotonic())
        change = next((c for c in changes if c.session_id == session.id), None)
        if change is None:
            return session, []
        known = calls.calls.get(change.call_id) if change.call_id else None
        outcome = _bind(session, change, known.state if known else None, now)
        # The session is new: its first stored version is 1, whatever binding added.
        return replace(outcome.session, version=1), list(outcome.audit)

    def live_state(self, agent: Agent, call_id: str) -> CallState | None:
        """The state the sources report for a call of this agent's phone, if they know it."""
        calls = self._phone_calls.get((agent.account_id, phone_key(agent.phone.sip_uri)))
        known = calls.known(call_id) if calls is not None else None
        return known.state if known is not None else None


def _bind(session: Session, change: BindingChange, state: CallState | None, now: str) -> Outcome:
    return apply_binding(
        session,
        change.binding,
        change.call_id,
        state,
        now=now,
        reason=change.reason,
        candidates=change.candidates,
        previous=change.previous,
        skipped=change.skipped,
    )


def event_digest(event: PhoneEvent) -> str:
    """The same event as another instance received it (a capture sent to two instances):
    source, phone, call, number, account, the time the source stamped and the observation."""
    return hashlib.blake2b(repr(event).encode(), digest_size=16).hexdigest()
