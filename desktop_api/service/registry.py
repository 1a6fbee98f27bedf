"""Accounts, their token hashes and agents: in memory, each change stored first."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import replace

import structlog

from bridge.errors import TransferNotAllowed
from bridge.model import Account, Agent, Phone
from bridge.store import StoreConflict
from bridge.uris import phone_key
from desktop_api.service.errors import NotFound
from desktop_api.service.open_sessions import AgentKey
from desktop_api.service.runner import StoreRunner
from desktop_api.service.writer import SessionWriter

log = structlog.get_logger("transfer_bridge.service")


def hash_token(token: str) -> str:
    """Tokens are random and long, so one SHA-256 is enough to keep them unreadable at rest."""
    return hashlib.sha256(token.encode()).hexdigest()


class Registry:
    """Who is who: accounts (tenants), account tokens and agents with their phones."""

    def __init__(self, db: StoreRunner, writer: SessionWriter, clock: Callable[[], str]) -> None:
        self._db = db
        self._writer = writer
        self._clock = clock
        self.accounts: dict[str, Account] = {}
        self.agents: dict[AgentKey, Agent] = {}
        self._tokens: dict[str, str] = {}  # token hash -> account id
        self._agent_by_phone: dict[str, AgentKey] = {}
        self._account_locks: dict[str, asyncio.Lock] = {}
        # Called after an agent (and so possibly a phone) changes: sources re-read the phones.
        self.on_agents_changed: list[Callable[[], None]] = []

    async def load(self) -> None:
        """Read accounts, token hashes and agents from the store (once, at start-up)."""
        store = self._db.store
        for account in await self._db.run(store.load_accounts):
            self.accounts[account.id] = account
        for token_hash, account_id in await self._db.run(store.load_token_hashes):
            self._tokens[token_hash] = account_id
        for agent in await self._db.run(store.load_agents):
            self._remember_agent(agent)

    # --- accounts and tokens ---

    def account_for_token(self, token: str) -> str | None:
        """The account an account token belongs to."""
        return self._tokens.get(hash_token(token))

    def get_account(self, account_id: str) -> Account:
        """An account, or NotFound."""
        account = self.accounts.get(account_id)
        if account is None:
            raise NotFound(account_id)
        return account

    async def create_account(self, account_id: str, name: str, transfer_enabled: bool) -> Account:
        """Create a tenant; its id must be new."""
        account = Account(account_id, name, transfer_enabled, self._clock())
        async with self._account_lock(account_id):
            if account_id in self.accounts:
                raise TransferNotAllowed("already_exists", f"account {account_id!r} exists")
            await self._db.run(self._db.store.create_account, account)
            self.accounts[account_id] = account
        log.info("account_created", account_id=account_id, transfer_enabled=transfer_enabled)
        return account

    async def update_account(
        self, account_id: str, *, name: str | None, transfer_enabled: bool | None
    ) -> Account:
        """Rename or switch the transfer feature; open sessions get a new version so desktops
        waiting on them see their `actions` change at once."""
        async with self._account_lock(account_id):
            old = self.get_account(account_id)
            new = replace(
                old,
                name=old.name if name is None else name,
                transfer_enabled=old.transfer_enabled
                if transfer_enabled is None
                else transfer_enabled,
            )
            if new == old:
                return old
            await self._db.run(self._db.store.update_account, new)
            self.accounts[account_id] = new
            if new.transfer_enabled != old.transfer_enabled:
                await self._writer.touch_account(new)
        log.info("account_updated", account_id=account_id, transfer_enabled=new.transfer_enabled)
        return new

    async def mint_token(self, account_id: str) -> str:
        """A new account token; it is returned once and only its hash is kept."""
        self.get_account(account_id)
        token = "tb_" + secrets.token_urlsafe(32)
        token_hash = hash_token(token)
        await self._db.run(self._db.store.add_token, token_hash, account_id, self._clock())
        self._tokens[token_hash] = account_id
        log.info("token_minted", account_id=account_id)
        return token

    def _account_lock(self, account_id: str) -> asyncio.Lock:
        return self._account_locks.setdefault(account_id, asyncio.Lock())

    # --- agents ---

    def get_agent(self, account_id: str, agent_id: str) -> Agent:
        """An agent of this account, or NotFound."""
        agent = self.agents.get((account_id, agent_id))
        if agent is None:
            raise NotFound(agent_id)
        return agent

    def agent_of_phone(self, pkey: str) -> AgentKey | None:
        """The agent whose phone this is (by `bridge.uris.phone_key`), if any."""
        return self._agent_by_phone.get(pkey)

    async def put_agent(
        self, account_id: str, agent_id: str, name: str, phone: Phone
    ) -> tuple[Agent, bool]:
        """Create or replace an agent; a phone belongs to one agent only (exact correlation)."""
        key = (account_id, agent_id)
        pkey = phone_key(phone.sip_uri)
        in_use = TransferNotAllowed(
            "phone_in_use", f"phone {phone.sip_uri} is already used by another agent"
        )
        async with self._writer.lock(key):
            owner = self._agent_by_phone.get(pkey)
            if owner is not None and owner != key:
                raise in_use
            created = key not in self.agents
            agent = Agent(account_id, agent_id, name, phone, self._clock())
            try:
                await self._db.run(self._db.store.put_agent, agent, pkey)
            except StoreConflict as exc:
                raise in_use from exc
            self._remember_agent(agent)
        for callback in self.on_agents_changed:
            callback()
        log.info("agent_saved", account_id=account_id, agent_id=agent_id, created=created)
        return agent, created

    def _remember_agent(self, agent: Agent) -> None:
        key = (agent.account_id, agent.id)
        old = self.agents.get(key)
        if old is not None:
            self._agent_by_phone.pop(phone_key(old.phone.sip_uri), None)
        self.agents[key] = agent
        self._agent_by_phone[phone_key(agent.phone.sip_uri)] = key
