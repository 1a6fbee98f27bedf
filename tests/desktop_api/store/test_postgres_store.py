"""What only the PostgreSQL store has to show: its own migrations, the audit trigger, a server
that goes away and comes back, concurrent writers from several connections."""

from __future__ import annotations

import threading

import psycopg
import pytest

from bridge.model import Customer, Session
from bridge.session.outcome import AuditEntry
from bridge.store import SessionWrite, StoreConflict, StoreUnavailable
from desktop_api.storage import redacted_url
from desktop_api.storage.postgres import MIGRATIONS, PostgresStore
from tests.desktop_api.store.seed import NOW, seed
from tests.rig.postgres import Cluster


def seeded(url: str) -> PostgresStore:
    return seed(PostgresStore(url))


def test_a_fresh_database_is_migrated_once_and_a_newer_one_refused(pg_cluster: Cluster) -> None:
    url = pg_cluster.create_database("pg_migrate")
    stores = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(url))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]  # three bridges at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 3
    assert {s.schema_version() for s in stores} == {len(MIGRATIONS)}
    for s in stores:
        s.close()
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
        db.execute("INSERT INTO schema_version VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(RuntimeError, match="newer than this bridge knows"):
        PostgresStore(url)


def test_the_audit_trail_is_append_only(pg_cluster: Cluster) -> None:
    url = pg_cluster.create_database("pg_audit")
    seeded(url).close()
    with psycopg.connect(url, autocommit=True) as db:
        for sql in ("UPDATE audit SET event = 'forged'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                db.execute(sql)


def test_the_password_never_appears_in_errors(pg_cluster: Cluster) -> None:
    url = pg_cluster.url("postgres").replace("127.0.0.1", "127.0.0.1", 1)
    assert pg_cluster.password not in redacted_url(url)
    dead = url.rsplit(":", 1)[0].rsplit("@", 1)[0] + "@127.0.0.1:1/postgres"
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(dead)
    assert pg_cluster.password not in str(caught.value)


def test_a_server_restart_gives_clear_errors_then_recovers(pg_cluster: Cluster) -> None:
    url = pg_cluster.create_database("pg_restart")
    store = seeded(url)
    pg_cluster.stop("fast")
    try:
        session = Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW, version=2)
        with pytest.raises(StoreUnavailable):
            store.write_sessions([SessionWrite(session, [AuditEntry(NOW, "phone", "lost")])])
        with pytest.raises(StoreUnavailable):
            store.ping()
    finally:
        pg_cluster.start()
    store.ping()  # reconnects by itself
    # the write that raised was not stored; the same write now succeeds
    assert [e["event"] for e in store.read_audit("acme", "s-1")] == ["opened"]
    store.write_sessions([SessionWrite(session, [AuditEntry(NOW, "phone", "stored")])])
    assert [c.session.version for c in store.changes_after("acme", 0, 10)] == [1, 2]
    store.close()


def test_concurrent_writers_never_lose_an_update_or_share_a_cursor(pg_cluster: Cluster) -> None:
    """Several connections (as several bridge instances) write versions of one session and of
    others: each version is stored once, every cursor is handed out once, none skipped."""
    url = pg_cluster.create_database("pg_concurrent")
    seeded(url).close()
    writers = [PostgresStore(url) for _ in range(4)]
    won: list[int] = []
    lock = threading.Lock()

    def write(store: PostgresStore, n: int) -> None:
        for v in range(2, 40):
            session = Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW, version=v)
            try:
                store.write_sessions([SessionWrite(session, [AuditEntry(NOW, "phone", f"{n}")])])
            except StoreConflict:
                continue
            with lock:
                won.append(v)

    threads = [threading.Thread(target=write, args=(w, i)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()
    store = PostgresStore(url)
    changes = store.changes_after("acme", 0, 1000)
    assert [c.seq for c in changes] == list(range(1, len(changes) + 1))  # none shared or skipped
    assert sorted(won) == sorted(set(won))  # a version was written once at most
    assert len(changes) == 1 + len(won)
    versions = [c.session.version for c in changes]
    assert versions == sorted(versions)  # a stored version never goes back
    assert store.get_session("acme", "s-1").version == max(versions)  # type: ignore[union-attr]
    assert len(store.read_audit("acme", "s-1")) == 1 + len(won)
    store.close()
