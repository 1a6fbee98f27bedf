"""`/v1/accounts`: tenants, their transfer switch (rule 2) and their tokens."""

from __future__ import annotations

from aiohttp import web

from bridge.errors import InvalidInput
from desktop_api import validation as v
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
    return web.json_response(request.app[SERVICE].get_account(account_id).to_json())


@routes.patch("/v1/accounts/{account_id}")
async def patch_account(request: web.Request) -> web.Response:
    """Switch the transfer feature or rename (admin)."""
    require_admin(request)
    account_id = request.match_info["account_id"]
    service = request.app[SERVICE]
    service.get_account(account_id)
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
    """Mint an account token, shown once (admin)."""
    require_admin(request)
    account_id = request.match_info["account_id"]
    raw = await request.read()
    if raw.strip():
        v.check_keys(v.parse_json_object(raw), "", [])
    token = await request.app[SERVICE].mint_token(account_id)
    return web.json_response({"token": token, "account_id": account_id}, status=201)
