"""Shared fixtures: a real bridge on a real socket with a real SQLite file (or a real
PostgreSQL database), and HTTP clients."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest

from desktop_api.testing import ApiClient, RunningBridge, running_bridge, settings_for
from tests.pbx import pbx  # noqa: F401  (the session's one Asterisk, for every module)
from tests.rig.postgres import Cluster, have_postgres, running_cluster

ADMIN = "admin-secret"


_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the whole run (started on first use)."""
    if not have_postgres():
        pytest.fail("no PostgreSQL server binaries: run scripts/rig/install.sh")
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of the test's bridge: SQLite in tmp_path, or a fresh database on the
    PostgreSQL cluster for tests parametrized with `STORES` (indirect)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "postgres":
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        return cluster.create_database(f"t{next(_databases)}")
    return f"sqlite:///{tmp_path / 'bridge.db'}"


# `pytestmark = STORES` runs a module's tests on both stores
STORES = pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
async def bridge(tmp_path: Path, store_url: str) -> AsyncIterator[RunningBridge]:
    """A bridge listening on 127.0.0.1:<free port>, store in tmp_path (or PostgreSQL)."""
    settings = replace(settings_for(tmp_path, ADMIN), store_url=store_url)
    async with running_bridge(settings) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client session per test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def admin(bridge: RunningBridge, http: aiohttp.ClientSession) -> ApiClient:
    """A client with the admin token."""
    return ApiClient(http, bridge.url, ADMIN)


@dataclass
class Tenant:
    """An account with transfer switched on, its token, and agent a-7 on sip:1001@pbx.example."""

    account_id: str
    token: str
    api: ApiClient
    agent_id: str
    phone: str


async def make_tenant(
    admin: ApiClient, account_id: str = "acme", *, enabled: bool = True, ext: str = "1001"
) -> Tenant:
    """Create an account, mint its token and put one agent."""
    r = await admin.post(
        "/v1/accounts", {"id": account_id, "name": account_id.title(), "transfer_enabled": enabled}
    )
    assert r.status == 201, r.body
    r = await admin.post(f"/v1/accounts/{account_id}/tokens")
    assert r.status == 201, r.body
    token = r.body["token"]
    api = admin.with_token(token)
    phone = f"sip:{ext}@pbx.example"
    r = await api.put("/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": phone}})
    assert r.status == 201, r.body
    return Tenant(account_id, token, api, "a-7", phone)


@pytest.fixture
async def tenant(admin: ApiClient) -> Tenant:
    """The default tenant."""
    return await make_tenant(admin)


@pytest.fixture
def api(tenant: Tenant) -> ApiClient:
    """A client with the default tenant's account token."""
    return tenant.api


@pytest.fixture
def tenant_factory(admin: ApiClient):  # type: ignore[no-untyped-def]
    """`await tenant_factory("other", enabled=False, ext="2001")` makes another tenant."""

    async def factory(account_id: str, *, enabled: bool = True, ext: str = "2001") -> Tenant:
        return await make_tenant(admin, account_id, enabled=enabled, ext=ext)

    return factory


async def open_session(
    api: ApiClient,
    session_id: str = "s-1",
    *,
    state: str | None = "connected",
    number: str = "+34900000001",
    agent_id: str = "a-7",
    call_id: str | None = None,
) -> dict:  # type: ignore[type-arg]
    """Open a session and return its JSON."""
    call: dict[str, str] = {}
    if state is not None:
        call["state"] = state
    if call_id is not None:
        call["sip_call_id"] = call_id
    body: dict[str, object] = {
        "id": session_id,
        "agent_id": agent_id,
        "customer": {"number": number},
    }
    if call:
        body["call"] = call
    r = await api.post("/v1/sessions", body)
    assert r.status == 201, r.body
    return r.body  # type: ignore[no-any-return]


@pytest.fixture
def session_opener():  # type: ignore[no-untyped-def]
    """`await session_opener(api, "s-1", state="connected")` opens a session."""
    return open_session
