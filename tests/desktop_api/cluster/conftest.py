"""A fresh database on the session's PostgreSQL server for each test's instances."""

from __future__ import annotations

import itertools

import pytest

from tests.rig.postgres import Cluster

_databases = itertools.count(1)


@pytest.fixture
def database(pg_cluster: Cluster) -> str:
    """The URL of a new, empty database the test's instances share."""
    return pg_cluster.create_database(f"cluster_{next(_databases)}")
