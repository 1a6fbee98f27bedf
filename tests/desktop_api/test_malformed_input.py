"""Malformed input on every write endpoint: the contract's error, the right field, no change.

Each case sends one bad request over HTTP and checks three things a desktop developer relies
on: the status and error code, the error body's exact shape with a JSON pointer to the
offending input, and that nothing the API shows changed (account, agent, session, its audit
trail, the session list, the tokens).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from desktop_api.testing import ApiClient, Reply, RunningBridge

ERROR_KEYS = {"code", "message", "field"}
BIG = 70_000  # over the default http.max_body_bytes (65536)


def assert_error(r: Reply, status: int, code: str, field: str | None) -> None:
    """The contract's error body, exactly: `{"error": {"code", "message", "field"}}`."""
    assert r.status == status, (r.status, r.body, r.raw[:200])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert isinstance(r.body, dict) and set(r.body) == {"error"}, r.body
    err = r.body["error"]
    expected_keys = ERROR_KEYS | ({"state"} if code == "invalid_step" else set())
    assert set(err) == expected_keys, err
    assert err["code"] == code, err
    assert err["field"] == field, err
    assert isinstance(err["message"], str) and err["message"].strip(), err


def token_rows(bridge: RunningBridge) -> int:
    path = Path(bridge.settings.store_url.removeprefix("sqlite:///"))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM account_tokens").fetchone()[0])


async def observe(bridge: RunningBridge, admin: ApiClient, api: ApiClient) -> dict[str, Any]:
    """Everything a caller can see that a write could have changed."""
    seen: dict[str, Any] = {}
    for name, client, path in [
        ("account", admin, "/v1/accounts/acme"),
        ("agent", api, "/v1/agents/a-7"),
        ("session", api, "/v1/sessions/s-1"),
        ("audit", api, "/v1/sessions/s-1/audit"),
        ("list", api, "/v1/sessions"),
        ("new_account", admin, "/v1/accounts/new"),
        ("new_agent", api, "/v1/agents/a-new"),
        ("new_session", api, "/v1/sessions/s-new"),
    ]:
        r = await client.get(path)
        seen[name] = (r.status, r.body, r.headers.get("ETag"))
    seen["tokens"] = token_rows(bridge)
    return seen


@pytest.fixture
async def world(
    bridge: RunningBridge, admin: ApiClient, api: ApiClient, session_opener: Any
) -> dict[str, Any]:
    """Tenant acme, agent a-7, session s-1 on a connected call; and how it all looks."""
    await session_opener(api, "s-1", state="connected")
    return await observe(bridge, admin, api)


async def send(client: ApiClient, method: str, path: str, payload: Any) -> Reply:
    """`payload` bytes go as they are; anything else as JSON."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await client.call(method, path, raw=raw, headers={"Content-Type": "application/json"})


def oversized(template: dict[str, Any], key: str) -> bytes:
    body = dict(template)
    body[key] = "x" * BIG
    return json.dumps(body).encode()


# Shared body-level cases: (id, payload, status, code, field).
NOT_AN_OBJECT = [
    ("bad-json", b'{"id": ', 400, "invalid_json", None),
    ("bad-json-trailing-comma", b'{"a": 1,}', 400, "invalid_json", None),
    ("not-utf8", b'{"a": "\xff\xfe"}', 400, "invalid_json", None),
    ("empty", b"", 400, "invalid_json", None),
    ("whitespace", b"  \n ", 400, "invalid_json", None),
    ("array", [], 400, "invalid_body", ""),
    ("array-of-object", [{"a": 1}], 400, "invalid_body", ""),
    ("string", "hello", 400, "invalid_body", ""),
    ("number", 7, 400, "invalid_body", ""),
    ("null", None, 400, "invalid_body", ""),
]

ACCOUNT = {"id": "new", "name": "New Co", "transfer_enabled": True}
ACCOUNT_CASES = [
    *NOT_AN_OBJECT,
    ("id-number", {**ACCOUNT, "id": 5}, 400, "invalid_field", "/id"),
    ("id-null", {**ACCOUNT, "id": None}, 400, "invalid_field", "/id"),
    ("id-space", {**ACCOUNT, "id": "new co"}, 400, "invalid_field", "/id"),
    ("id-slash", {**ACCOUNT, "id": "new/co"}, 400, "invalid_field", "/id"),
    ("id-unicode", {**ACCOUNT, "id": "caf\u00e9"}, 400, "invalid_field", "/id"),
    ("id-65", {**ACCOUNT, "id": "n" * 65}, 400, "invalid_field", "/id"),
    ("id-empty", {**ACCOUNT, "id": ""}, 400, "invalid_field", "/id"),
    ("name-number", {**ACCOUNT, "name": 42}, 400, "invalid_field", "/name"),
    ("name-null", {**ACCOUNT, "name": None}, 400, "invalid_field", "/name"),
    ("name-blank", {**ACCOUNT, "name": "   "}, 400, "invalid_field", "/name"),
    ("name-201", {**ACCOUNT, "name": "n" * 201}, 400, "invalid_field", "/name"),
    (
        "enabled-string",
        {**ACCOUNT, "transfer_enabled": "true"},
        400,
        "invalid_field",
        "/transfer_enabled",
    ),
    ("enabled-int", {**ACCOUNT, "transfer_enabled": 1}, 400, "invalid_field", "/transfer_enabled"),
    (
        "enabled-null",
        {**ACCOUNT, "transfer_enabled": None},
        400,
        "invalid_field",
        "/transfer_enabled",
    ),
    ("unknown", {**ACCOUNT, "plan": "gold"}, 400, "unknown_field", "/plan"),
    ("unknown-escaped", {**ACCOUNT, "a/b~c": 1}, 400, "unknown_field", "/a~1b~0c"),
    ("missing-id", {"name": "N", "transfer_enabled": True}, 400, "missing_field", "/id"),
    ("missing-name", {"id": "new", "transfer_enabled": True}, 400, "missing_field", "/name"),
    ("missing-enabled", {"id": "new", "name": "N"}, 400, "missing_field", "/transfer_enabled"),
    ("too-large", oversized(ACCOUNT, "name"), 413, "body_too_large", None),
    # A lone UTF-16 surrogate is valid JSON but not storable text: a 400, never a 500.
    (
        "name-lone-surrogate",
        b'{"id": "new", "name": "\\ud800", "transfer_enabled": true}',
        400,
        "invalid_field",
        "/name",
    ),
]

PATCH_CASES = [
    *NOT_AN_OBJECT,
    ("nothing", {}, 400, "missing_field", "/transfer_enabled"),
    ("enabled-string", {"transfer_enabled": "false"}, 400, "invalid_field", "/transfer_enabled"),
    ("enabled-int", {"transfer_enabled": 0}, 400, "invalid_field", "/transfer_enabled"),
    ("enabled-null", {"transfer_enabled": None}, 400, "invalid_field", "/transfer_enabled"),
    (
        "enabled-object",
        {"transfer_enabled": {"on": False}},
        400,
        "invalid_field",
        "/transfer_enabled",
    ),
    ("name-number", {"name": 3}, 400, "invalid_field", "/name"),
    ("name-null", {"name": None}, 400, "invalid_field", "/name"),
    # A valid change next to an unknown field must not be half applied.
    (
        "unknown-with-valid",
        {"transfer_enabled": False, "plan": "gold"},
        400,
        "unknown_field",
        "/plan",
    ),
    ("bad-name-with-valid", {"transfer_enabled": False, "name": ""}, 400, "invalid_field", "/name"),
    ("id-not-patchable", {"id": "other"}, 400, "unknown_field", "/id"),
    ("too-large", oversized({"transfer_enabled": False}, "name"), 413, "body_too_large", None),
]

TOKEN_CASES = [
    ("bad-json", b"{", 400, "invalid_json", None),
    ("array", [], 400, "invalid_body", ""),
    ("string", "token please", 400, "invalid_body", ""),
    ("unknown", {"name": "ci"}, 400, "unknown_field", "/name"),
    ("too-large", oversized({}, "x"), 413, "body_too_large", None),
]

AGENT = {"name": "Ana", "phone": {"sip_uri": "sip:1001@pbx.example"}}
PHONE = AGENT["phone"]
AGENT_CASES = [
    *NOT_AN_OBJECT,
    ("name-number", {**AGENT, "name": 1}, 400, "invalid_field", "/name"),
    ("name-null", {**AGENT, "name": None}, 400, "invalid_field", "/name"),
    ("name-empty", {**AGENT, "name": ""}, 400, "invalid_field", "/name"),
    ("missing-name", {"phone": PHONE}, 400, "missing_field", "/name"),
    ("missing-phone", {"name": "Ana"}, 400, "missing_field", "/phone"),
    ("phone-string", {**AGENT, "phone": "sip:1001@pbx.example"}, 400, "invalid_field", "/phone"),
    ("phone-null", {**AGENT, "phone": None}, 400, "invalid_field", "/phone"),
    ("phone-empty", {**AGENT, "phone": {}}, 400, "missing_field", "/phone/sip_uri"),
    (
        "sip-uri-number",
        {**AGENT, "phone": {"sip_uri": 1001}},
        400,
        "invalid_field",
        "/phone/sip_uri",
    ),
    (
        "sip-uri-no-scheme",
        {**AGENT, "phone": {"sip_uri": "1001@pbx.example"}},
        400,
        "invalid_field",
        "/phone/sip_uri",
    ),
    (
        "sip-uri-no-host",
        {**AGENT, "phone": {"sip_uri": "sip:1001"}},
        400,
        "invalid_field",
        "/phone/sip_uri",
    ),
    (
        "sip-uri-empty-user-and-host",
        {**AGENT, "phone": {"sip_uri": "sip:@"}},
        400,
        "invalid_field",
        "/phone/sip_uri",
    ),
    (
        "ami-number",
        {**AGENT, "phone": {**PHONE, "ami_endpoint": 5}},
        400,
        "invalid_field",
        "/phone/ami_endpoint",
    ),
    (
        "phone-unknown",
        {**AGENT, "phone": {**PHONE, "mac": "x"}},
        400,
        "unknown_field",
        "/phone/mac",
    ),
    (
        "device-string",
        {**AGENT, "phone": {**PHONE, "device": "yealink"}},
        400,
        "invalid_field",
        "/phone/device",
    ),
    (
        "device-empty",
        {**AGENT, "phone": {**PHONE, "device": {}}},
        400,
        "missing_field",
        "/phone/device/vendor",
    ),
    (
        "device-vendor",
        {**AGENT, "phone": {**PHONE, "device": {"vendor": "cisco"}}},
        400,
        "invalid_field",
        "/phone/device/vendor",
    ),
    (
        "device-mac-number",
        {**AGENT, "phone": {**PHONE, "device": {"vendor": "snom", "mac": 1}}},
        400,
        "invalid_field",
        "/phone/device/mac",
    ),
    (
        "device-unknown",
        {**AGENT, "phone": {**PHONE, "device": {"vendor": "snom", "x": 1}}},
        400,
        "unknown_field",
        "/phone/device/x",
    ),
    ("unknown", {**AGENT, "email": "a@b"}, 400, "unknown_field", "/email"),
    ("too-large", oversized(AGENT, "name"), 413, "body_too_large", None),
    (
        "name-lone-surrogate",
        b'{"name": "\\udfff", "phone": {"sip_uri": "sip:1001@pbx.example"}}',
        400,
        "invalid_field",
        "/name",
    ),
]

SESSION = {"id": "s-new", "agent_id": "a-7", "customer": {"number": "+34900000002"}}
SESSION_CASES = [
    *NOT_AN_OBJECT,
    ("id-number", {**SESSION, "id": 2}, 400, "invalid_field", "/id"),
    ("id-null", {**SESSION, "id": None}, 400, "invalid_field", "/id"),
    ("id-chars", {**SESSION, "id": "s new!"}, 400, "invalid_field", "/id"),
    ("id-65", {**SESSION, "id": "s" * 65}, 400, "invalid_field", "/id"),
    ("agent-number", {**SESSION, "agent_id": 7}, 400, "invalid_field", "/agent_id"),
    ("agent-chars", {**SESSION, "agent_id": "a 7"}, 400, "invalid_field", "/agent_id"),
    ("agent-65", {**SESSION, "agent_id": "a" * 65}, 400, "invalid_field", "/agent_id"),
    ("missing-id", {"agent_id": "a-7", "customer": {"number": "1"}}, 400, "missing_field", "/id"),
    (
        "missing-agent",
        {"id": "s-new", "customer": {"number": "1"}},
        400,
        "missing_field",
        "/agent_id",
    ),
    ("missing-customer", {"id": "s-new", "agent_id": "a-7"}, 400, "missing_field", "/customer"),
    ("customer-string", {**SESSION, "customer": "+34900000002"}, 400, "invalid_field", "/customer"),
    ("customer-null", {**SESSION, "customer": None}, 400, "invalid_field", "/customer"),
    ("customer-empty", {**SESSION, "customer": {}}, 400, "missing_field", "/customer/number"),
    (
        "number-int",
        {**SESSION, "customer": {"number": 34900000002}},
        400,
        "invalid_field",
        "/customer/number",
    ),
    (
        "number-blank",
        {**SESSION, "customer": {"number": " "}},
        400,
        "invalid_field",
        "/customer/number",
    ),
    (
        "customer-name-number",
        {**SESSION, "customer": {"number": "1", "name": 5}},
        400,
        "invalid_field",
        "/customer/name",
    ),
    (
        "customer-unknown",
        {**SESSION, "customer": {"number": "1", "foo": "bar"}},
        400,
        "unknown_field",
        "/customer/foo",
    ),
    ("call-string", {**SESSION, "call": "connected"}, 400, "invalid_field", "/call"),
    (
        "call-state-on-hold",
        {**SESSION, "call": {"state": "on_hold"}},
        400,
        "invalid_field",
        "/call/state",
    ),
    ("call-state-bool", {**SESSION, "call": {"state": True}}, 400, "invalid_field", "/call/state"),
    (
        "call-id-number",
        {**SESSION, "call": {"sip_call_id": 1}},
        400,
        "invalid_field",
        "/call/sip_call_id",
    ),
    (
        "call-unknown",
        {**SESSION, "call": {"state": "connected", "since": "now"}},
        400,
        "unknown_field",
        "/call/since",
    ),
    ("unknown", {**SESSION, "priority": 1}, 400, "unknown_field", "/priority"),
    ("unknown-agent", {**SESSION, "agent_id": "nobody"}, 422, "unknown_agent", "/agent_id"),
    ("duplicate-id", {**SESSION, "id": "s-1"}, 409, "already_exists", None),
    ("too-large", oversized(SESSION, "id"), 413, "body_too_large", None),
]

STEP_CASES = [
    *NOT_AN_OBJECT,
    ("missing-action", {}, 400, "missing_field", "/action"),
    ("unknown-action", {"action": "transfer"}, 400, "unknown_action", "/action"),
    ("action-upper", {"action": "OPEN"}, 400, "unknown_action", "/action"),
    ("action-as-listed", {"action": "transfer.open"}, 400, "unknown_action", "/action"),
    ("action-number", {"action": 1}, 400, "unknown_action", "/action"),
    ("action-null", {"action": None}, 400, "unknown_action", "/action"),
    ("action-list", {"action": ["open"]}, 400, "unknown_action", "/action"),
    ("unknown", {"action": "open", "target": "1002"}, 400, "unknown_field", "/target"),
    ("too-large", oversized({"action": "open"}, "pad"), 413, "body_too_large", None),
    # Valid JSON, wrong moment: refused with the state named, and nothing changes either.
    ("next-from-none", {"action": "next"}, 409, "invalid_step", None),
    ("confirm-from-none", {"action": "confirm"}, 409, "invalid_step", None),
    ("acknowledge-from-none", {"action": "acknowledge"}, 409, "invalid_step", None),
]

END_CASES = [
    *NOT_AN_OBJECT,
    ("missing-result", {}, 400, "missing_field", "/result"),
    ("result-number", {"result": 1}, 400, "invalid_field", "/result"),
    ("result-bool", {"result": True}, 400, "invalid_field", "/result"),
    ("result-null", {"result": None}, 400, "invalid_field", "/result"),
    ("result-empty", {"result": ""}, 400, "invalid_field", "/result"),
    ("result-501", {"result": "r" * 501}, 400, "invalid_field", "/result"),
    ("unknown", {"result": "sold", "note": "x"}, 400, "unknown_field", "/note"),
    ("too-large", oversized({}, "result"), 413, "body_too_large", None),
]


async def check(
    bridge: RunningBridge,
    admin: ApiClient,
    api: ApiClient,
    before: dict[str, Any],
    r: Reply,
    status: int,
    code: str,
    field: str | None,
) -> None:
    assert_error(r, status, code, field)
    after = await observe(bridge, admin, api)
    for key in before:
        assert after[key] == before[key], f"{key} changed after a refused request"


# Every write endpoint: (who, method, path, cases). PUT agent is tried as a replacement of a-7
# and as the creation of a-new: neither may happen with a bad body.
ENDPOINTS = [
    ("admin", "POST", "/v1/accounts", ACCOUNT_CASES),
    ("admin", "PATCH", "/v1/accounts/acme", PATCH_CASES),
    ("admin", "POST", "/v1/accounts/acme/tokens", TOKEN_CASES),
    ("account", "PUT", "/v1/agents/a-7", AGENT_CASES),
    ("account", "PUT", "/v1/agents/a-new", AGENT_CASES),
    ("account", "POST", "/v1/sessions", SESSION_CASES),
    ("account", "POST", "/v1/sessions/s-1/transfer", STEP_CASES),
    ("account", "POST", "/v1/sessions/s-1/end", END_CASES),
]
WRITE_CASES = [
    pytest.param(who, method, path, *case[1:], id=f"{method} {path} {case[0]}")
    for who, method, path, cases in ENDPOINTS
    for case in cases
]


@pytest.mark.parametrize(
    ("who", "method", "path", "payload", "status", "code", "field"), WRITE_CASES
)
async def test_bad_bodies_are_refused_and_change_nothing(
    bridge: RunningBridge,
    admin: ApiClient,
    api: ApiClient,
    world: dict[str, Any],
    who: str,
    method: str,
    path: str,
    payload: Any,
    status: int,
    code: str,
    field: str | None,
) -> None:
    r = await send(admin if who == "admin" else api, method, path, payload)
    await check(bridge, admin, api, world, r, status, code, field)
    if code == "invalid_step":
        assert r.body["error"]["state"] == "none"


@pytest.mark.parametrize(
    "agent_id",
    ["a%20b", "a!", "caf%C3%A9", "a" * 65, "a%2Fb"],
    ids=["space", "bang", "unicode", "65-chars", "encoded-slash"],
)
async def test_put_agent_bad_id_in_path(
    bridge: RunningBridge, admin: ApiClient, api: ApiClient, world: dict[str, Any], agent_id: str
) -> None:
    r = await send(api, "PUT", f"/v1/agents/{agent_id}", AGENT)
    await check(bridge, admin, api, world, r, 400, "invalid_field", "/id")


async def test_ended_session_refuses_steps_and_a_second_end_naming_the_state(
    bridge: RunningBridge, admin: ApiClient, api: ApiClient, world: dict[str, Any]
) -> None:
    r = await api.post("/v1/sessions/s-1/end", {"result": "sold"})
    assert r.status == 200, r.body
    before = await observe(bridge, admin, api)
    for method, path, body in [
        ("POST", "/v1/sessions/s-1/end", {"result": "again"}),
        ("POST", "/v1/sessions/s-1/transfer", {"action": "open"}),
        ("POST", "/v1/sessions/s-1/transfer", {"action": "dismiss"}),
    ]:
        r = await send(api, method, path, body)
        await check(bridge, admin, api, before, r, 409, "invalid_step", None)
        assert r.body["error"]["state"] == "ended"


async def test_step_that_does_not_fit_names_the_transfer_state(
    bridge: RunningBridge, admin: ApiClient, api: ApiClient, world: dict[str, Any]
) -> None:
    assert (await api.step("s-1", "open")).status == 200
    before = await observe(bridge, admin, api)
    for action in ("open", "next", "confirm", "acknowledge"):
        r = await api.step("s-1", action)
        await check(bridge, admin, api, before, r, 409, "invalid_step", None)
        assert r.body["error"]["state"] == "offered"


async def test_bodies_at_the_limits_are_accepted(api: ApiClient, admin: ApiClient) -> None:
    """The refusals above are about the input, not about length or id syntax in general."""
    longest = "A.z_0-" + "9" * 58
    assert len(longest) == 64
    r = await admin.post(
        "/v1/accounts", {"id": longest, "name": "n" * 200, "transfer_enabled": False}
    )
    assert r.status == 201, r.body
    assert (await admin.get(f"/v1/accounts/{longest}")).status == 200
    r = await api.put(f"/v1/agents/{longest}", {"name": "B", "phone": {"sip_uri": "sip:9@h.x"}})
    assert r.status == 201, r.body
    r = await api.post(
        "/v1/sessions",
        {
            "id": longest,
            "agent_id": longest,
            "customer": {"number": "1", "name": None},
            "call": None,
        },
    )
    assert r.status == 201, r.body
    r = await api.post(f"/v1/sessions/{longest}/end", {"result": "r" * 500})
    assert r.status == 200, r.body
    # A token body may be empty or `{}`.
    assert (await admin.post("/v1/accounts/acme/tokens", raw=b"")).status == 201
    assert (await admin.post("/v1/accounts/acme/tokens", {})).status == 201


# --- query parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/sessions/s-1", {"wait": "61", "version": "1"}, "/query/wait"),
        ("/v1/sessions/s-1", {"wait": "abc", "version": "1"}, "/query/wait"),
        ("/v1/sessions/s-1", {"wait": "-1", "version": "1"}, "/query/wait"),
        ("/v1/sessions/s-1", {"wait": "nan", "version": "1"}, "/query/wait"),
        ("/v1/sessions/s-1", {"wait": "inf", "version": "1"}, "/query/wait"),
        ("/v1/sessions/s-1", {"wait": "", "version": "1"}, "/query/wait"),
        ("/v1/sessions/s-1", {"wait": "\u0661", "version": "1"}, "/query/wait"),  # Arabic-Indic 1
        ("/v1/sessions/s-1", {"wait": " 1", "version": "1"}, "/query/wait"),
        ("/v1/sessions/s-1", {"wait": "1", "version": "-1"}, "/query/version"),
        ("/v1/sessions/s-1", {"wait": "1", "version": "1.5"}, "/query/version"),
        ("/v1/sessions/s-1", {"wait": "1", "version": "abc"}, "/query/version"),
        ("/v1/sessions", {"status": "bogus"}, "/query/status"),
        ("/v1/sessions", {"status": "ACTIVE"}, "/query/status"),
        ("/v1/sessions", {"limit": "0"}, "/query/limit"),
        ("/v1/sessions", {"limit": "1001"}, "/query/limit"),
        ("/v1/sessions", {"limit": "2.5"}, "/query/limit"),
        ("/v1/sessions", {"limit": "ten"}, "/query/limit"),
        ("/v1/sessions", {"agent": "a-7"}, "/query/agent"),
    ],
    ids=lambda v: v if isinstance(v, str) else "&".join(f"{k}={x}" for k, x in v.items()),
)
async def test_bad_query_parameters(
    api: ApiClient, world: dict[str, Any], path: str, params: dict[str, str], field: str
) -> None:
    r = await api.get(path, params=params)
    assert_error(r, 400, "invalid_parameter", field)


async def test_bad_query_parameters_on_a_missing_session_are_still_parameter_errors(
    api: ApiClient,
) -> None:
    r = await api.get("/v1/sessions/nope", params={"wait": "61", "version": "1"})
    assert_error(r, 400, "invalid_parameter", "/query/wait")


# --- routes and methods -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing"),
        ("POST", "/v2/sessions"),
        ("GET", "/"),
        ("GET", "/v1/sessions/s-1/history"),
        ("DELETE", "/v1/nothing"),
    ],
)
async def test_unknown_route_is_a_json_404(
    api: ApiClient, admin: ApiClient, method: str, path: str
) -> None:
    for client in (api, api.with_token(None), admin):
        r = await client.call(method, path)
        assert_error(r, 404, "not_found", None)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/sessions/s-1", {"GET"}),
        ("PUT", "/v1/sessions", {"GET", "POST"}),
        ("GET", "/v1/sessions/s-1/transfer", {"POST"}),
        ("DELETE", "/v1/accounts/acme", {"GET", "PATCH"}),
        ("POST", "/v1/agents/a-7", {"GET", "PUT"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
async def test_wrong_method_is_a_json_405_with_allow(
    bridge: RunningBridge,
    admin: ApiClient,
    api: ApiClient,
    world: dict[str, Any],
    method: str,
    path: str,
    allowed: set[str],
) -> None:
    r = await api.call(method, path, raw=b'{"action": "open"}')
    assert_error(r, 405, "method_not_allowed", None)
    assert allowed <= set(r.headers["Allow"].split(",")), r.headers["Allow"]
    after = await observe(bridge, admin, api)
    assert after == world
