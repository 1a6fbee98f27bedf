"""One account, one agent, one open session: what the store tests start from."""

from __future__ import annotations

from typing import TypeVar

from bridge.model import Account, Agent, Customer, Phone, Session
from bridge.session.outcome import AuditEntry
from bridge.store import SessionWrite, Store

NOW = "2026-11-25T10:00:00.000Z"
S = TypeVar("S", bound=Store)


def seed(store: S) -> S:
    store.create_account(Account("acme", "Acme", True, NOW))
    store.put_agent(
        Agent("acme", "a-7", "Ana", Phone("sip:1001@pbx.example"), NOW), "1001@pbx.example"
    )
    session = Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW)
    store.write_sessions([SessionWrite(session, [AuditEntry(NOW, "desktop", "opened")], True)])
    return store
