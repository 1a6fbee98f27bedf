"""Fixtures of the OpenAPI walk: the served document, a checker over it, and a small world
(accounts, tokens, agents, a session) made through the checker, so even the set-up requests
and their answers are validated against the document."""

from __future__ import annotations

from typing import Any

import pytest

from desktop_api.testing import ApiClient
from tests.desktop_api.openapi.checker import Checker, make_openapi

ACME = {"id": "acme", "name": "Acme", "transfer_enabled": True}
OFF = {"id": "off", "name": "Off", "transfer_enabled": False}
ANA = {"name": "Ana", "phone": {"sip_uri": "sip:1001@pbx.example"}}  # agent a-7
S1 = {
    "id": "s-1",
    "agent_id": "a-7",
    "customer": {"number": "+34900000001", "name": "Eva"},
    "call": {"state": "connected"},
}


@pytest.fixture
async def doc(admin: ApiClient) -> dict[str, Any]:
    """The document as the app serves it."""
    reply = await admin.with_token(None).get("/openapi.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    return reply.body  # type: ignore[no-any-return]


@pytest.fixture
def checker(doc: dict[str, Any]) -> Checker:
    """A checker over the served document."""
    return Checker(doc, make_openapi(doc))


@pytest.fixture
def anon(admin: ApiClient) -> ApiClient:
    """A client without a token."""
    return admin.with_token(None)


async def create_account(c: Checker, admin: ApiClient, body: dict[str, Any]) -> None:
    await c.call(admin, "POST", "/v1/accounts", body, expect=201)


async def mint_token(c: Checker, admin: ApiClient, account_id: str) -> ApiClient:
    """A client with a new token of `account_id`."""
    r = await c.call(admin, "POST", f"/v1/accounts/{account_id}/tokens", expect=201)
    return admin.with_token(r.body["token"])


async def put_agent(c: Checker, api: ApiClient, agent_id: str, ext: str) -> None:
    """Agent `agent_id` on phone sip:`ext`@pbx.example."""
    body = {"name": agent_id, "phone": {"sip_uri": f"sip:{ext}@pbx.example"}}
    await c.call(api, "PUT", f"/v1/agents/{agent_id}", body, expect=201)


async def steps(c: Checker, api: ApiClient, session_id: str, *actions: str) -> dict[str, Any]:
    """The desktop's steps on a session, each answered 200; the last answer's body."""
    body: dict[str, Any] = {}
    for action in actions:
        r = await c.call(
            api, "POST", f"/v1/sessions/{session_id}/transfer", {"action": action}, expect=200
        )
        body = r.body
    return body


@pytest.fixture
async def acme(checker: Checker, admin: ApiClient) -> ApiClient:
    """Account acme, transfer on; a client with its token."""
    await create_account(checker, admin, ACME)
    return await mint_token(checker, admin, "acme")


@pytest.fixture
async def off(checker: Checker, admin: ApiClient) -> ApiClient:
    """Account off, transfer switched off; a client with its token."""
    await create_account(checker, admin, OFF)
    return await mint_token(checker, admin, "off")


@pytest.fixture
async def ana(checker: Checker, acme: ApiClient) -> None:
    """Agent a-7 (Ana) of acme on sip:1001@pbx.example."""
    await checker.call(acme, "PUT", "/v1/agents/a-7", ANA, expect=201)


@pytest.fixture
async def s1(checker: Checker, acme: ApiClient, ana: None) -> None:
    """Session s-1 of Ana, on a connected call with Eva."""
    await checker.call(acme, "POST", "/v1/sessions", S1, expect=201)
