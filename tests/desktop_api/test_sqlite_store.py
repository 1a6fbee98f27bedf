"""What only the SQLite store has to show: WAL mode, its migrations on a real file, the audit
trigger. The contract both stores keep is in tests/desktop_api/store/."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.model import Account, Agent, Customer, Phone, Session
from bridge.session.outcome import AuditEntry
from bridge.store import SessionWrite
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
