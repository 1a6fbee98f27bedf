"""The SQLite store on a real file: migrations, append-only audit, durable writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.model import Account, Agent, Customer, Phone, Session
from bridge.session.outcome import AuditEntry
from bridge.store import SessionWrite, StoreConflict
from desktop_api.storage.sqlite import MIGRATIONS, SqliteStore

NOW = "2026-11-25T10:00:00.000Z"


def seeded(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    store.create_account(Account("acme", "Acme", True, NOW))
    store.put_agent(
        Agent("acme", "a-7", "Ana", Phone("sip:1001@pbx.example"), NOW), "1001@pbx.example"
    )
    session = Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW)
    store.write_sessions([SessionWrite(session, [AuditEntry(NOW, "desktop", "opened")], True)])
    return store


def test_fresh_file_is_migrated_in_wal_mode(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.db")
    assert store.schema_version() == len(MIGRATIONS)
    mode = sqlite3.connect(tmp_path / "b.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()
    again = SqliteStore(tmp_path / "b.db")  # reopening migrates nothing twice
    assert again.schema_version() == len(MIGRATIONS)
    again.close()


def test_a_file_from_a_newer_bridge_is_refused(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "b.db").close()
    db = sqlite3.connect(tmp_path / "b.db")
    db.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS) + 1,))
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer than this bridge knows"):
        SqliteStore(tmp_path / "b.db")


def test_audit_trail_is_append_only(tmp_path: Path) -> None:
    seeded(tmp_path / "b.db").close()
    db = sqlite3.connect(tmp_path / "b.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET event = 'forged'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit")


def test_what_is_written_is_there_after_reopening(tmp_path: Path) -> None:
    seeded(tmp_path / "b.db").close()
    store = SqliteStore(tmp_path / "b.db")
    assert [a.id for a in store.load_accounts()] == ["acme"]
    assert [a.id for a in store.load_agents()] == ["a-7"]
    [session] = store.load_open_sessions()
    assert session.id == "s-1"
    assert [e["event"] for e in store.read_audit("acme", "s-1")] == ["opened"]
    assert [c.session.id for c in store.changes_after("acme", 0, 10)] == ["s-1"]


def test_a_stale_version_is_not_written_over_a_newer_one(tmp_path: Path) -> None:
    store = seeded(tmp_path / "b.db")
    [session] = store.load_open_sessions()
    with pytest.raises(StoreConflict):
        store.write_sessions([SessionWrite(session, [])])  # same version again
    with pytest.raises(StoreConflict):
        store.write_sessions([SessionWrite(session, [], create=True)])  # same id again


def test_one_phone_belongs_to_one_agent(tmp_path: Path) -> None:
    store = seeded(tmp_path / "b.db")
    with pytest.raises(StoreConflict):
        store.put_agent(
            Agent("acme", "a-8", "Bo", Phone("sip:1001@pbx.example"), NOW), "1001@pbx.example"
        )


def test_the_change_feed_is_pruned_to_the_newest_and_cursors_never_repeat(tmp_path: Path) -> None:
    store = seeded(tmp_path / "b.db")
    session = store.load_open_sessions()[0]
    for version in range(2, 12):
        session = Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW, version=version)
        store.write_sessions([SessionWrite(session, [], False)])
    assert store.last_change_cursors() == {"acme": 11} and store.first_change_seq("acme") == 1
    assert store.prune_changes(3) == 8
    assert [c.seq for c in store.changes_after("acme", 0, 100)] == [9, 10, 11]
    assert store.prune_changes(3) == 0
    # the audit trail is never pruned
    assert len(store.read_audit("acme", "s-1")) == 1
    store.close()
    store = SqliteStore(tmp_path / "b.db")
    session = Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW, version=12)
    store.write_sessions([SessionWrite(session, [], False)])
    assert store.last_change_cursors()["acme"] == 12  # a pruned cursor is never handed out again
