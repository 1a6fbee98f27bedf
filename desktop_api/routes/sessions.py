"""`/v1/sessions`: customer sessions, the desktop's transfer steps, ending, the audit trail."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from bridge.errors import InvalidInput
from bridge.model import Action, CallState, Customer, SessionStatus
from desktop_api import validation as v
from desktop_api.keys import SERVICE
from desktop_api.middleware import require_account
from desktop_api.server import client_gone

routes = web.RouteTableDef()
MAX_WAIT = 60.0
MAX_LIST = 1000
OPENING_CALL_STATES = ("ringing", "connected")


def _session_response(request: web.Request, session: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=request.app[SERVICE].view_bytes(session),
        status=status,
        content_type="application/json",
        headers={"ETag": f'"{session.version}"'},
    )


@routes.post("/v1/sessions")
async def open_session(request: web.Request) -> web.Response:
    """Open a customer session for an agent."""
    account_id = require_account(request)
    body = v.parse_json_object(await request.read())
    v.check_keys(body, "", ["id", "agent_id", "customer"], ["call"])
    session_id = v.identifier(body, "id", "")
    agent_id = v.identifier(body, "agent_id", "")
    cust = v.obj_field(body, "customer", "")
    v.check_keys(cust, "/customer", ["number"], ["name"])
    number = v.text(cust, "number", "/customer", max_len=64)
    assert number is not None
    customer = Customer(number, v.text(cust, "name", "/customer", optional=True))
    call_state = None
    sip_call_id = None
    if body.get("call") is not None:
        call = v.obj_field(body, "call", "")
        v.check_keys(call, "/call", [], ["state", "sip_call_id"])
        if call.get("state") is not None:
            call_state = CallState(v.choice(call, "state", "/call", OPENING_CALL_STATES))
        sip_call_id = v.text(call, "sip_call_id", "/call", max_len=256, optional=True)
    session = await request.app[SERVICE].open_session(
        account_id, session_id, agent_id, customer, call_state, sip_call_id
    )
    resp = _session_response(request, session, status=201)
    resp.headers["Location"] = f"/v1/sessions/{session.id}"
    return resp


def _number(request: web.Request, name: str, low: float, high: float) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        # ASCII only: float() also reads other scripts' digits (U+0661) and spaces around them
        value = float(raw) if raw.isascii() and raw.strip() == raw else math.nan
    except ValueError:
        value = math.nan
    if not (low <= value <= high):
        raise InvalidInput(
            "invalid_parameter",
            f"{name} must be a number from {low:g} to {high:g}",
            field=f"/query/{name}",
        )
    return value


def _whole(request: web.Request, name: str, high: int) -> int | None:
    """A whole number 0..high, read as digits (never through a float, which rounds above 2^53)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 16 and int(raw) <= high):
        raise InvalidInput(
            "invalid_parameter",
            f"{name} must be a whole number from 0 to {high}",
            field=f"/query/{name}",
        )
    return int(raw)


def _etag_matches(header: str | None, version: int) -> bool:
    """RFC 9110 weak comparison: a list of tags, each maybe `W/`, or `*`."""
    if header is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or f'"{version}"' in tags


@routes.get("/v1/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    """The session; `?wait=S&version=N` long-polls until its version passes N."""
    account_id = require_account(request)
    session_id = request.match_info["session_id"]
    service = request.app[SERVICE]
    wait = version = None
    if request.query_string:
        wait = _number(request, "wait", 0, MAX_WAIT)
        version = _whole(request, "version", 2**53)
    session = service.cached_session(account_id, session_id)
    if session is None:
        session = await service.get_session(account_id, session_id)
    if (
        wait
        and version is not None
        and session.version <= version
        and session.status is not SessionStatus.ENDED
    ):
        await service.hub.wait(account_id, session_id, wait, client_gone(request))
        session = await service.get_session(account_id, session_id)
    elif wait is None and _etag_matches(request.headers.get("If-None-Match"), session.version):
        return web.Response(status=304, headers={"ETag": f'"{session.version}"'})
    return _session_response(request, session)


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """Sessions of the account, newest first; filter by `agent_id` and `status`."""
    account_id = require_account(request)
    unknown = set(request.query) - {"agent_id", "status", "limit"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(
            "invalid_parameter", f"unknown query parameter {name!r}", field=f"/query/{name}"
        )
    status = request.query.get("status")
    if status is not None and status not in {s.value for s in SessionStatus}:
        raise InvalidInput(
            "invalid_parameter",
            "status must be one of: active, call_transferred, ended",
            field="/query/status",
        )
    limit = _number(request, "limit", 1, MAX_LIST)
    if limit is not None and limit != int(limit):
        raise InvalidInput(
            "invalid_parameter", "limit must be a whole number", field="/query/limit"
        )
    service = request.app[SERVICE]
    sessions = await service.list_sessions(
        account_id, request.query.get("agent_id"), status, int(limit or 100)
    )
    return web.json_response({"sessions": [service.view(s) for s in sessions]})


def _if_match(request: web.Request) -> int | None:
    """The version named by `If-Match` (`"12"`), None without the header or with `*`, and -1
    (matches no version: `412 version_mismatch`) for anything that is not one ETag of ours."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    tag = header.strip()
    digits = tag[1:-1] if len(tag) > 2 and tag[0] == tag[-1] == '"' else ""
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 16):
        return -1
    return int(digits)


@routes.patch("/v1/sessions/{session_id}")
async def patch_session(request: web.Request) -> web.Response:
    """The desktop names the session's call: `{"call": {"sip_call_id": "..."}}`."""
    account_id = require_account(request)
    session_id = request.match_info["session_id"]
    service = request.app[SERVICE]
    await service.get_session(account_id, session_id)  # 404 before judging the body
    if_match = _if_match(request)
    body = v.parse_json_object(await request.read())
    v.check_keys(body, "", ["call"])
    call = v.obj_field(body, "call", "")
    v.check_keys(call, "/call", ["sip_call_id"])
    sip_call_id = v.text(call, "sip_call_id", "/call", max_len=256)
    assert sip_call_id is not None
    session = await service.set_call(account_id, session_id, sip_call_id, if_match)
    return _session_response(request, session)


@routes.post("/v1/sessions/{session_id}/transfer")
async def transfer_step(request: web.Request) -> web.Response:
    """One step of the seed's transfer flow."""
    account_id = require_account(request)
    session_id = request.match_info["session_id"]
    service = request.app[SERVICE]
    await service.get_session(account_id, session_id)  # 404 before judging the body
    body = v.parse_json_object(await request.read())
    v.check_keys(body, "", ["action"])
    action = Action(v.choice(body, "action", "", [a.value for a in Action], "unknown_action"))
    session = await service.transfer_step(account_id, session_id, action)
    return _session_response(request, session)


@routes.post("/v1/sessions/{session_id}/end")
async def end_session(request: web.Request) -> web.Response:
    """Set the result and end the session."""
    account_id = require_account(request)
    session_id = request.match_info["session_id"]
    service = request.app[SERVICE]
    await service.get_session(account_id, session_id)
    body = v.parse_json_object(await request.read())
    v.check_keys(body, "", ["result"])
    result = v.text(body, "result", "", max_len=500)
    assert result is not None
    session = await service.end(account_id, session_id, result)
    return _session_response(request, session)


@routes.get("/v1/sessions/{session_id}/audit")
async def audit(request: web.Request) -> web.Response:
    """The session's append-only trail, oldest first."""
    account_id = require_account(request)
    session_id = request.match_info["session_id"]
    entries = await request.app[SERVICE].audit(account_id, session_id)
    return web.json_response({"session_id": session_id, "entries": entries})
