"""What a desktop asks of a session: open it, take a transfer step, end it with a result.

Each command runs the rules of `bridge.session.machine` under the agent's lock and commits
what they decide; the API contract is docs/api.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from bridge.errors import InvalidInput, TransferNotAllowed
from bridge.model import Action, Binding, Call, CallState, Customer, Session
from bridge.session.machine import desktop_step, end_session, pick_call
from bridge.session.outcome import AuditEntry, Outcome
from bridge.store import AgentBlocked, SessionWrite, StoreConflict, WriteGuard
from desktop_api.metrics import Metrics
from desktop_api.service.errors import NotFound
from desktop_api.service.evidence import EvidenceRouter
from desktop_api.service.reads import Reads
from desktop_api.service.registry import Registry
from desktop_api.service.writer import SessionWriter, newly_transferred

log = structlog.get_logger("transfer_bridge.service")


class SessionCommands:
    """The desktop's writes to sessions."""

    def __init__(
        self,
        registry: Registry,
        reads: Reads,
        writer: SessionWriter,
        evidence: EvidenceRouter,
        metrics: Metrics,
        clock: Callable[[], str],
    ) -> None:
        self._registry = registry
        self._reads = reads
        self._writer = writer
        self._evidence = evidence
        self._metrics = metrics
        self._clock = clock

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
        try:
            agent = await self._registry.known_agent(account_id, agent_id)
        except NotFound:
            raise InvalidInput(
                "unknown_agent", f"no agent {agent_id!r}", field="/agent_id"
            ) from None
        exists = TransferNotAllowed("already_exists", f"session {session_id!r} exists")
        async with self._writer.lock((account_id, agent_id)):
            view = self._reads.agent_view(agent)
            if not view["can_take_requests"] and self._writer.agent_locks is not None:
                # Another instance may have ended the blocking session a moment ago.
                await self._writer.refresh_agent((account_id, agent_id))
                view = self._reads.agent_view(agent)
            if not view["can_take_requests"]:
                raise TransferNotAllowed(
                    "agent_blocked",
                    "the agent has a transferred session that is not ended with a result: "
                    + ", ".join(view["blocking_sessions"]),
                )
            if self._reads.cached_session(account_id, session_id) is not None:
                raise exists
            now = self._clock()
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
            session, more = self._evidence.bind_new(session, agent, now)
            audit += more
            # Rule 5 again inside the transaction, under the agent's lock there: another
            # instance may have transferred one of the agent's sessions a moment ago.
            guard = WriteGuard(agent=(account_id, agent_id), agent_free=True)
            try:
                await self._writer.commit([SessionWrite(session, audit, create=True)], guard)
            except StoreConflict as exc:
                raise exists from exc
            except AgentBlocked as exc:
                await self._writer.refresh_agent((account_id, agent_id))
                raise TransferNotAllowed(
                    "agent_blocked",
                    "the agent has a transferred session that is not ended with a result: "
                    + ", ".join(exc.blocking),
                ) from exc
        log.info("session_opened", account_id=account_id, session_id=session_id, agent_id=agent_id)
        self._metrics.sessions_opened.inc()
        return session

    async def transfer_step(self, account_id: str, session_id: str, action: Action) -> Session:
        """One desktop click of the seed's flow."""
        account = await self._registry.known_account(account_id)

        def step(session: Session) -> Outcome:
            return desktop_step(
                session, action, transfer_enabled=account.transfer_enabled, now=self._clock()
            )

        session, outcome = await self._decide(account_id, session_id, step)
        log.info(
            "transfer_step",
            account_id=account_id,
            session_id=session_id,
            action=action.value,
            transfer_state=outcome.session.transfer.state.value,
        )
        self._metrics.desktop_steps.labels(action.value).inc()
        if newly_transferred(session, outcome.session):
            self._metrics.transfers.labels("agent").inc()
        return outcome.session

    async def set_call(
        self, account_id: str, session_id: str, sip_call_id: str, if_match: int | None
    ) -> Session:
        """The desktop names the session's call (e.g. one candidate of an `ambiguous` one).

        `if_match`: the version the desktop saw (`If-Match`), refused with
        `412 version_mismatch` when the session moved on; another open session of the agent
        bound to that call is `409 call_in_use`.
        """

        def pick(session: Session) -> Outcome:
            if if_match is not None and if_match != session.version:
                raise TransferNotAllowed(
                    "version_mismatch",
                    f"the session is at version {session.version}, which If-Match does not name",
                )
            others = self._reads.open_of_agent(account_id, session.agent_id)
            holders = [
                s.id
                for s in others
                if s.id != session_id
                and s.call.sip_call_id == sip_call_id
                and s.call.binding in (Binding.CALL_ID, Binding.PHONE_AND_NUMBER)
            ]
            if holders:
                raise TransferNotAllowed(
                    "call_in_use",
                    f"the call is bound to another open session of the agent: {holders[0]}",
                )
            agent = self._registry.agents.get((account_id, session.agent_id))
            state = self._evidence.live_state(agent, sip_call_id) if agent else None
            return pick_call(session, sip_call_id, state, now=self._clock())

        _, outcome = await self._decide(account_id, session_id, pick)
        log.info(
            "session_call_set",
            account_id=account_id,
            session_id=session_id,
            changed=outcome.changed,
        )
        return outcome.session

    async def end(self, account_id: str, session_id: str, result: str) -> Session:
        """Set the result and end the session (rule 4)."""
        _, outcome = await self._decide(
            account_id, session_id, lambda session: end_session(session, result, now=self._clock())
        )
        log.info("session_ended", account_id=account_id, session_id=session_id)
        return outcome.session

    async def _decide(
        self, account_id: str, session_id: str, decide: Callable[[Session], Outcome]
    ) -> tuple[Session, Outcome]:
        """Read the session, let `decide` run the rules on it, commit, under the agent's lock.

        When another instance changed the session first (the store refuses the stale version),
        read it again and decide again: the desktop's request applies to the session as it is.
        Returns the session as read and the outcome."""
        session = await self._reads.get_session(account_id, session_id)
        key = (account_id, session.agent_id)

        async def attempt(guard: WriteGuard) -> tuple[Session, Outcome]:
            session = await self._reads.get_session(account_id, session_id)
            outcome = decide(session)
            await self._writer.commit_outcomes([outcome], guard, {session.id: session.version})
            return session, outcome

        async with self._writer.lock(key):
            return await self._writer.settle(key, attempt, WriteGuard(agent=key))
