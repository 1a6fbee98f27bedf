"""Cross-cutting HTTP concerns: the error shape, authentication, request metrics."""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.errors import BridgeError, InvalidInput, TransferNotAllowed
from bridge.store import StoreConflict, StoreUnavailable
from desktop_api.keys import METRICS, SERVICE, SETTINGS
from desktop_api.service import NotFound

log = structlog.get_logger("transfer_bridge.http")

STATUS_BY_CODE = {
    "transfer_disabled": 403,
    "not_on_call": 409,
    "already_transferred": 409,
    "invalid_step": 409,
    "agent_blocked": 409,
    "already_exists": 409,
    "phone_in_use": 409,
    "call_in_use": 409,
    "version_mismatch": 412,
    "unknown_agent": 422,
    "already_expired": 422,
}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
}


def error_response(
    status: int, code: str, message: str, field: str | None = None, **extra: Any
) -> web.Response:
    """The contract's error body: `{"error": {"code", "message", "field"}}`."""
    body: dict[str, Any] = {"code": code, "message": message, "field": field, **extra}
    resp = web.json_response({"error": body}, status=status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="transfer-bridge"'
    return resp


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin, or one account's token."""

    admin: bool
    account_id: str | None


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal | None:
    """The caller as the auth middleware found it (None: no valid token)."""
    return request.get(PRINCIPAL)


class Unauthorized(Exception):
    """No valid token for a resource that needs one."""


class Forbidden(Exception):
    """A valid token of the wrong kind."""


def require_admin(request: web.Request) -> None:
    """Only the admin token may do this."""
    who = principal(request)
    if who is None:
        raise Unauthorized()
    if not who.admin:
        raise Forbidden("this needs the admin token")


def require_account(request: web.Request) -> str:
    """An account token is needed; returns its account."""
    who = principal(request)
    if who is None:
        raise Unauthorized()
    if who.account_id is None:
        raise Forbidden("this needs an account token (mint one with POST /v1/accounts/{id}/tokens)")
    return who.account_id


async def _resolve(app: web.Application, header: str) -> Principal | None:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if not (token.isascii() and token.isprintable()):
        return None  # tokens are printable ASCII; raw non-UTF-8 bytes arrive as surrogates
    admin_token = app[SETTINGS].admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(True, None)
    account_id = await app[SERVICE].account_for_token(token)
    return None if account_id is None else Principal(False, account_id)


async def authenticate(request: web.Request) -> None:
    """Resolve the bearer token once per request; never log it.

    Account tokens are checked against the store on every request, through the registry's
    short-lived cache (`service.registry.TOKEN_CACHE_SECONDS`) that a revocation clears: a
    revoked or expired token is refused from the next request on.
    """
    header = request.headers.get("Authorization")
    if header:
        who = await _resolve(request.app, header)
        if who is not None:
            request[PRINCIPAL] = who


class SlowBody(Exception):
    """The body did not arrive within `http.body_timeout`."""


async def _read_body(request: web.Request) -> None:
    """Read the whole body now, bounded in time: a body trickled in slowly would hold the
    handler (and its connection) forever. aiohttp keeps it; the route's read() returns it."""
    try:
        async with asyncio.timeout(request.app[SETTINGS].body_timeout):
            await request.read()
    except TimeoutError:
        raise SlowBody() from None


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, map every error to the JSON shape once, count and time every request.

    One middleware rather than three: each layer costs microseconds on every poll.
    """
    started = time.perf_counter()
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    try:
        if request.body_exists:
            await _read_body(request)
        await authenticate(request)
        response = await handler(request)
    except TransferNotAllowed as exc:
        extra = {"state": exc.state} if exc.state is not None else {}
        response = error_response(
            STATUS_BY_CODE.get(exc.code, 409), exc.code, exc.message, exc.field, **extra
        )
    except InvalidInput as exc:
        response = error_response(
            STATUS_BY_CODE.get(exc.code, 400), exc.code, exc.message, exc.field
        )
    except BridgeError as exc:
        response = error_response(400, exc.code, exc.message, exc.field)
    except NotFound:
        response = error_response(404, "not_found", "no such resource")
    except Unauthorized:
        response = error_response(401, "unauthorized", "a valid bearer token is required")
    except Forbidden as exc:
        response = error_response(403, "forbidden", str(exc))
    except SlowBody:
        response = error_response(408, "request_timeout", "the request body came too slowly")
        response.force_close()
    except StoreConflict:
        # Another instance changed the same thing at the same moment and this request could not
        # be applied on top (rare: a lost race is normally decided again). Nothing was stored.
        response = error_response(
            409, "conflict", "changed by another request at the same moment; retry"
        )
    except StoreUnavailable:
        response = error_response(
            503, "store_unavailable", "the bridge's database does not answer; retry shortly"
        )
        response.headers["Retry-After"] = "2"
    except web.HTTPRequestEntityTooLarge as exc:
        response = error_response(413, "body_too_large", exc.text or "the body is too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, HTTP_CODES.get(exc.status, "http_error"), exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        response = error_response(500, "internal_error", "the bridge failed to answer; see logs")
    request.app[METRICS].observe_request(
        route_name, request.method, response.status, time.perf_counter() - started
    )
    return response
