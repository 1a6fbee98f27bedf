"""`/v1/accounts`: tenants, their transfer switch (rule 2) and their tokens."""

from __future__ import annotations

from aiohttp import web

from bridge.errors import InvalidInput
from bridge.store import TokenRecord
from desktop_api import validation as v
from desktop_api.clock import utc_now
from desktop_api.keys import SERVICE
from desktop_api.middleware import Unauthorized, principal, require_admin
from desktop_api.service import NotFound

routes = web.RouteTableDef()


@routes.post("/v1/accounts")
async def create_account(request: web.Request) -> web.Response:
    """Create an account (admin)."""
    require_admin(request)
    body = v.parse_json_object(await request.read())
    v.check_keys(body, "", ["id", "name", "transfer_enabled"])
    account_id = v.identifier(body, "id", "")
    name = v.text(body, "name", "")
    enabled = v.boolean(body, "transfer_enabled", "")
    assert name is not None
    account = await request.app[SERVICE].create_account(account_id, name, enabled)
    return web.json_response(
        account.to_json(), status=201, headers={"Location": f"/v1/accounts/{account.id}"}
    )


def _visible_account(request: web.Request) -> str:
    account_id = request.match_info["account_id"]
    who = principal(request)
    if who is None:
        raise Unauthorized()
    if not who.admin and who.account_id != account_id:
        raise NotFound(account_id)  # another tenant's account looks exactly like a missing one
    return account_id


@routes.get("/v1/accounts/{account_id}")
async def get_account(request: web.Request) -> web.Response:
    """Read an account (admin, or the account's own token)."""
    account_id = _visible_account(request)
    account = await request.app[SERVICE].known_account(account_id)
    return web.json_response(account.to_json())


@routes.patch("/v1/accounts/{account_id}")
async def patch_account(request: web.Request) -> web.Response:
    """Switch the transfer feature or rename (admin)."""
    require_admin(request)
    account_id = request.match_info["account_id"]
    service = request.app[SERVICE]
    await service.known_account(account_id)
    body = v.parse_json_object(await request.read())
    v.check_keys(body, "", [], ["transfer_enabled", "name"])
    if not body:
        raise InvalidInput(
            "missing_field",
            "nothing to change: give transfer_enabled or name",
            field="/transfer_enabled",
        )
    enabled = v.boolean(body, "transfer_enabled", "") if "transfer_enabled" in body else None
    name = v.text(body, "name", "") if "name" in body else None
    account = await service.update_account(account_id, name=name, transfer_enabled=enabled)
    return web.json_response(account.to_json())


@routes.post("/v1/accounts/{account_id}/tokens")
async def mint_token(request: web.Request) -> web.Response:
    """Mint an account token, shown once (admin); `expires_at` optional."""
    require_admin(request)
    account_id = request.match_info["account_id"]
    raw = await request.read()
    expires_at = None
    if raw.strip():
        body = v.parse_json_object(raw)
        v.check_keys(body, "", [], ["expires_at"])
        if body.get("expires_at") is not None:
            expires_at = v.future_time(body, "expires_at", "", utc_now())
    token, record = await request.app[SERVICE].mint_token(account_id, expires_at)
    return web.json_response({"token": token, **record.to_json()}, status=201)


@routes.get("/v1/accounts/{account_id}/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    """The account's tokens without their secrets, revoked and expired ones too (admin)."""
    require_admin(request)
    tokens = await request.app[SERVICE].list_tokens(request.match_info["account_id"])
    now = utc_now()
    return web.json_response({"tokens": [_token_view(t, now) for t in tokens]})


@routes.delete("/v1/accounts/{account_id}/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a token at once (admin); revoking again answers the same."""
    require_admin(request)
    record = await request.app[SERVICE].revoke_token(
        request.match_info["account_id"], request.match_info["token_id"]
    )
    return web.json_response(_token_view(record, utc_now()))


def _token_view(record: TokenRecord, now: str) -> dict[str, object]:
    if record.revoked_at is not None:
        state = "revoked"
    elif record.expires_at is not None and record.expires_at <= now:
        state = "expired"
    else:
        state = "active"
    return {**record.to_json(), "state": state}
