"""One store contract, two engines: every test here runs on a SQLite file and on a real
PostgreSQL server (a throwaway cluster, one fresh database per test)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge.store import Store
from desktop_api.storage.postgres import PostgresStore
from desktop_api.storage.sqlite import SqliteStore
from tests.rig.postgres import Cluster

_names = itertools.count(1)


StoreOpener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    """Opens the same store again each call (a restart); all opened stores closed at the end."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "b.db"

        def opener() -> Store:
            opened.append(SqliteStore(path))
            return opened[-1]
    else:
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(f"contract_{next(_names)}")

        def opener() -> Store:
            opened.append(PostgresStore(url))
            return opened[-1]

    yield opener
    for store in opened:
        store.close()
