"""Two bridge instances on one PostgreSQL store act as one service (issue 12).

Two real apps (real HTTP, one real PostgreSQL database) in this process: what one writes, the
other serves, streams and builds on; races between them are settled by the database. The
multi-process tests (SIGKILL, HEP to several instances) are in tests/desktop_api/cluster/.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.evidence import CallStateChanged, PhoneEvent, PhoneEvidence
from bridge.model import CallState
from desktop_api.testing import ApiClient, EventStream, RunningBridge, running_bridge, settings_for
from tests.rig.postgres import Cluster

ADMIN = "admin-secret"
PHONE = "sip:1002@pbx.example"


@pytest.fixture
async def pair(
    pg_cluster: Cluster, tmp_path: Path
) -> AsyncIterator[tuple[RunningBridge, RunningBridge]]:
    url = pg_cluster.create_database(f"pair_{uuid.uuid4().hex[:12]}")
    base = settings_for(tmp_path, ADMIN)
    a_settings = dataclasses.replace(base, store_url=url, instance="A", poll_interval=0.2)
    b_settings = dataclasses.replace(a_settings, instance="B")
    async with running_bridge(a_settings) as a, running_bridge(b_settings) as b:
        yield a, b


async def client(http: aiohttp.ClientSession, bridge: RunningBridge, token: str) -> ApiClient:
    return ApiClient(http, bridge.url, token)


async def setup_account(http: aiohttp.ClientSession, a: RunningBridge) -> str:
    admin = ApiClient(http, a.url, ADMIN)
    r = await admin.post("/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True})
    assert r.status == 201, r.body
    r = await admin.post("/v1/accounts/acme/tokens", {})
    assert r.status == 201, r.body
    token: str = r.body["token"]
    api = ApiClient(http, a.url, token)
    r = await api.put("/v1/agents/a-1", {"name": "Ann", "phone": {"sip_uri": PHONE}})
    assert r.status == 201, r.body
    return token


async def eventually(check: Any, within: float = 3.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "the other instance never saw it"
        await asyncio.sleep(0.02)


async def open_stream(
    http: aiohttp.ClientSession, bridge: RunningBridge, token: str, last_event_id: str | None = None
) -> tuple[aiohttp.ClientResponse, EventStream]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    resp = await http.get(f"{bridge.url}/v1/events", headers=headers)
    assert resp.status == 200
    return resp, EventStream(resp)


async def test_what_one_instance_writes_the_other_serves_and_streams(
    pair: tuple[RunningBridge, RunningBridge],
) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as http:
        token = await setup_account(http, a)
        api_a, api_b = ApiClient(http, a.url, token), ApiClient(http, b.url, token)
        # B learns of the account, its token and its agent without a restart.
        r = await eventually(lambda: _ok(api_b.get("/v1/agents/a-1")))
        resp, events_b = await open_stream(http, b, token)
        try:
            body = {
                "id": "s-1",
                "agent_id": "a-1",
                "customer": {"number": "+34900000001"},
                "call": {"state": "connected"},
            }
            assert (await api_a.post("/v1/sessions", body)).status == 201
            for action in ("open", "internal", "next"):
                assert (await api_a.step("s-1", action)).status == 200
            got = await events_b.take(4, within=3.0)
            assert [e["data"]["version"] for e in got] == [1, 2, 3, 4]
            ids = [int(e["id"]) for e in got]
            assert ids == sorted(ids) and len(set(ids)) == 4
            r = await api_b.get("/v1/sessions/s-1")
            assert r.status == 200 and r.body["transfer"]["state"] == "confirming"
            # A long-poll on B wakes for A's change.
            poll = asyncio.create_task(api_b.get("/v1/sessions/s-1?wait=5&version=4"))
            await asyncio.sleep(0.2)
            assert (await api_a.step("s-1", "deny")).status == 200
            r = await asyncio.wait_for(poll, 3.0)
            assert r.status == 200 and r.body["version"] == 5
            # A stream on A resumes from the cursor B sent.
            resp2, events_a = await open_stream(http, a, token, last_event_id=str(ids[1]))
            try:
                rest = await events_a.take(3, within=3.0)
                assert [e["data"]["version"] for e in rest] == [3, 4, 5]
            finally:
                resp2.close()
        finally:
            resp.close()


async def _at_version(api: ApiClient, session_id: str, version: int) -> Any:
    r = await api.get(f"/v1/sessions/{session_id}")
    return r.body if r.status == 200 and r.body["version"] == version else None


async def _ok(pending: Any) -> Any:
    r = await pending
    return r if r.status == 200 else None


async def test_a_race_between_instances_loses_no_update_and_skips_no_version(
    pair: tuple[RunningBridge, RunningBridge],
) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as http:
        token = await setup_account(http, a)
        api_a, api_b = ApiClient(http, a.url, token), ApiClient(http, b.url, token)
        await eventually(lambda: _ok(api_b.get("/v1/agents/a-1")))
        body = {"id": "s-2", "agent_id": "a-1", "customer": {"number": "+34900000002"}}
        assert (await api_a.post("/v1/sessions", body)).status == 201
        resp, events = await open_stream(http, a, token)
        try:
            await events.take(1)  # the snapshot
            # Both instances name a different call at the same moment, many times.
            answers = await asyncio.gather(
                *[
                    (api_a if i % 2 else api_b).patch(
                        "/v1/sessions/s-2", {"call": {"sip_call_id": f"c-{i}"}}
                    )
                    for i in range(20)
                ]
            )
            assert sorted({r.status for r in answers}) == [200]
            versions = sorted(r.body["version"] for r in answers)
            assert versions == list(range(2, 22))  # each applied once, on the latest version
            got = await events.take(20, within=5.0)
            assert [e["data"]["version"] for e in got] == list(range(2, 22))
        finally:
            resp.close()
        # B serves the last write within the feed's delay.
        final = await eventually(lambda: _at_version(api_b, "s-2", 21))
        last = max(answers, key=lambda r: r.body["version"])
        assert final["call"]["sip_call_id"] == last.body["call"]["sip_call_id"]


async def test_rule_5_holds_across_instances(pair: tuple[RunningBridge, RunningBridge]) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as http:
        token = await setup_account(http, a)
        api_a, api_b = ApiClient(http, a.url, token), ApiClient(http, b.url, token)
        await eventually(lambda: _ok(api_b.get("/v1/agents/a-1")))
        body = {
            "id": "s-3",
            "agent_id": "a-1",
            "customer": {"number": "+34900000003"},
            "call": {"state": "connected"},
        }
        assert (await api_b.post("/v1/sessions", body)).status == 201
        for action in ("open", "internal", "next", "confirm"):
            assert (await api_b.step("s-3", action)).status == 200
        # Straight away, before A's cache could have heard of it: the database says no.
        body = {"id": "s-4", "agent_id": "a-1", "customer": {"number": "+34900000004"}}
        r = await api_a.post("/v1/sessions", body)
        assert r.status == 409 and r.body["error"]["code"] == "agent_blocked", r.body
        assert "s-3" in r.body["error"]["message"]
        r = await api_a.post("/v1/sessions/s-3/end", {"result": "transferred to sales"})
        assert r.status == 200, r.body
        assert (await api_b.post("/v1/sessions", body)).status == 201


async def test_the_same_evidence_at_two_instances_is_applied_once(
    pair: tuple[RunningBridge, RunningBridge],
) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as http:
        token = await setup_account(http, a)
        api_a = ApiClient(http, a.url, token)
        await eventually(lambda: _ok(ApiClient(http, b.url, token).get("/v1/agents/a-1")))

        async def call(session_id: str, call_id: str, both: bool) -> dict[str, Any]:
            body = {"id": session_id, "agent_id": "a-1", "customer": {"number": "+349000005"}}
            assert (await api_a.post("/v1/sessions", body)).status == 201
            states = [CallState.RINGING, CallState.CONNECTED, CallState.ENDED]
            for i, state in enumerate(states):
                evidence = PhoneEvidence(
                    "hep", f"2026-01-01T00:00:0{i}.000Z", CallStateChanged(state)
                )
                event = PhoneEvent(PHONE, evidence, call_id, "349000005")
                if both:  # the capture reaches both instances at about the same time
                    await asyncio.gather(a.service.ingest(event), b.service.ingest(event))
                else:
                    await a.service.ingest(event)
            r = await api_a.get(f"/v1/sessions/{session_id}")
            trail = (await api_a.get(f"/v1/sessions/{session_id}/audit")).body["entries"]
            return {
                "call": r.body["call"] | {"sip_call_id": None},
                # Which instance bound the call may split binding and ringing in two writes
                # (the ringing then confirms what the binding set: "ignored": "duplicate").
                "trail": [
                    (e["event"], e["detail"] | {"sip_call_id": None, "ignored": None})
                    for e in trail
                ],
            }

        once = await call("s-5", "c-5", both=False)
        r = await api_a.post("/v1/sessions/s-5/end", {"result": "done"})
        assert r.status == 200, r.body
        twice = await call("s-6", "c-6", both=True)
        assert twice == once
        assert once["call"]["state"] == "ended"


async def test_an_account_and_agent_made_on_one_instance_are_usable_on_the_other_at_once(
    pair: tuple[RunningBridge, RunningBridge],
) -> None:
    """Provisioning through a load balancer: each request may reach the other instance,
    before it has heard of what the previous one created (no 404 in that moment)."""
    a, b = pair
    async with aiohttp.ClientSession() as http:
        for i in range(20):
            admin_a, admin_b = ApiClient(http, a.url, ADMIN), ApiClient(http, b.url, ADMIN)
            body = {"id": f"t{i}", "name": "T", "transfer_enabled": True}
            assert (await admin_a.post("/v1/accounts", body)).status == 201
            r = await admin_b.post(f"/v1/accounts/t{i}/tokens", {})
            assert r.status == 201, r.body
            token = r.body["token"]
            r = await admin_b.patch(f"/v1/accounts/t{i}", {"name": f"T{i}"})
            assert r.status == 200 and r.body["transfer_enabled"] is True, r.body
            agent = {"name": "Ann", "phone": {"sip_uri": f"sip:{i}@pbx.example"}}
            r = await ApiClient(http, a.url, token).put("/v1/agents/a-1", agent)
            assert r.status == 201, r.body
            api_b = ApiClient(http, b.url, token)
            assert (await api_b.get("/v1/agents/a-1")).status == 200
            session = {"id": "s-1", "agent_id": "a-1", "customer": {"number": "+34900000001"}}
            r = await api_b.post("/v1/sessions", session)
            assert r.status == 201, r.body
