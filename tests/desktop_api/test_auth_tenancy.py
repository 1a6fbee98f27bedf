"""Who may call what, and what one account can learn about another: nothing.

An account token sees only its own account; another account's resources answer exactly like
missing ones. Tokens are shown once and stored only as a hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from desktop_api.testing import ApiClient, EventStream, Reply, RunningBridge

REALM = 'Bearer realm="transfer-bridge"'

ACCOUNT_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/agents/a-7", None),
    ("PUT", "/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": "sip:1001@pbx.example"}}),
    ("POST", "/v1/sessions", {"id": "s-9", "agent_id": "a-7", "customer": {"number": "1"}}),
    ("GET", "/v1/sessions", None),
    ("GET", "/v1/sessions/s-1", None),
    ("POST", "/v1/sessions/s-1/transfer", {"action": "open"}),
    ("POST", "/v1/sessions/s-1/end", {"result": "sold"}),
    ("GET", "/v1/sessions/s-1/audit", None),
    ("GET", "/v1/events", None),
]
ADMIN_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/accounts", {"id": "new", "name": "New", "transfer_enabled": True}),
    ("PATCH", "/v1/accounts/acme", {"transfer_enabled": False}),
    ("POST", "/v1/accounts/acme/tokens", None),
]


def assert_error(r: Reply, status: int, code: str) -> None:
    assert r.status == status, (r.status, r.body)
    assert set(r.body) == {"error"} and set(r.body["error"]) == {"code", "message", "field"}
    assert r.body["error"]["code"] == code
    assert r.body["error"]["field"] is None


@pytest.fixture
async def two_tenants(api: ApiClient, tenant_factory: Any, session_opener: Any) -> Any:
    """acme (agent a-7, session s-1) and globex (agent g-1, session g-s1), each on a call."""
    other = await tenant_factory("globex", ext="2001")
    await session_opener(api, "s-1")
    r = await other.api.put("/v1/agents/g-1", {"name": "Gus", "phone": {"sip_uri": "sip:2002@x"}})
    assert r.status == 201
    await session_opener(other.api, "g-s1", agent_id="g-1", number="+34900000009")
    return other


async def state_of(client: ApiClient, paths: list[str]) -> list[Any]:
    return [((r := await client.get(p)).status, r.body) for p in paths]


# --- 401, 403 --------------------------------------------------------------------------


BAD_AUTHORIZATION = [
    None,
    "Bearer wrong-token",
    "Bearer ",
    "Basic YWRtaW4tc2VjcmV0",
    "admin-secret",
    "Bearer admin-secret-but-longer",
    "Bearer tb_not-a-real-token",
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [*ACCOUNT_ROUTES, *ADMIN_ROUTES, ("GET", "/v1/accounts/acme", None)],
)
async def test_no_or_unknown_token_is_401_with_www_authenticate(
    api: ApiClient, admin: ApiClient, session_opener: Any, method: str, path: str, body: Any
) -> None:
    await session_opener(api, "s-1")
    watched = ["/v1/sessions/s-1", "/v1/agents/a-7", "/v1/sessions"]
    before = await state_of(api, watched)
    anon = api.with_token(None)
    for authorization in BAD_AUTHORIZATION:
        headers = {} if authorization is None else {"Authorization": authorization}
        r = await anon.call(method, path, body, headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"] == REALM, authorization
    assert await state_of(api, watched) == before
    assert (await admin.get("/v1/accounts/acme")).body["transfer_enabled"] is True
    assert (await admin.get("/v1/accounts/new")).status == 404


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_account_token_on_admin_routes_is_403(
    api: ApiClient, admin: ApiClient, method: str, path: str, body: Any
) -> None:
    r = await api.call(method, path, body)
    assert_error(r, 403, "forbidden")
    assert "WWW-Authenticate" not in r.headers
    assert (await admin.get("/v1/accounts/acme")).body["transfer_enabled"] is True
    assert (await admin.get("/v1/accounts/new")).status == 404


@pytest.mark.parametrize(("method", "path", "body"), ACCOUNT_ROUTES)
async def test_admin_token_on_account_routes_is_403(
    api: ApiClient, admin: ApiClient, session_opener: Any, method: str, path: str, body: Any
) -> None:
    await session_opener(api, "s-1")
    before = await state_of(api, ["/v1/sessions/s-1", "/v1/agents/a-7", "/v1/sessions"])
    r = await admin.call(method, path, body)
    assert_error(r, 403, "forbidden")
    assert await state_of(api, ["/v1/sessions/s-1", "/v1/agents/a-7", "/v1/sessions"]) == before


async def test_public_routes_need_no_token(api: ApiClient) -> None:
    anon = api.with_token(None)
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert (await anon.get(path)).status == 200, path


# --- another account's resources look missing -------------------------------------------


async def test_another_accounts_resources_answer_exactly_like_missing_ones(
    api: ApiClient, two_tenants: Any
) -> None:
    globex = two_tenants
    pairs = [
        ("GET", "/v1/accounts/globex", "/v1/accounts/nope", None),
        ("GET", "/v1/agents/g-1", "/v1/agents/nope", None),
        ("GET", "/v1/sessions/g-s1", "/v1/sessions/nope", None),
        ("GET", "/v1/sessions/g-s1?wait=2&version=1", "/v1/sessions/nope?wait=2&version=1", None),
        ("GET", "/v1/sessions/g-s1/audit", "/v1/sessions/nope/audit", None),
        ("POST", "/v1/sessions/g-s1/transfer", "/v1/sessions/nope/transfer", {"action": "open"}),
        ("POST", "/v1/sessions/g-s1/transfer", "/v1/sessions/nope/transfer", {"bad": 1}),
        ("POST", "/v1/sessions/g-s1/end", "/v1/sessions/nope/end", {"result": "stolen"}),
    ]
    for method, theirs, missing, body in pairs:
        a = await api.call(method, theirs, body)
        b = await api.call(method, missing, body)
        assert a.status == b.status == 404, (theirs, a.body)
        assert a.raw == b.raw, (theirs, a.raw, b.raw)
        assert a.headers.get("Content-Type") == b.headers.get("Content-Type")
        assert "ETag" not in a.headers
    # Nothing of globex moved.
    r = await globex.api.get("/v1/sessions/g-s1")
    assert r.body["version"] == 1 and r.body["status"] == "active"
    assert r.body["transfer"]["state"] == "none"
    audit = (await globex.api.get("/v1/sessions/g-s1/audit")).body["entries"]
    assert [e["event"] for e in audit] == ["session_opened"]


async def test_unknown_agent_of_another_account_is_refused_like_a_missing_one(
    api: ApiClient, two_tenants: Any
) -> None:
    theirs = await api.post(
        "/v1/sessions", {"id": "s-x", "agent_id": "g-1", "customer": {"number": "1"}}
    )
    missing = await api.post(
        "/v1/sessions", {"id": "s-x", "agent_id": "g-2", "customer": {"number": "1"}}
    )
    assert theirs.status == missing.status == 422
    assert theirs.body["error"]["code"] == missing.body["error"]["code"] == "unknown_agent"
    assert theirs.body["error"]["field"] == missing.body["error"]["field"] == "/agent_id"
    r = await two_tenants.api.get("/v1/sessions", params={"agent_id": "g-1"})
    assert [s["id"] for s in r.body["sessions"]] == ["g-s1"]


async def test_same_ids_in_two_accounts_are_separate(
    api: ApiClient, two_tenants: Any, session_opener: Any
) -> None:
    globex = two_tenants
    # globex has its own a-7 (from the factory) and may use the session id acme uses.
    await session_opener(globex.api, "s-1", number="+34900000077")
    assert (await globex.api.step("s-1", "open")).status == 200
    mine = (await api.get("/v1/sessions/s-1")).body
    theirs = (await globex.api.get("/v1/sessions/s-1")).body
    assert mine["account_id"] == "acme" and mine["version"] == 1
    assert mine["transfer"]["state"] == "none"
    assert theirs["account_id"] == "globex" and theirs["version"] == 2
    assert mine["customer"]["number"] == "+34900000001"
    mine_agent = (await api.get("/v1/agents/a-7")).body
    theirs_agent = (await globex.api.get("/v1/agents/a-7")).body
    assert mine_agent["phone"]["sip_uri"] == "sip:1001@pbx.example"
    assert theirs_agent["phone"]["sip_uri"] == "sip:2001@pbx.example"


async def test_another_accounts_sessions_are_not_listed(api: ApiClient, two_tenants: Any) -> None:
    globex = two_tenants
    for params in ({}, {"agent_id": "g-1"}, {"status": "active"}, {"limit": "1000"}):
        r = await api.get("/v1/sessions", params=params)
        assert r.status == 200
        assert all(s["account_id"] == "acme" for s in r.body["sessions"]), r.body
        assert "g-s1" not in {s["id"] for s in r.body["sessions"]}
    r = await globex.api.get("/v1/sessions")
    assert {s["id"] for s in r.body["sessions"]} == {"g-s1"}


async def test_event_stream_never_shows_another_accounts_changes(
    bridge: RunningBridge, api: ApiClient, two_tenants: Any, http: aiohttp.ClientSession
) -> None:
    globex = two_tenants
    headers = {"Authorization": f"Bearer {api.token}"}
    async with http.get(bridge.url + "/v1/events", headers=headers) as resp:
        assert resp.status == 200
        snapshot = await EventStream(resp).drain(0.5)
        assert [e["data"]["id"] for e in snapshot] == ["s-1"]
        # globex works its session through the whole flow and ends it; acme steps once.
        for action in ("open", "internal", "next", "confirm"):
            assert (await globex.api.step("g-s1", action)).status == 200
        assert (await globex.api.post("/v1/sessions/g-s1/end", {"result": "x"})).status == 200
        assert (await api.step("s-1", "open")).status == 200
        live = await EventStream(resp).drain(0.7)
    assert [(e["data"]["id"], e["data"]["version"]) for e in live] == [("s-1", 2)]
    assert all(e["data"]["account_id"] == "acme" for e in snapshot + live)
    # Replaying from before globex's changes shows only acme's change too.
    replay_headers = {**headers, "Last-Event-ID": snapshot[0]["id"]}
    async with http.get(bridge.url + "/v1/events", headers=replay_headers) as resp:
        replay = await EventStream(resp).drain(0.7)
    assert [(e["data"]["id"], e["data"]["version"]) for e in replay] == [("s-1", 2)]
    # The agent filter cannot reach across accounts either.
    async with http.get(bridge.url + "/v1/events?agent_id=g-1", headers=headers) as resp:
        assert resp.status == 200
        assert await EventStream(resp).drain(0.3) == []


async def test_long_poll_on_another_accounts_session_does_not_wait(
    api: ApiClient, two_tenants: Any
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    r = await api.get("/v1/sessions/g-s1", params={"wait": "5", "version": "1"})
    assert r.status == 404
    assert loop.time() - started < 1.0


# --- tokens ------------------------------------------------------------------------------


async def test_tokens_are_stored_hashed_and_never_logged(
    bridge: RunningBridge,
    admin: ApiClient,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        r = await admin.post(
            "/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True}
        )
        assert r.status == 201
        r = await admin.post("/v1/accounts/acme/tokens")
        assert r.status == 201
        token = r.body["token"]
        api = admin.with_token(token)
        assert (await api.get("/v1/accounts/acme")).status == 200
        r = await api.put("/v1/agents/a-1", {"name": "A", "phone": {"sip_uri": "sip:1@h"}})
        assert r.status == 201
        # A failing request that carries the token (an admin route) and a near miss.
        assert (await api.post("/v1/accounts", {"id": "x"})).status == 403
        assert (await admin.with_token(token + "x").get("/v1/agents/a-1")).status == 401
    assert any(e.get("event") == "token_minted" for e in events), events
    assert token not in repr(events)
    assert token not in caplog.text
    out, err = capfd.readouterr()
    assert token not in out and token not in err

    db = Path(bridge.settings.store_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    assert token.encode() not in stored
    secret_part = token.removeprefix("tb_")
    assert secret_part.encode() not in stored
    # What is stored is a one-way hash of it (so the check above looked at the right bytes).
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored


async def test_two_tokens_of_one_account_both_work(
    admin: ApiClient, api: ApiClient, session_opener: Any
) -> None:
    r = await admin.post("/v1/accounts/acme/tokens")
    assert r.status == 201 and r.body["account_id"] == "acme"
    second = api.with_token(r.body["token"])
    assert r.body["token"] != api.token
    await session_opener(api, "s-1")
    assert (await second.step("s-1", "open")).status == 200
    assert (await api.get("/v1/sessions/s-1")).body["version"] == 2
    assert (await second.get("/v1/accounts/acme")).body["id"] == "acme"
    assert (await api.get("/v1/accounts/acme")).body["id"] == "acme"


async def test_tokens_cannot_be_minted_for_a_missing_account(admin: ApiClient) -> None:
    r = await admin.post("/v1/accounts/nope/tokens")
    assert r.status == 404
    assert r.body["error"]["code"] == "not_found"


async def test_admin_token_may_read_any_account(admin: ApiClient, two_tenants: Any) -> None:
    for account_id in ("acme", "globex"):
        r = await admin.get(f"/v1/accounts/{account_id}")
        assert r.status == 200 and r.body["id"] == account_id
    assert (await admin.get("/v1/accounts/nope")).status == 404
