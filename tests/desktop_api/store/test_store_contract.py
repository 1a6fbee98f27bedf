"""The store contract the service relies on, on SQLite and on PostgreSQL alike: migrations,
durable writes, optimistic versions, phones per account, the change feed and its cursors, the
append-only audit, tokens."""

from __future__ import annotations

import pytest

from bridge.model import Account, Agent, Customer, Phone, Session
from bridge.session.outcome import AuditEntry
from bridge.store import SessionWrite, Store, StoreConflict, TokenRecord
from tests.desktop_api.store.conftest import StoreOpener
from tests.desktop_api.store.seed import NOW, seed


def version(store: Store, v: int) -> Session:
    session = Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW, version=v)
    store.write_sessions([SessionWrite(session, [AuditEntry(NOW, "phone", f"v{v}")])])
    return session


def test_what_is_written_is_there_after_reopening(open_store: StoreOpener) -> None:
    seed(open_store()).close()
    store = open_store()
    assert [a.id for a in store.load_accounts()] == ["acme"]
    assert [a.id for a in store.load_agents()] == ["a-7"]
    [session] = store.load_open_sessions()
    assert session.id == "s-1" and session.customer.number == "+34900000001"
    assert [e["event"] for e in store.read_audit("acme", "s-1")] == ["opened"]
    assert [c.session.id for c in store.changes_after("acme", 0, 10)] == ["s-1"]
    assert store.get_session("acme", "s-1") == session
    assert store.get_session("other", "s-1") is None


def test_a_stale_version_is_not_written_over_a_newer_one(open_store: StoreOpener) -> None:
    store = seed(open_store())
    [session] = store.load_open_sessions()
    with pytest.raises(StoreConflict):
        store.write_sessions([SessionWrite(session, [])])  # same version again
    with pytest.raises(StoreConflict):
        store.write_sessions([SessionWrite(session, [], create=True)])  # same id again
    version(store, 2)
    with pytest.raises(StoreConflict):
        store.write_sessions([SessionWrite(session, [AuditEntry(NOW, "phone", "late")])])
    # the refused write left nothing behind: no audit line, no change
    assert [e["event"] for e in store.read_audit("acme", "s-1")] == ["opened", "v2"]
    assert [c.session.version for c in store.changes_after("acme", 0, 10)] == [1, 2]


def test_a_batch_is_all_or_nothing(open_store: StoreOpener) -> None:
    store = seed(open_store())
    good = Session("acme", "s-2", "a-7", Customer("+34900000002"), NOW)
    stale = Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW, version=1)
    with pytest.raises(StoreConflict):
        store.write_sessions([SessionWrite(good, [], True), SessionWrite(stale, [])])
    assert store.get_session("acme", "s-2") is None


def test_a_phone_belongs_to_one_agent_per_account(open_store: StoreOpener) -> None:
    store = seed(open_store())
    with pytest.raises(StoreConflict):
        store.put_agent(
            Agent("acme", "a-8", "Bo", Phone("sip:1001@pbx.example"), NOW), "1001@pbx.example"
        )
    # another tenant may use the same URI: accounts are separate namespaces
    store.create_account(Account("zeta", "Zeta", True, NOW))
    store.put_agent(
        Agent("zeta", "z-1", "Zoe", Phone("sip:1001@pbx.example"), NOW), "1001@pbx.example"
    )
    assert sorted((a.account_id, a.id) for a in store.load_agents()) == [
        ("acme", "a-7"),
        ("zeta", "z-1"),
    ]


def test_cursors_count_per_account_are_pruned_and_never_repeat(open_store: StoreOpener) -> None:
    store = seed(open_store())
    for v in range(2, 12):
        version(store, v)
    store.create_account(Account("zeta", "Zeta", True, NOW))
    other = Session("zeta", "s-9", "z-1", Customer("+1"), NOW)
    assert store.write_sessions([SessionWrite(other, [], True)]) == [1]  # zeta's own count
    assert store.last_change_cursors() == {"acme": 11, "zeta": 1}
    assert store.first_change_seq("acme") == 1 and store.first_change_seq("nobody") == 0
    assert store.prune_changes(3) == 9
    assert [c.seq for c in store.changes_after("acme", 0, 100)] == [10, 11]
    assert [c.seq for c in store.changes_after("zeta", 0, 100)] == [1]
    assert store.changes_after("acme", 10, 100)[0].session.version == 11
    # the audit trail is never pruned
    assert len(store.read_audit("acme", "s-1")) == 11
    store.close()
    store = open_store()
    version(store, 12)
    assert store.last_change_cursors()["acme"] == 12  # a pruned cursor is never handed out again


def test_audit_seq_is_the_place_in_the_sessions_own_trail(open_store: StoreOpener) -> None:
    store = seed(open_store())
    store.create_account(Account("zeta", "Zeta", True, NOW))
    other = Session("zeta", "s-9", "z-1", Customer("+1"), NOW)
    store.write_sessions([SessionWrite(other, [AuditEntry(NOW, "desktop", "opened")], True)])
    [session] = [s for s in store.load_open_sessions() if s.account_id == "acme"]
    store.append_audit(session, [AuditEntry(NOW, "phone", "duplicate", {"n": 1})])
    trail = store.read_audit("acme", "s-1")
    assert [(e["seq"], e["event"], e["detail"]) for e in trail] == [
        (1, "opened", {}),
        (2, "duplicate", {"n": 1}),
    ]
    assert [e["seq"] for e in store.read_audit("zeta", "s-9")] == [1]


def test_listing_filters_by_agent_and_status_newest_first(open_store: StoreOpener) -> None:
    store = seed(open_store())
    later = Session("acme", "s-2", "a-8", Customer("+2"), "2026-11-25T11:00:00.000Z")
    store.write_sessions([SessionWrite(later, [], True)])
    assert [s.id for s in store.list_sessions("acme", None, None, 10)] == ["s-2", "s-1"]
    assert [s.id for s in store.list_sessions("acme", "a-7", None, 10)] == ["s-1"]
    assert [s.id for s in store.list_sessions("acme", None, "ended", 10)] == []
    assert [s.id for s in store.list_sessions("acme", None, None, 1)] == ["s-2"]


def test_tokens_are_listed_and_revoked_once(open_store: StoreOpener) -> None:
    store = seed(open_store())
    token = TokenRecord("tok_1", "acme", NOW, "2027-01-01T00:00:00.000Z", None)
    store.add_token("hash-1", token)
    assert store.token_by_hash("hash-1") == token
    assert store.token_by_hash("nope") is None
    assert store.list_tokens("acme") == [token]
    assert store.revoke_token("zeta", "tok_1", NOW) is None  # not that account's token
    revoked, token_hash = store.revoke_token("acme", "tok_1", "2026-11-26T00:00:00.000Z") or (
        None,
        "",
    )
    assert revoked is not None and revoked.revoked_at == "2026-11-26T00:00:00.000Z"
    assert token_hash == "hash-1"
    again = store.revoke_token("acme", "tok_1", "2026-12-01T00:00:00.000Z")
    assert again is not None and again[0].revoked_at == "2026-11-26T00:00:00.000Z"
    store.close()
    assert open_store().token_by_hash("hash-1") == revoked
    with pytest.raises(StoreConflict):
        open_store().add_token("hash-1", token)  # the same secret twice
