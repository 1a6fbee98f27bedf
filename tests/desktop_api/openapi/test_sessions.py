"""Sessions: open, read (ETag, 304, long-poll), list and audit, validated against the document."""

from __future__ import annotations

import asyncio
from typing import Any

from desktop_api.testing import ApiClient
from tests.desktop_api.openapi.checker import HUGE, Checker, assert_covers
from tests.desktop_api.openapi.conftest import S1, put_agent, steps
from tests.desktop_api.openapi.coverage import COVERS


async def test_open_session(
    checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient, ana: None
) -> None:
    c, api = checker, acme
    r = await c.call(api, "POST", "/v1/sessions", S1, expect=201)
    assert r.headers["Location"] == "/v1/sessions/s-1"
    assert r.headers["ETag"] == '"1"'
    assert r.body["actions"] == ["transfer.open", "end"]
    assert r.body["transfer"]["unavailable"] is None
    await c.call(api, "POST", "/v1/sessions", S1, expect=409, code="already_exists")
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {**S1, "id": "s-x", "agent_id": "ghost"},
        expect=422,
        code="unknown_agent",
    )
    bad_sessions: list[tuple[Any, str]] = [
        ({**S1, "call": {"state": "on_hold"}}, "invalid_field"),
        ({**S1, "call": {"state": "connected", "line": 2}}, "unknown_field"),
        ({"id": "s-x", "agent_id": "a-7"}, "missing_field"),
        ({**S1, "customer": {"number": ""}}, "invalid_field"),
        ({**S1, "customer": {"number": "1" * 65}}, "invalid_field"),
        ({**S1, "id": "s x"}, "invalid_field"),
    ]
    for body, code in bad_sessions:
        await c.call(api, "POST", "/v1/sessions", body, expect=400, code=code, request_ok=False)
    await c.call(admin, "POST", "/v1/sessions", S1, expect=403)
    await c.call(anon, "POST", "/v1/sessions", S1, expect=401, request_ok=False)
    await c.call(api, "POST", "/v1/sessions", HUGE, expect=413, request_ok=False)
    assert_covers(c, COVERS["open_session"])


async def test_read_session_etag_304_and_long_poll(
    checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient, s1: None
) -> None:
    c, api = checker, acme
    r = await c.call(api, "GET", "/v1/sessions/s-1", expect=200)
    etag = r.headers["ETag"]
    r = await c.call(api, "GET", "/v1/sessions/s-1", headers={"If-None-Match": etag}, expect=304)
    assert r.raw == b"" and r.headers["ETag"] == etag
    await c.call(api, "GET", "/v1/sessions/s-1", params={"wait": "0.1", "version": "1"}, expect=200)
    waiting = asyncio.create_task(
        c.call(api, "GET", "/v1/sessions/s-1", params={"wait": "10", "version": "1"}, expect=200)
    )
    for params in ({"wait": "abc"}, {"wait": "61"}, {"version": "1.5"}, {"version": "-1"}):
        await c.call(
            api,
            "GET",
            "/v1/sessions/s-1",
            params=params,
            expect=400,
            code="invalid_parameter",
            request_ok=False,
        )
    await c.call(api, "GET", "/v1/sessions/nope", expect=404)
    await c.call(admin, "GET", "/v1/sessions/s-1", expect=403)
    await c.call(anon, "GET", "/v1/sessions/s-1", expect=401, request_ok=False)
    assert not waiting.done()  # the long-poll waits for a change...
    await steps(c, api, "s-1", "open")
    assert (await waiting).body["version"] == 2  # ...and answers with it
    assert_covers(c, COVERS["read_session"])


async def test_list_sessions(
    checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient, s1: None
) -> None:
    c, api = checker, acme
    await c.call(api, "POST", "/v1/sessions/s-1/end", {"result": "no transfer"}, expect=200)
    await put_agent(c, api, "a-8", "1002")
    s2 = {"id": "s-2", "agent_id": "a-8", "customer": {"number": "+34900000002"}}
    await c.call(api, "POST", "/v1/sessions", s2, expect=201)
    r = await c.call(api, "GET", "/v1/sessions", expect=200)
    assert {s["id"] for s in r.body["sessions"]} >= {"s-1", "s-2"}
    r = await c.call(
        api,
        "GET",
        "/v1/sessions",
        params={"agent_id": "a-7", "status": "ended", "limit": "5"},
        expect=200,
    )
    assert [s["id"] for s in r.body["sessions"]] == ["s-1"]
    # an unknown query parameter is refused by the code; OpenAPI cannot forbid one
    for params, ok in (
        ({"status": "bogus"}, False),
        ({"limit": "0"}, False),
        ({"limit": "2.5"}, False),
        ({"colour": "red"}, None),
    ):
        await c.call(
            api,
            "GET",
            "/v1/sessions",
            params=params,
            expect=400,
            code="invalid_parameter",
            request_ok=ok,
        )
    await c.call(admin, "GET", "/v1/sessions", expect=403)
    await c.call(anon, "GET", "/v1/sessions", expect=401, request_ok=False)
    assert_covers(c, COVERS["list_sessions"])


async def test_session_audit(
    checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient, s1: None
) -> None:
    c, api = checker, acme
    await steps(c, api, "s-1", "open")
    r = await c.call(api, "GET", "/v1/sessions/s-1/audit", expect=200)
    assert [e["event"] for e in r.body["entries"]][:2] == ["session_opened", "transfer.open"]
    await c.call(api, "GET", "/v1/sessions/nope/audit", expect=404)
    await c.call(admin, "GET", "/v1/sessions/s-1/audit", expect=403)
    await c.call(anon, "GET", "/v1/sessions/s-1/audit", expect=401, request_ok=False)
    assert_covers(c, COVERS["audit"])
