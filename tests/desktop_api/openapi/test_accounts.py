"""Accounts and their tokens, every answer validated against the document."""

from __future__ import annotations

import json

from desktop_api.testing import ApiClient
from tests.desktop_api.openapi.checker import HUGE, JSON, Checker, assert_covers
from tests.desktop_api.openapi.conftest import ACME, OFF, create_account, mint_token
from tests.desktop_api.openapi.coverage import COVERS


async def test_accounts(checker: Checker, admin: ApiClient, anon: ApiClient) -> None:
    c = checker
    r = await c.call(admin, "POST", "/v1/accounts", ACME, expect=201)
    assert r.headers["Location"] == "/v1/accounts/acme"
    await c.call(admin, "POST", "/v1/accounts", ACME, expect=409, code="already_exists")
    await c.call(admin, "POST", "/v1/accounts", OFF, expect=201)
    await c.call(
        anon, "POST", "/v1/accounts", ACME, expect=401, code="unauthorized", request_ok=False
    )
    bad_bodies: list[tuple[bytes, str]] = [
        (b"{", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1]", "invalid_body"),
        (json.dumps({**ACME, "id": "new", "extra": 1}).encode(), "unknown_field"),
        (json.dumps({"id": "new", "name": "New"}).encode(), "missing_field"),
        (json.dumps({**ACME, "id": "bad id!"}).encode(), "invalid_field"),
        (json.dumps({**ACME, "id": "new", "transfer_enabled": "yes"}).encode(), "invalid_field"),
        (json.dumps({**ACME, "id": "new", "name": "  "}).encode(), "invalid_field"),
    ]
    for raw, code in bad_bodies:
        await c.call(
            admin,
            "POST",
            "/v1/accounts",
            raw=raw,
            headers=JSON,
            expect=400,
            code=code,
            request_ok=False,
        )
    await c.call(
        admin, "POST", "/v1/accounts", HUGE, expect=413, code="body_too_large", request_ok=False
    )

    r = await c.call(admin, "GET", "/v1/accounts/acme", expect=200)
    assert r.body["transfer_enabled"] is True
    await c.call(admin, "GET", "/v1/accounts/nope", expect=404, code="not_found")
    await c.call(anon, "GET", "/v1/accounts/acme", expect=401, request_ok=False)

    r = await c.call(admin, "PATCH", "/v1/accounts/off", {"name": "Off Corp"}, expect=200)
    assert r.body["name"] == "Off Corp"
    await c.call(admin, "PATCH", "/v1/accounts/off", {"transfer_enabled": False}, expect=200)
    await c.call(
        admin, "PATCH", "/v1/accounts/off", {}, expect=400, code="missing_field", request_ok=False
    )
    await c.call(
        admin,
        "PATCH",
        "/v1/accounts/off",
        {"colour": "red"},
        expect=400,
        code="unknown_field",
        request_ok=False,
    )
    await c.call(admin, "PATCH", "/v1/accounts/nope", {"name": "N"}, expect=404)
    await c.call(anon, "PATCH", "/v1/accounts/off", {"name": "N"}, expect=401, request_ok=False)
    await c.call(admin, "PATCH", "/v1/accounts/off", HUGE, expect=413, request_ok=False)

    # an account token: its own account yes, another's looks missing, admin routes forbidden
    api = await mint_token(c, admin, "acme")
    await c.call(api, "GET", "/v1/accounts/acme", expect=200)
    await c.call(api, "GET", "/v1/accounts/off", expect=404, code="not_found")
    await c.call(api, "POST", "/v1/accounts", {**ACME, "id": "mine"}, expect=403, code="forbidden")
    await c.call(api, "PATCH", "/v1/accounts/acme", {"transfer_enabled": False}, expect=403)
    assert_covers(c, COVERS["accounts"])


async def test_account_tokens(checker: Checker, admin: ApiClient, anon: ApiClient) -> None:
    c = checker
    await create_account(c, admin, ACME)
    await create_account(c, admin, OFF)
    r = await c.call(admin, "POST", "/v1/accounts/acme/tokens", expect=201)
    api = admin.with_token(r.body["token"])
    mine = r.body
    await c.call(admin, "POST", "/v1/accounts/acme/tokens", {}, expect=201)
    off = admin.with_token((await c.call(admin, "POST", "/v1/accounts/off/tokens")).body["token"])
    await c.call(
        admin,
        "POST",
        "/v1/accounts/acme/tokens",
        {"ttl": 1},
        expect=400,
        code="unknown_field",
        request_ok=False,
    )
    await c.call(admin, "POST", "/v1/accounts/nope/tokens", expect=404)
    await c.call(anon, "POST", "/v1/accounts/acme/tokens", expect=401, request_ok=False)
    await c.call(api, "POST", "/v1/accounts/acme/tokens", expect=403, code="forbidden")
    await c.call(admin, "POST", "/v1/accounts/acme/tokens", HUGE, expect=413, request_ok=False)
    for when in ("tomorrow", "2099-01-01T00:00:00", "2099-13-01T00:00:00Z"):
        await c.call(
            admin,
            "POST",
            "/v1/accounts/acme/tokens",
            {"expires_at": when},
            expect=400,
            code="invalid_field",
            request_ok=None,
        )
    await c.call(
        admin,
        "POST",
        "/v1/accounts/acme/tokens",
        {"expires_at": "2001-01-01T00:00:00Z"},
        expect=422,
        code="already_expired",
    )
    r = await c.call(
        admin, "POST", "/v1/accounts/acme/tokens", {"expires_at": "2099-01-01T01:00:00+01:00"}
    )
    assert r.body["expires_at"] == "2099-01-01T00:00:00.000Z"
    expiring = r.body["id"]

    # listing shows ids and times, never a secret or its hash
    r = await c.call(admin, "GET", "/v1/accounts/acme/tokens", expect=200)
    listed = {t["id"]: t for t in r.body["tokens"]}
    assert len(listed) == 3 and all(t["state"] == "active" for t in listed.values())
    assert listed[expiring]["expires_at"] == "2099-01-01T00:00:00.000Z"
    assert "tb_" not in r.raw.decode() and "token_hash" not in r.raw.decode()
    await c.call(admin, "GET", "/v1/accounts/nope/tokens", expect=404, code="not_found")
    await c.call(api, "GET", "/v1/accounts/acme/tokens", expect=403, code="forbidden")
    await c.call(anon, "GET", "/v1/accounts/acme/tokens", expect=401, request_ok=False)

    # revoking takes effect on the very next request; a second revocation answers the same
    assert (await api.get("/v1/accounts/acme")).status == 200
    r = await c.call(admin, "DELETE", f"/v1/accounts/acme/tokens/{mine['id']}", expect=200)
    assert r.body["state"] == "revoked" and r.body["revoked_at"]
    await c.call(api, "GET", "/v1/accounts/acme", expect=401, code="unauthorized")
    again = await c.call(admin, "DELETE", f"/v1/accounts/acme/tokens/{mine['id']}", expect=200)
    assert again.body["revoked_at"] == r.body["revoked_at"]
    await c.call(admin, "DELETE", "/v1/accounts/off/tokens/" + mine["id"], expect=404)
    await c.call(admin, "DELETE", "/v1/accounts/acme/tokens/tok_0000000000000000", expect=404)
    await c.call(api, "DELETE", f"/v1/accounts/acme/tokens/{expiring}", expect=401)
    await c.call(off, "DELETE", f"/v1/accounts/acme/tokens/{expiring}", expect=403)
    assert_covers(c, COVERS["tokens"])
