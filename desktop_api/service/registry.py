"""Accounts, their token hashes and agents: in memory, each change stored first."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from bridge.errors import TransferNotAllowed
from bridge.model import Account, Agent, Phone
from bridge.store import StoreConflict, TokenRecord
from bridge.uris import phone_key
from desktop_api.service.errors import NotFound
from desktop_api.service.open_sessions import AgentKey
from desktop_api.service.runner import StoreRunner
from desktop_api.service.writer import SessionWriter

log = structlog.get_logger("transfer_bridge.service")


def hash_token(token: str) -> str:
    """Tokens are random and long, so one SHA-256 is enough to keep them unreadable at rest."""
    return hashlib.sha256(token.encode()).hexdigest()


# How long a token's stored state (valid, revoked, expired, unknown) is trusted before the store
# is asked again. A revocation made through this process drops the entry at once; one made by
# another process sharing the store takes effect within this bound.
TOKEN_CACHE_SECONDS = 5.0
TOKEN_CACHE_SIZE = 10_000


class Registry:
    """Who is who: accounts (tenants), account tokens and agents with their phones."""

    def __init__(self, db: StoreRunner, writer: SessionWriter, clock: Callable[[], str]) -> None:
        self._db = db
        self._writer = writer
        self._clock = clock
        self.accounts: dict[str, Account] = {}
        self.agents: dict[AgentKey, Agent] = {}
        # token hash -> (stored token or None for unknown, monotonic time the entry expires)
        self._token_cache: dict[str, tuple[TokenRecord | None, float]] = {}
        # Phones are per account: (account id, phone key) -> agent; phone key -> accounts.
        self._agent_by_phone: dict[tuple[str, str], AgentKey] = {}
        self._phone_accounts: dict[str, set[str]] = {}
        self._account_locks: dict[str, asyncio.Lock] = {}
        # Held by a change written here (store, then memory) and by `reload`, so a reload never
        # puts back what it read before a change of this instance landed.
        self._changing = asyncio.Lock()
        # Other instances share the store (PostgreSQL): a miss in memory may be their new
        # account or agent, not yet reloaded here; look in the store before saying NotFound.
        self.shared = False
        # Called after an agent (and so possibly a phone) changes: sources re-read the phones.
        self.on_agents_changed: list[Callable[[], None]] = []

    async def load(self) -> None:
        """Read accounts and agents from the store (once, at start-up); tokens are looked up in
        the store when used."""
        store = self._db.store
        for account in await self._db.run(store.load_accounts):
            self.accounts[account.id] = account
        for agent in await self._db.run(store.load_agents):
            self._remember_agent(agent)

    async def reload(self) -> None:
        """Take what other instances sharing the store changed: accounts, agents (their phones
        go to the sources) and token revocations (the token cache is dropped)."""
        store = self._db.store
        async with self._changing:
            accounts = await self._db.run(store.load_accounts)
            agents = await self._db.run(store.load_agents)
            for account in accounts:
                self.accounts[account.id] = account
            changed = False
            for agent in agents:
                if self.agents.get((agent.account_id, agent.id)) != agent:
                    self._remember_agent(agent)
                    changed = True
            self._token_cache.clear()
        if changed:
            self._agents_changed()

    def _agents_changed(self) -> None:
        for callback in self.on_agents_changed:
            callback()

    async def known_account(self, account_id: str) -> Account:
        """An account, or NotFound; with a shared store, one another instance created a moment
        ago too (read from the store, then kept)."""
        account = self.accounts.get(account_id)
        if account is None and self.shared:
            async with self._changing:
                account = await self._db.run(self._db.store.get_account, account_id)
                if account is not None:
                    account = self.accounts.setdefault(account_id, account)
        if account is None:
            raise NotFound(account_id)
        return account

    async def known_agent(self, account_id: str, agent_id: str) -> Agent:
        """An agent of this account, or NotFound; with a shared store, one another instance
        created a moment ago too (read from the store, then kept and given to the sources)."""
        agent = self.agents.get((account_id, agent_id))
        if agent is None and self.shared:
            async with self._changing:
                agent = await self._db.run(self._db.store.get_agent, account_id, agent_id)
                if agent is not None and (account_id, agent_id) not in self.agents:
                    self._remember_agent(agent)
                    self._agents_changed()
        if agent is None:
            raise NotFound(agent_id)
        return agent

    # --- accounts and tokens ---

    async def account_for_token(self, token: str) -> str | None:
        """The account an account token belongs to, if it is neither revoked nor expired.

        The store is the authority (so a revocation by any process sharing it counts); its
        answer is kept for `TOKEN_CACHE_SECONDS`, and a revocation here drops it at once.
        """
        token_hash = hash_token(token)
        now = time.monotonic()
        hit = self._token_cache.get(token_hash)
        if hit is None or hit[1] <= now:
            record = await self._db.run(self._db.store.token_by_hash, token_hash)
            if len(self._token_cache) >= TOKEN_CACHE_SIZE:
                self._token_cache.clear()
            hit = self._token_cache[token_hash] = (record, now + TOKEN_CACHE_SECONDS)
        record = hit[0]
        if record is None or record.revoked_at is not None:
            return None
        if record.expires_at is not None and record.expires_at <= self._clock():
            return None
        return record.account_id

    async def create_account(self, account_id: str, name: str, transfer_enabled: bool) -> Account:
        """Create a tenant; its id must be new."""
        account = Account(account_id, name, transfer_enabled, self._clock())
        exists = TransferNotAllowed("already_exists", f"account {account_id!r} exists")
        async with self._account_lock(account_id):
            if account_id in self.accounts:
                raise exists
            async with self._changing:
                try:
                    await self._db.run(self._db.store.create_account, account)
                except StoreConflict as exc:  # another instance created it a moment ago
                    raise exists from exc
                self.accounts[account_id] = account
        log.info("account_created", account_id=account_id, transfer_enabled=transfer_enabled)
        return account

    async def update_account(
        self, account_id: str, *, name: str | None, transfer_enabled: bool | None
    ) -> Account:
        """Rename or switch the transfer feature; open sessions get a new version so desktops
        waiting on them see their `actions` change at once."""
        async with self._account_lock(account_id):
            # From the store: another instance may have changed it a moment ago.
            old = await self._db.run(self._db.store.get_account, account_id)
            if old is None:
                raise NotFound(account_id)
            new = replace(
                old,
                name=old.name if name is None else name,
                transfer_enabled=old.transfer_enabled
                if transfer_enabled is None
                else transfer_enabled,
            )
            if new == old:
                self.accounts[account_id] = old
                return old
            async with self._changing:
                await self._db.run(self._db.store.update_account, new)
                self.accounts[account_id] = new
            if new.transfer_enabled != old.transfer_enabled:
                await self._writer.touch_account(new)
        log.info("account_updated", account_id=account_id, transfer_enabled=new.transfer_enabled)
        return new

    async def mint_token(
        self, account_id: str, expires_at: str | None = None
    ) -> tuple[str, TokenRecord]:
        """A new account token (valid until `expires_at` if given, RFC 3339 UTC as the clock
        writes it); it is returned once and only its hash is kept."""
        await self.known_account(account_id)
        token = "tb_" + secrets.token_urlsafe(32)
        token_hash = hash_token(token)
        record = TokenRecord("tok_" + token_hash[:16], account_id, self._clock(), expires_at, None)
        await self._db.run(self._db.store.add_token, token_hash, record)
        self._token_cache.pop(token_hash, None)
        log.info("token_minted", account_id=account_id, token_id=record.id, expires_at=expires_at)
        return token, record

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """The account's tokens, without their secrets (revoked and expired ones too)."""
        await self.known_account(account_id)
        return await self._db.run(self._db.store.list_tokens, account_id)

    async def revoke_token(self, account_id: str, token_id: str) -> TokenRecord:
        """Revoke a token: refused from the next request on (NotFound if the account has no
        such token; revoking twice keeps the first time)."""
        await self.known_account(account_id)
        found = await self._db.run(self._db.store.revoke_token, account_id, token_id, self._clock())
        if found is None:
            raise NotFound(token_id)
        record, token_hash = found
        self._token_cache.pop(token_hash, None)
        log.info("token_revoked", account_id=account_id, token_id=token_id)
        return record

    def _account_lock(self, account_id: str) -> asyncio.Lock:
        return self._account_locks.setdefault(account_id, asyncio.Lock())

    # --- agents ---

    def agent_of_phone(self, account_id: str | None, pkey: str) -> AgentKey | None:
        """The agent of `account_id` whose phone this is (by `bridge.uris.phone_key`), if any.

        Without an account (a source not tied to one), the phone's agent only when exactly one
        account has that phone: evidence never goes to a tenant that merely uses the same URI.
        """
        if account_id is None:
            owners = self._phone_accounts.get(pkey)
            if owners is None or len(owners) != 1:
                return None
            (account_id,) = owners
        return self._agent_by_phone.get((account_id, pkey))

    def phone_accounts(self, pkey: str) -> int:
        """How many accounts have an agent with this phone."""
        return len(self._phone_accounts.get(pkey, ()))

    async def put_agent(
        self, account_id: str, agent_id: str, name: str, phone: Phone
    ) -> tuple[Agent, bool]:
        """Create or replace an agent; a phone belongs to one agent of the account only (exact
        correlation). Other accounts' phones are neither visible nor in the way."""
        key = (account_id, agent_id)
        pkey = phone_key(phone.sip_uri)
        in_use = TransferNotAllowed(
            "phone_in_use", f"phone {phone.sip_uri} is already used by another agent"
        )
        async with self._writer.lock(key):
            owner = self._agent_by_phone.get((account_id, pkey))
            if owner is not None and owner != key:
                raise in_use
            existing = self.agents.get(key)
            if existing is None and self.shared:  # created by another instance a moment ago?
                existing = await self._db.run(self._db.store.get_agent, account_id, agent_id)
            created = existing is None
            agent = Agent(account_id, agent_id, name, phone, self._clock())
            async with self._changing:
                try:
                    await self._db.run(self._db.store.put_agent, agent, pkey)
                except StoreConflict as exc:
                    raise in_use from exc
                self._remember_agent(agent)
        self._agents_changed()
        log.info("agent_saved", account_id=account_id, agent_id=agent_id, created=created)
        return agent, created

    def _remember_agent(self, agent: Agent) -> None:
        key = (agent.account_id, agent.id)
        old = self.agents.get(key)
        if old is not None:
            old_key = phone_key(old.phone.sip_uri)
            self._agent_by_phone.pop((agent.account_id, old_key), None)
            owners = self._phone_accounts.get(old_key)
            if owners is not None:
                owners.discard(agent.account_id)
                if not owners:
                    del self._phone_accounts[old_key]
        self.agents[key] = agent
        pkey = phone_key(agent.phone.sip_uri)
        self._agent_by_phone[(agent.account_id, pkey)] = key
        self._phone_accounts.setdefault(pkey, set()).add(agent.account_id)
