"""Agents: put, read, and every refusal, validated against the document."""

from __future__ import annotations

from typing import Any

from desktop_api.testing import ApiClient
from tests.desktop_api.openapi.checker import HUGE, Checker, assert_covers
from tests.desktop_api.openapi.conftest import ANA, put_agent
from tests.desktop_api.openapi.coverage import COVERS


async def test_agents(
    checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient, off: ApiClient
) -> None:
    c, api = checker, acme
    r = await c.call(api, "PUT", "/v1/agents/a-7", ANA, expect=201)
    assert r.body["can_take_requests"] is True and r.body["current_call"] is None
    full_phone = {
        "sip_uri": "sip:1001@pbx.example",
        "ami_endpoint": "PJSIP/1001",
        "device": {"vendor": "yealink", "mac": "80:5e:c0:00:00:01", "ip": "10.0.0.7"},
    }
    r = await c.call(api, "PUT", "/v1/agents/a-7", {"name": "Ana", "phone": full_phone}, expect=200)
    assert r.body["phone"] == full_phone
    nulls = {"sip_uri": "sip:1001@pbx.example", "ami_endpoint": None, "device": None}
    r = await c.call(api, "PUT", "/v1/agents/a-7", {"name": "Ana", "phone": nulls}, expect=200)
    assert r.body["phone"] == {"sip_uri": "sip:1001@pbx.example"}
    await put_agent(c, api, "a-8", "1002")
    await c.call(api, "PUT", "/v1/agents/a-11", ANA, expect=409, code="phone_in_use")
    bad_agents: list[tuple[str, Any, str]] = [
        ("bad*id", ANA, "invalid_field"),
        ("a-11", {"name": "X", "phone": {"sip_uri": "tel:1234"}}, "invalid_field"),
        (
            "a-11",
            {"name": "X", "phone": {"sip_uri": "sip:9@x", "device": {"vendor": "acme"}}},
            "invalid_field",
        ),
        ("a-11", {"name": "X", "phone": {"sip_uri": "sip:9@x", "port": 5060}}, "unknown_field"),
        ("a-11", {"name": "X"}, "missing_field"),
        ("a-11", {"name": "X", "phone": "sip:9@x"}, "invalid_field"),
    ]
    for agent_id, body, code in bad_agents:
        await c.call(
            api, "PUT", f"/v1/agents/{agent_id}", body, expect=400, code=code, request_ok=False
        )
    await c.call(admin, "PUT", "/v1/agents/a-11", ANA, expect=403, code="forbidden")
    await c.call(anon, "PUT", "/v1/agents/a-11", ANA, expect=401, request_ok=False)
    await c.call(api, "PUT", "/v1/agents/a-11", HUGE, expect=413, request_ok=False)
    await c.call(api, "GET", "/v1/agents/a-7", expect=200)
    await c.call(api, "GET", "/v1/agents/nobody", expect=404)
    await c.call(admin, "GET", "/v1/agents/a-7", expect=403)
    await c.call(anon, "GET", "/v1/agents/a-7", expect=401, request_ok=False)
    await c.call(off, "GET", "/v1/agents/a-7", expect=404)  # another account's agent
    assert_covers(c, COVERS["agents"])
