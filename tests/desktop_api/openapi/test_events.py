"""The event stream (`GET /v1/events`, Server-Sent Events), validated against the document."""

from __future__ import annotations

from desktop_api.testing import ApiClient
from tests.desktop_api.openapi.checker import Checker, assert_covers
from tests.desktop_api.openapi.conftest import put_agent, steps
from tests.desktop_api.openapi.coverage import COVERS


async def test_event_stream(
    checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient, s1: None
) -> None:
    c, api = checker, acme
    await steps(c, api, "s-1", "open", "internal")  # s-1 at versions 1, 2, 3
    await put_agent(c, api, "a-8", "1002")
    s10 = {"id": "s-10", "agent_id": "a-8", "customer": {"number": "+34900000010"}}
    await c.call(api, "POST", "/v1/sessions", s10, expect=201)

    events = await c.stream(api, count=1, params={"agent_id": "a-8"})
    assert events[0]["data"]["id"] == "s-10"
    replay = await c.stream(api, count=3, headers={"Last-Event-ID": "0"})
    assert [e["data"]["id"] for e in replay] == ["s-1", "s-1", "s-1"]
    assert [e["data"]["version"] for e in replay] == [1, 2, 3]
    after = await c.stream(api, count=1, params={"last_event_id": replay[-1]["id"]})
    assert after[0]["data"]["id"] == "s-10"  # the next change after the last one seen
    await c.call(
        api,
        "GET",
        "/v1/events",
        headers={"Last-Event-ID": "yesterday"},
        expect=400,
        code="invalid_parameter",
        request_ok=False,
    )
    await c.call(
        api,
        "GET",
        "/v1/events",
        params={"agent_id": "a b"},
        expect=400,
        code="invalid_parameter",
        request_ok=False,
    )
    await c.call(admin, "GET", "/v1/events", expect=403)
    await c.call(anon, "GET", "/v1/events", expect=401, request_ok=False)
    assert_covers(c, COVERS["events"])
