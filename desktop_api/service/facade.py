"""The bridge service: one object the routes use (`app[SERVICE]`), made of parts with one job each.

Open sessions, agents, accounts and token hashes live in memory (the store is read once at
start-up); every change is committed to the store, off the event loop, before it becomes
visible. Writes for one agent are serialised by a lock, so a click and a piece of phone evidence
for the same agent never race. The parts:

- `runner.StoreRunner`: the one thread that runs store calls;
- `open_sessions.OpenSessions`: the open sessions in memory;
- `writer.SessionWriter`: per-agent locks and the commit path to the store and the feed;
- `registry.Registry`: accounts, tokens and agents;
- `reads.Reads`: session and agent views, session and audit reads;
- `feed.ChangeFeed`: the stored change feed (SSE resume);
- `commands.SessionCommands`: open, transfer step, naming the call, end;
- `evidence.EvidenceRouter`: phone evidence to its session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from bridge.evidence import PhoneEvent
from bridge.model import Account, Action, Agent, CallState, Customer, Phone, Session
from bridge.store import Change, Store, TokenRecord
from desktop_api.changes import ChangeHub
from desktop_api.clock import utc_now
from desktop_api.cluster.agent_lock import AgentLocks
from desktop_api.cluster.follower import Follower
from desktop_api.metrics import Metrics
from desktop_api.service.commands import SessionCommands
from desktop_api.service.evidence import EvidenceRouter
from desktop_api.service.feed import ChangeFeed
from desktop_api.service.open_sessions import AgentKey, OpenSessions
from desktop_api.service.reads import Reads
from desktop_api.service.registry import Registry
from desktop_api.service.runner import StoreRunner
from desktop_api.service.writer import SessionWriter

log = structlog.get_logger("transfer_bridge.service")


class BridgeService:
    """Accounts, agents, sessions and phone evidence, over a `Store`."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        clock: Callable[[], str] = utc_now,
        shared_url: str | None = None,
        instance: str = "",
        poll_interval: float = 1.0,
    ) -> None:
        """`shared_url`: the PostgreSQL store other instances share (None: this process is the
        store's only writer, as with SQLite)."""
        self._hub = ChangeHub()
        self._db = StoreRunner(store)
        self._open = OpenSessions()
        self._writer = SessionWriter(self._db, self._open, self._hub, metrics, clock)
        self._registry = Registry(self._db, self._writer, clock)
        self._reads = Reads(self._db, self._registry, self._open)
        self._feed = ChangeFeed(self._db, self._hub, self._writer.order)
        self._evidence = EvidenceRouter(self._registry, self._open, self._writer, metrics, clock)
        self._commands = SessionCommands(
            self._registry, self._reads, self._writer, self._evidence, metrics, clock
        )
        self.follower = Follower(
            self._db,
            self._writer,
            self._registry,
            self._evidence,
            metrics,
            listen_url=shared_url,
            instance=instance,
            poll_interval=poll_interval,
        )
        self._follow: asyncio.Task[None] | None = None
        if shared_url is not None:
            self._writer.agent_locks = AgentLocks(shared_url, instance)
            self._registry.shared = True

    # --- life cycle ---

    async def start(self) -> None:
        """Load what the store holds; nothing is lost across a restart."""
        await self._registry.load()
        # Cursors before sessions: a change another instance commits in between is read from
        # the feed afterwards (the cache keeps the newer version of a session it has).
        await self._feed.load()
        await self._writer.load()
        self._follow = asyncio.create_task(self.follower.run(), name="follower")
        log.info(
            "store_loaded",
            store=type(self._db.store).__name__,
            accounts=len(self.accounts),
            agents=len(self.agents),
            open_sessions=len(self._open),
        )

    async def close(self) -> None:
        """Release waiters, finish queued writes and close the store."""
        self._hub.close()
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        await self._db.close()

    @property
    def hub(self) -> ChangeHub:
        """The live fan-out of committed changes (long-polls and SSE streams wait on it)."""
        return self._hub

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

    async def ping_store(self) -> None:
        """Raise if the store cannot answer."""
        await self._db.ping()

    # --- accounts and tokens ---

    async def account_for_token(self, token: str) -> str | None:
        """The account a valid (not revoked, not expired) account token belongs to."""
        return await self._registry.account_for_token(token)

    async def known_account(self, account_id: str) -> Account:
        """An account, or NotFound; also one another instance created a moment ago."""
        return await self._registry.known_account(account_id)

    async def known_agent(self, account_id: str, agent_id: str) -> Agent:
        """An agent, or NotFound; also one another instance created a moment ago."""
        return await self._registry.known_agent(account_id, agent_id)

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

    async def mint_token(
        self, account_id: str, expires_at: str | None = None
    ) -> tuple[str, TokenRecord]:
        """A new account token; it is returned once and only its hash is kept."""
        return await self._registry.mint_token(account_id, expires_at)

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """The account's tokens, without their secrets."""
        return await self._registry.list_tokens(account_id)

    async def revoke_token(self, account_id: str, token_id: str) -> TokenRecord:
        """Revoke a token; refused from the next request on."""
        return await self._registry.revoke_token(account_id, token_id)

    # --- agents ---

    async def put_agent(
        self, account_id: str, agent_id: str, name: str, phone: Phone
    ) -> tuple[Agent, bool]:
        """Create or replace an agent; a phone belongs to one agent only."""
        return await self._registry.put_agent(account_id, agent_id, name, phone)

    def agent_view(self, agent: Agent) -> dict[str, Any]:
        """The agent with its availability (rule 5) and current call."""
        return self._reads.agent_view(agent)

    # --- session reads ---

    def view(self, session: Session) -> dict[str, Any]:
        """The session as the API shows it."""
        return self._reads.view(session)

    def view_bytes(self, session: Session) -> bytes:
        """`view` encoded as JSON, cached per open session and version."""
        return self._reads.view_bytes(session)

    def cached_session(self, account_id: str, session_id: str) -> Session | None:
        """An open session from memory, without a trip to the store."""
        return self._reads.cached_session(account_id, session_id)

    async def get_session(self, account_id: str, session_id: str) -> Session:
        """An open session from memory, an ended one from the store, or NotFound."""
        return await self._reads.get_session(account_id, session_id)

    async def list_sessions(
        self, account_id: str, agent_id: str | None, status: str | None, limit: int
    ) -> list[Session]:
        """Sessions of an account, newest first."""
        return await self._reads.list_sessions(account_id, agent_id, status, limit)

    async def open_sessions(self, account_id: str, agent_id: str | None) -> list[Session]:
        """The account's open sessions (of one agent if given), oldest first."""
        return await self._reads.open_sessions(account_id, agent_id)

    async def audit(self, account_id: str, session_id: str) -> list[dict[str, Any]]:
        """The session's append-only trail."""
        return await self._reads.audit(account_id, session_id)

    # --- session commands and phone evidence ---

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
        return await self._commands.open_session(
            account_id, session_id, agent_id, customer, call_state, sip_call_id
        )

    async def transfer_step(self, account_id: str, session_id: str, action: Action) -> Session:
        """One desktop click of the seed's flow."""
        return await self._commands.transfer_step(account_id, session_id, action)

    async def set_call(
        self, account_id: str, session_id: str, sip_call_id: str, if_match: int | None
    ) -> Session:
        """The desktop names the session's call (`PATCH /v1/sessions/{id}`)."""
        return await self._commands.set_call(account_id, session_id, sip_call_id, if_match)

    async def end(self, account_id: str, session_id: str, result: str) -> Session:
        """Set the result and end the session (rule 4)."""
        return await self._commands.end(account_id, session_id, result)

    async def ingest(self, event: PhoneEvent) -> Session | None:
        """Route one phone event to its session and apply it; returns the session it changed."""
        return await self._evidence.ingest(event)

    # --- change feed ---

    async def changes_after(self, account_id: str, seq: int, limit: int) -> list[Change]:
        """The change feed after a cursor, from the store."""
        return await self._feed.changes_after(account_id, seq, limit)

    async def catch_up(self, account_id: str) -> None:
        """Pass on what other instances wrote to the account's feed, now (before a resume)."""
        await self.follower.catch_up(account_id)

    async def first_change_seq(self, account_id: str) -> int:
        """The account's oldest cursor the change feed can still replay from (0: empty)."""
        return await self._feed.first_change_seq(account_id)

    async def prune_changes(self, keep: int) -> int:
        """Drop all but the newest `keep` changes of the feed; how many went."""
        return await self._feed.prune_changes(keep)
