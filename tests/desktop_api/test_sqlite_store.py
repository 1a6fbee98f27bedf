"""What only the SQLite store has to show: WAL mode, its migrations on a real file, the audit
trigger. The contract both stores keep is in tests/desktop_api/store/."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from desktop_api.storage.sqlite import MIGRATIONS, SqliteStore
from tests.desktop_api.store.seed import seed


def seeded(path: Path) -> SqliteStore:
    return seed(SqliteStore(path))


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
