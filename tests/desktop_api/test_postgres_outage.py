"""The bridge on PostgreSQL while the database restarts: clear 503s, no lost acknowledged write,
recovery without restarting the bridge."""

from __future__ import annotations

import asyncio

import pytest

from desktop_api.testing import ApiClient
from tests.conftest import open_session
from tests.rig.postgres import Cluster

pytestmark = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


async def test_a_database_restart_gives_503_then_recovers_with_nothing_lost(
    api: ApiClient, pg_cluster: Cluster
) -> None:
    await open_session(api, "s-1")
    r = await api.post("/v1/sessions/s-1/transfer", {"action": "open"})
    assert r.status == 200, r.body
    acknowledged = r.body["version"]

    await asyncio.to_thread(pg_cluster.stop, "fast")
    try:
        r = await api.post("/v1/sessions/s-1/transfer", {"action": "internal"})
        assert r.status == 503, r.body
        assert r.body["error"]["code"] == "store_unavailable"
        assert r.headers.get("Retry-After") == "2"
        assert pg_cluster.password not in str(r.body)
        r = await api.post("/v1/sessions", {"id": "s-2", "agent_id": "a-7",
                                            "customer": {"number": "+34900000002"}})  # fmt: skip
        assert r.status == 503, r.body
    finally:
        await asyncio.to_thread(pg_cluster.start)

    # back: the acknowledged state is there, the refused click was not applied, clicks work
    r = await api.get("/v1/sessions/s-1")
    assert r.status == 200 and r.body["version"] == acknowledged, r.body
    assert r.body["transfer"]["state"] == "offered"
    r = await api.post("/v1/sessions/s-1/transfer", {"action": "internal"})
    assert r.status == 200 and r.body["transfer"]["state"] == "dialing", r.body
    audit = (await api.get("/v1/sessions/s-1/audit")).body["entries"]
    assert [e["version"] for e in audit] == sorted(e["version"] for e in audit)
    r = await api.get("/v1/sessions/s-2")
    assert r.status == 404  # refused with 503: never half-created
