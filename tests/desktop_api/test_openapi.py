"""The OpenAPI document is true to the app.

The document served at `/openapi.json` is a valid OpenAPI 3.1 document, every route the app
serves is in it, and a real flow over a real socket that produces every response kind (each
resource's success, every refusal code, 304, 413, 422, 500, 503, the event stream) validates
request by request and response by response against it with openapi-core. Session, Agent,
Account and Error are closed (`additionalProperties: false`), so a field the code adds without
documenting it fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
from multidict import CIMultiDict, MultiDict
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from openapi_spec_validator import validate

from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    PhoneEvent,
    PhoneEvidence,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import CallState, ConsultState, ReferState, TransferKind
from desktop_api.app import load_openapi
from desktop_api.testing import ApiClient, Reply, RunningBridge

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
TOO_LARGE = 65536 + 1024  # Settings.max_body_bytes is 65536


# --- openapi-core's raw request/response protocol ---------------------------------------------


@dataclass
class RawRequest:
    """`openapi_core.protocols.Request` for a request this test sent."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


@dataclass
class RawResponse:
    """`openapi_core.protocols.Response` for an answer this test received."""

    status_code: int
    content_type: str
    headers: CIMultiDict[str]
    data: bytes


def text_loads(value: bytes, **parameters: str) -> str:
    """`text/event-stream` is text; openapi-core would hand it on as bytes."""
    return value.decode(parameters.get("charset", "utf-8"))


def make_openapi(doc: dict[str, Any]) -> OpenAPI:
    """openapi-core over the document."""
    return OpenAPI.from_dict(
        doc, config=Config(extra_media_type_deserializers={"text/event-stream": text_loads})
    )


@dataclass(frozen=True)
class Seen:
    """One validated exchange."""

    path: str
    method: str
    status: int
    code: str | None


@dataclass
class Checker:
    """Sends requests and validates every request/response pair against the document."""

    doc: dict[str, Any]
    openapi: OpenAPI
    seen: list[Seen] = field(default_factory=list)

    def template(self, path: str) -> str:
        for tpl in self.doc["paths"]:
            parts = re.split(r"(\{[^}]+\})", tpl)
            pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
            if re.fullmatch(pattern, path):
                return str(tpl)
        raise AssertionError(f"{path} is not in the document")

    def check(self, request: RawRequest, response: RawResponse, request_ok: bool | None) -> None:
        """Validate one exchange; `request_ok` False means the document must refuse the request."""
        where = f"{request.method.upper()} {request.path} -> {response.status_code}"
        if request_ok is True:
            try:
                self.openapi.validate_request(request)
            except OpenAPIError as exc:
                raise AssertionError(
                    f"{where}: request does not fit the document: {exc!r}"
                ) from exc
        elif request_ok is False:
            with pytest.raises(OpenAPIError):
                self.openapi.validate_request(request)
        try:
            self.openapi.validate_response(request, response)
        except OpenAPIError as exc:
            detail = getattr(exc, "__cause__", None)
            raise AssertionError(
                f"{where}: response does not fit the document: {exc!r} {detail!r}\n"
                f"{response.data[:2000]!r}"
            ) from exc
        code = None
        if response.content_type.startswith("application/json") and response.data:
            body = json.loads(response.data)
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                code = body["error"]["code"]
        self.seen.append(
            Seen(self.template(request.path), request.method, response.status_code, code)
        )

    @staticmethod
    def _request(
        client: ApiClient,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        params: dict[str, str] | None,
    ) -> RawRequest:
        return RawRequest(
            host_url=client.base,
            path=path,
            method=method.lower(),
            body=data,
            content_type=headers.get("Content-Type", ""),
            parameters=RequestParameters(
                query=MultiDict(params or {}), header=CIMultiDict(headers)
            ),
        )

    async def call(
        self,
        client: ApiClient,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        request_ok: bool | None = True,
        expect: int | None = None,
        code: str | None = None,
    ) -> Reply:
        """Send one request, validate the exchange, check the status and error code."""
        data, hdrs = client.prepare(body, raw, headers)
        reply = await client.call(method, path, raw=data, headers=hdrs, params=params)
        request = self._request(client, method, path, data, hdrs, params)
        response = RawResponse(
            reply.status,
            reply.headers.get("Content-Type", ""),
            CIMultiDict(reply.headers),
            reply.raw,
        )
        if expect is not None:
            assert reply.status == expect, (method, path, reply.status, reply.body)
        if code is not None:
            assert reply.body["error"]["code"] == code, (method, path, reply.body)
        self.check(request, response, request_ok)
        return reply

    async def stream(
        self,
        client: ApiClient,
        *,
        count: int,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Read `count` events of `GET /v1/events`, then leave; validate what was read."""
        hdrs = dict(headers or {})
        if client.token is not None:
            hdrs.setdefault("Authorization", f"Bearer {client.token}")
        events: list[dict[str, Any]] = []
        received = b""
        async with client.http.get(client.base + "/v1/events", headers=hdrs, params=params) as resp:
            assert resp.status == 200, await resp.text()
            content_type = resp.headers.get("Content-Type", "")
            resp_headers = CIMultiDict(resp.headers)
            current: dict[str, Any] = {}
            async with asyncio.timeout(10):
                async for line in resp.content:
                    received += line
                    text = line.decode().rstrip("\r\n")
                    if text:
                        name, _, value = text.partition(":")
                        current[name] = value.removeprefix(" ")
                    elif current:
                        events.append(current)
                        current = {}
                        if len(events) == count:
                            break
        request = self._request(client, "GET", "/v1/events", None, hdrs, params)
        self.check(request, RawResponse(200, content_type, resp_headers, received), True)
        for event in events:
            assert event["event"] == "session"
            assert event["id"].isdigit()
            event["data"] = json.loads(event["data"])
            validate_schema(self.doc, "Session", event["data"])
        return events


def validate_schema(doc: dict[str, Any], name: str, instance: Any) -> None:
    """Validate a value against one of the document's component schemas."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)


# --- fixtures ----------------------------------------------------------------------------------


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


# --- the document itself -----------------------------------------------------------------------


async def test_served_document_is_valid_openapi_31(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc == load_openapi()


async def test_every_route_of_the_app_is_documented(
    bridge: RunningBridge, doc: dict[str, Any]
) -> None:
    served = set()
    for route in bridge.app.router.routes():
        if route.method == "HEAD":
            continue
        served.add((route.resource.canonical, route.method.lower()))  # type: ignore[union-attr]
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert served == documented


async def test_schemas_are_closed(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name in ("Session", "Agent", "Account", "Error", "AccountToken", "AuditEntry"):
        assert schemas[name]["additionalProperties"] is False, name
    session = schemas["Session"]["properties"]
    for part in ("customer", "call", "transfer"):
        assert session[part]["additionalProperties"] is False, part
    assert session["transfer"]["properties"]["phone"]["additionalProperties"] is False


async def test_an_undeclared_field_fails_validation(checker: Checker, admin: ApiClient) -> None:
    """The checker is not blind: the same real answer with one extra field is refused."""
    await checker.call(
        admin, "POST", "/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True}
    )
    token = (await checker.call(admin, "POST", "/v1/accounts/acme/tokens")).body["token"]
    api = admin.with_token(token)
    await checker.call(
        api, "PUT", "/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": "sip:1@pbx.example"}}
    )
    body = {"id": "s-1", "agent_id": "a-7", "customer": {"number": "+34900000001"}}
    reply = await checker.call(api, "POST", "/v1/sessions", body, expect=201)
    refused = await checker.call(api, "POST", "/v1/sessions", body, expect=409)
    request = Checker._request(
        api, "GET", "/v1/sessions/s-1", None, {"Authorization": f"Bearer {token}"}, None
    )

    def answer(payload: Any, status: int = 200) -> RawResponse:
        headers = CIMultiDict({"Content-Type": "application/json", "ETag": '"1"'})
        return RawResponse(status, "application/json", headers, json.dumps(payload).encode())

    checker.openapi.validate_response(request, answer(reply.body))
    mutations: list[Callable[[dict[str, Any]], None]] = [
        lambda s: s.update(surprise=1),
        lambda s: s["call"].update(surprise=1),
        lambda s: s["transfer"].update(surprise=1),
        lambda s: s["transfer"]["phone"].update(surprise=1),
        lambda s: s["customer"].update(surprise=1),
        lambda s: s.pop("actions"),
        lambda s: s["transfer"].update(state="sideways"),
        lambda s: s["call"].update(binding="psychic"),
        lambda s: s.update(actions=["transfer.teleport"]),
    ]
    for mutate in mutations:
        changed = json.loads(json.dumps(reply.body))
        mutate(changed)
        with pytest.raises(OpenAPIError):
            checker.openapi.validate_response(request, answer(changed))
    assert refused.body["error"]["code"] == "already_exists"
    missing = {"error": {"code": "not_found", "message": "no such resource", "field": None}}
    checker.openapi.validate_response(request, answer(missing, 404))
    for key, value in (("surprise", 1), ("code", "made_up"), ("code", "already_exists")):
        error = json.loads(json.dumps(missing))
        error["error"][key] = value
        with pytest.raises(OpenAPIError):
            checker.openapi.validate_response(request, answer(error, 404))
    with pytest.raises(OpenAPIError):
        checker.openapi.validate_response(request, answer({**missing, "surprise": 1}, 404))


# --- the whole API, response kind by response kind ---------------------------------------------

REQUIRED_KINDS = {
    (304, None),
    (400, "invalid_json"),
    (400, "invalid_body"),
    (400, "unknown_field"),
    (400, "missing_field"),
    (400, "invalid_field"),
    (400, "unknown_action"),
    (400, "invalid_parameter"),
    (401, "unauthorized"),
    (403, "forbidden"),
    (403, "transfer_disabled"),
    (404, "not_found"),
    (409, "invalid_step"),
    (409, "not_on_call"),
    (409, "already_transferred"),
    (409, "agent_blocked"),
    (409, "already_exists"),
    (409, "phone_in_use"),
    (413, "body_too_large"),
    (422, "unknown_agent"),
    (500, "internal_error"),
}


def evidence(
    phone: str, observation: Any, call_id: str | None = None, remote: str | None = None
) -> PhoneEvent:
    """A phone event as a source would hand it to the service."""
    return PhoneEvent(
        phone, PhoneEvidence("hep", "2026-01-01T00:00:00.000Z", observation), call_id, remote
    )


async def test_every_response_fits_the_document(
    bridge: RunningBridge,
    admin: ApiClient,
    checker: Checker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = checker
    anon = admin.with_token(None)
    json_hdr = {"Content-Type": "application/json"}
    huge = {"id": "x" * TOO_LARGE}

    # --- system ---
    await c.call(anon, "GET", "/healthz", expect=200)
    metrics = await c.call(anon, "GET", "/metrics", expect=200)
    assert b"# TYPE" in metrics.raw
    await c.call(anon, "GET", "/openapi.json", expect=200)

    # --- accounts ---
    acme = {"id": "acme", "name": "Acme", "transfer_enabled": True}
    r = await c.call(admin, "POST", "/v1/accounts", acme, expect=201)
    assert r.headers["Location"] == "/v1/accounts/acme"
    await c.call(admin, "POST", "/v1/accounts", acme, expect=409, code="already_exists")
    off = {"id": "off", "name": "Off", "transfer_enabled": False}
    await c.call(admin, "POST", "/v1/accounts", off, expect=201)
    await c.call(
        anon, "POST", "/v1/accounts", acme, expect=401, code="unauthorized", request_ok=False
    )
    bad_bodies: list[tuple[bytes, str]] = [
        (b"{", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1]", "invalid_body"),
        (json.dumps({**acme, "id": "new", "extra": 1}).encode(), "unknown_field"),
        (json.dumps({"id": "new", "name": "New"}).encode(), "missing_field"),
        (json.dumps({**acme, "id": "bad id!"}).encode(), "invalid_field"),
        (json.dumps({**acme, "id": "new", "transfer_enabled": "yes"}).encode(), "invalid_field"),
        (json.dumps({**acme, "id": "new", "name": "  "}).encode(), "invalid_field"),
    ]
    for raw, code in bad_bodies:
        await c.call(
            admin,
            "POST",
            "/v1/accounts",
            raw=raw,
            headers=json_hdr,
            expect=400,
            code=code,
            request_ok=False,
        )
    await c.call(
        admin, "POST", "/v1/accounts", huge, expect=413, code="body_too_large", request_ok=False
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
    await c.call(admin, "PATCH", "/v1/accounts/off", huge, expect=413, request_ok=False)

    r = await c.call(admin, "POST", "/v1/accounts/acme/tokens", expect=201)
    api = admin.with_token(r.body["token"])
    await c.call(admin, "POST", "/v1/accounts/acme/tokens", {}, expect=201)
    r = await c.call(admin, "POST", "/v1/accounts/off/tokens", expect=201)
    off_api = admin.with_token(r.body["token"])
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
    await c.call(admin, "POST", "/v1/accounts/acme/tokens", huge, expect=413, request_ok=False)

    # an account token: its own account yes, another's looks missing, admin routes forbidden
    await c.call(api, "GET", "/v1/accounts/acme", expect=200)
    await c.call(api, "GET", "/v1/accounts/off", expect=404, code="not_found")
    await c.call(api, "POST", "/v1/accounts", {**acme, "id": "mine"}, expect=403, code="forbidden")
    await c.call(api, "PATCH", "/v1/accounts/acme", {"transfer_enabled": False}, expect=403)

    # --- agents ---
    ana = {"name": "Ana", "phone": {"sip_uri": "sip:1001@pbx.example"}}
    r = await c.call(api, "PUT", "/v1/agents/a-7", ana, expect=201)
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
    for agent_id, ext in (("a-8", "1002"), ("a-9", "1004"), ("a-10", "1005")):
        await c.call(
            api,
            "PUT",
            f"/v1/agents/{agent_id}",
            {"name": agent_id, "phone": {"sip_uri": f"sip:{ext}@pbx.example"}},
            expect=201,
        )
    await c.call(api, "PUT", "/v1/agents/a-11", ana, expect=409, code="phone_in_use")
    bad_agents: list[tuple[str, Any, str]] = [
        ("bad*id", ana, "invalid_field"),
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
    await c.call(admin, "PUT", "/v1/agents/a-11", ana, expect=403, code="forbidden")
    await c.call(anon, "PUT", "/v1/agents/a-11", ana, expect=401, request_ok=False)
    await c.call(api, "PUT", "/v1/agents/a-11", huge, expect=413, request_ok=False)
    await c.call(api, "GET", "/v1/agents/a-7", expect=200)
    await c.call(api, "GET", "/v1/agents/nobody", expect=404)
    await c.call(admin, "GET", "/v1/agents/a-7", expect=403)
    await c.call(anon, "GET", "/v1/agents/a-7", expect=401, request_ok=False)
    await c.call(off_api, "GET", "/v1/agents/a-7", expect=404)  # another account's agent

    # --- sessions: open ---
    s1 = {
        "id": "s-1",
        "agent_id": "a-7",
        "customer": {"number": "+34900000001", "name": "Eva"},
        "call": {"state": "connected"},
    }
    r = await c.call(api, "POST", "/v1/sessions", s1, expect=201)
    assert r.headers["Location"] == "/v1/sessions/s-1"
    assert r.headers["ETag"] == '"1"'
    assert r.body["actions"] == ["transfer.open", "end"]
    assert r.body["transfer"]["unavailable"] is None
    await c.call(api, "POST", "/v1/sessions", s1, expect=409, code="already_exists")
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {**s1, "id": "s-x", "agent_id": "ghost"},
        expect=422,
        code="unknown_agent",
    )
    bad_sessions: list[tuple[Any, str]] = [
        ({**s1, "call": {"state": "on_hold"}}, "invalid_field"),
        ({**s1, "call": {"state": "connected", "line": 2}}, "unknown_field"),
        ({"id": "s-x", "agent_id": "a-7"}, "missing_field"),
        ({**s1, "customer": {"number": ""}}, "invalid_field"),
        ({**s1, "customer": {"number": "1" * 65}}, "invalid_field"),
        ({**s1, "id": "s x"}, "invalid_field"),
    ]
    for body, code in bad_sessions:
        await c.call(api, "POST", "/v1/sessions", body, expect=400, code=code, request_ok=False)
    await c.call(admin, "POST", "/v1/sessions", s1, expect=403)
    await c.call(anon, "POST", "/v1/sessions", s1, expect=401, request_ok=False)
    await c.call(api, "POST", "/v1/sessions", huge, expect=413, request_ok=False)

    # --- sessions: read, long-poll, 304 ---
    r = await c.call(api, "GET", "/v1/sessions/s-1", expect=200)
    etag = r.headers["ETag"]
    r = await c.call(api, "GET", "/v1/sessions/s-1", headers={"If-None-Match": etag}, expect=304)
    assert r.raw == b"" and r.headers["ETag"] == etag
    await c.call(api, "GET", "/v1/sessions/s-1", params={"wait": "0.1", "version": "1"}, expect=200)
    waiting = asyncio.create_task(
        c.call(api, "GET", "/v1/sessions/s-1", params={"wait": "10", "version": "1"}, expect=200)
    )
    await asyncio.sleep(0.1)
    for params in ({"wait": "abc"}, {"wait": "61"}, {"version": "1.5"}, {"version": "-1"}):
        await c.call(
            api,
            "GET",
            "/v1/sessions/s-1",
            params=params,
            expect=400,
            code="invalid_parameter",
            request_ok=False,
        )
    await c.call(api, "GET", "/v1/sessions/nope", expect=404)
    await c.call(admin, "GET", "/v1/sessions/s-1", expect=403)
    await c.call(anon, "GET", "/v1/sessions/s-1", expect=401, request_ok=False)

    # --- the seed flow on s-1: steps 3-10 ---
    step = "/v1/sessions/s-1/transfer"
    r = await c.call(api, "POST", step, {"action": "open"}, expect=200)
    assert r.body["transfer"]["state"] == "offered"
    assert (await waiting).body["version"] == 2
    r = await c.call(api, "POST", step, {"action": "next"}, expect=409, code="invalid_step")
    assert r.body["error"]["state"] == "offered"
    r = await c.call(api, "POST", step, {"action": "open"}, expect=409, code="invalid_step")
    for action in ("internal", "next", "confirm", "acknowledge", "acknowledge"):
        r = await c.call(api, "POST", step, {"action": action}, expect=200)
    assert r.body["status"] == "call_transferred"
    assert r.body["transfer"]["confirmed_by"] == "agent"
    assert r.body["transfer"]["unavailable"]["code"] == "already_transferred"
    await c.call(api, "POST", step, {"action": "open"}, expect=409, code="already_transferred")
    r = await c.call(api, "GET", "/v1/agents/a-7", expect=200)
    assert r.body["blocking_sessions"] == ["s-1"] and r.body["blocked_reason"]
    assert r.body["current_call"]["session_id"] == "s-1"
    await c.call(api, "POST", "/v1/sessions", {**s1, "id": "s-2"}, expect=409, code="agent_blocked")
    bad_steps: list[tuple[bytes, str]] = [
        (b'{"action": "fly"}', "unknown_action"),
        (b'{"action": 7}', "unknown_action"),
        (b"{}", "missing_field"),
        (b'{"action": "open", "why": 1}', "unknown_field"),
        (b"nope", "invalid_json"),
        (b"[]", "invalid_body"),
    ]
    for raw, code in bad_steps:
        await c.call(
            api, "POST", step, raw=raw, headers=json_hdr, expect=400, code=code, request_ok=False
        )
    await c.call(api, "POST", "/v1/sessions/nope/transfer", {"action": "open"}, expect=404)
    await c.call(admin, "POST", step, {"action": "open"}, expect=403, code="forbidden")
    await c.call(anon, "POST", step, {"action": "open"}, expect=401, request_ok=False)
    await c.call(api, "POST", step, huge, expect=413, request_ok=False)

    # --- end ---
    end = "/v1/sessions/s-1/end"
    for body, code in (
        ({}, "missing_field"),
        ({"result": " "}, "invalid_field"),
        ({"result": "x" * 501}, "invalid_field"),
        ({"result": "ok", "note": 1}, "unknown_field"),
    ):
        await c.call(api, "POST", end, body, expect=400, code=code, request_ok=False)
    r = await c.call(api, "POST", end, {"result": "transferred to sales"}, expect=200)
    assert r.body["status"] == "ended" and r.body["actions"] == []
    assert r.body["transfer"]["unavailable"]["code"] == "invalid_step"
    r = await c.call(api, "POST", end, {"result": "again"}, expect=409, code="invalid_step")
    assert r.body["error"]["state"] == "ended"
    r = await c.call(api, "POST", step, {"action": "dismiss"}, expect=409, code="invalid_step")
    await c.call(api, "POST", "/v1/sessions/nope/end", {"result": "x"}, expect=404)
    await c.call(admin, "POST", end, {"result": "x"}, expect=403)
    await c.call(anon, "POST", end, {"result": "x"}, expect=401, request_ok=False)
    await c.call(api, "POST", end, huge, expect=413, request_ok=False)
    await c.call(api, "GET", "/v1/sessions/s-1", expect=200)  # an ended session, from the store

    # --- not on call; dismiss; deny ---
    r = await c.call(
        api,
        "POST",
        "/v1/sessions",
        {"id": "s-3", "agent_id": "a-7", "customer": {"number": "+34900000003"}},
        expect=201,
    )
    assert r.body["call"]["state"] == "none" and r.body["call"]["since"] is None
    assert r.body["transfer"]["unavailable"]["code"] == "not_on_call"
    await c.call(
        api,
        "POST",
        "/v1/sessions/s-3/transfer",
        {"action": "open"},
        expect=409,
        code="not_on_call",
    )
    r = await c.call(
        api,
        "POST",
        "/v1/sessions",
        {
            "id": "s-4",
            "agent_id": "a-7",
            "customer": {"number": "+34900000004"},
            "call": {"state": "ringing", "sip_call_id": "c-4"},
        },
        expect=201,
    )
    assert r.body["call"]["binding"] == "call_id"
    r = await c.call(
        api,
        "POST",
        "/v1/sessions",
        {
            "id": "s-5",
            "agent_id": "a-7",
            "customer": {"number": "+34900000005", "name": None},
            "call": {"state": "connected", "sip_call_id": None},
        },
        expect=201,
    )
    for action in ("open", "dismiss", "open", "internal", "next", "deny"):
        r = await c.call(api, "POST", "/v1/sessions/s-5/transfer", {"action": action}, expect=200)
    assert r.body["transfer"]["state"] == "none"

    # --- the account switch is off ---
    await c.call(
        off_api,
        "PUT",
        "/v1/agents/z-1",
        {"name": "Zoe", "phone": {"sip_uri": "sip:3001@pbx.example"}},
        expect=201,
    )
    r = await c.call(
        off_api,
        "POST",
        "/v1/sessions",
        {
            "id": "o-1",
            "agent_id": "z-1",
            "customer": {"number": "+34900000011"},
            "call": {"state": "connected"},
        },
        expect=201,
    )
    assert r.body["transfer"]["unavailable"]["code"] == "transfer_disabled"
    await c.call(
        off_api,
        "POST",
        "/v1/sessions/o-1/transfer",
        {"action": "open"},
        expect=403,
        code="transfer_disabled",
    )
    await c.call(admin, "PATCH", "/v1/accounts/off", {"transfer_enabled": True}, expect=200)
    r = await c.call(off_api, "GET", "/v1/sessions/o-1", expect=200)
    assert "transfer.open" in r.body["actions"] and r.body["version"] == 2
    await c.call(off_api, "GET", "/v1/sessions/s-5", expect=404)  # another account's session

    # --- phone evidence: bound by phone and number, proved by the phone, then a late "No" ---
    service = bridge.service
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {"id": "s-10", "agent_id": "a-8", "customer": {"number": "+34900000010"}},
        expect=201,
    )
    phone8 = "sip:1002@pbx.example"
    await service.ingest(
        evidence(phone8, CallStateChanged(CallState.CONNECTED), "c-10", "900000010")
    )
    r = await c.call(api, "GET", "/v1/sessions/s-10", expect=200)
    assert r.body["call"] | {"since": None} == {
        "state": "connected",
        "sip_call_id": "c-10",
        "since": None,
        "binding": "phone_and_number",
    }
    for action in ("open", "internal", "next"):
        await c.call(api, "POST", "/v1/sessions/s-10/transfer", {"action": action}, expect=200)
    for observation in (
        ConsultChanged(ConsultState.ANSWERED, "1003"),
        TransferRequested(TransferKind.ATTENDED, "1003"),
        TransferProgressed(ReferState.ACCEPTED, "SIP/2.0 202 Accepted"),
        TransferSucceeded("notify_2xx", "SIP/2.0 200 OK"),
        TransferSucceeded("notify_2xx", "SIP/2.0 200 OK"),  # a duplicate: audit only
    ):
        await service.ingest(evidence(phone8, observation, "c-10"))
    r = await c.call(api, "POST", "/v1/sessions/s-10/transfer", {"action": "deny"}, expect=200)
    transfer = r.body["transfer"]
    assert transfer["state"] == "transferred" and transfer["confirmed_by"] == "phone"
    assert transfer["kind"] == "attended" and transfer["target"] == "1003"
    assert transfer["conflict"]["desktop"] == "deny"
    assert transfer["phone"] == {
        "consult": "answered",
        "refer": "succeeded",
        "last_sipfrag": "SIP/2.0 200 OK",
        "proved_by": "hep",
        "final_at": "2026-01-01T00:00:00.000Z",
    }
    r = await c.call(api, "GET", "/v1/agents/a-8", expect=200)
    assert r.body["current_call"] == {
        "session_id": "s-10",
        "state": "connected",
        "sip_call_id": "c-10",
    }
    r = await c.call(api, "GET", "/v1/sessions/s-10/audit", expect=200)
    kinds = {e["kind"] for e in r.body["entries"]}
    assert kinds == {"desktop", "phone", "system"}
    assert any("ignored" in e["detail"] for e in r.body["entries"])

    # --- phone failure after the agent's "Yes": a conflict, and a new attempt is open ---
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {
            "id": "s-11",
            "agent_id": "a-9",
            "customer": {"number": "+34900000011"},
            "call": {"state": "connected", "sip_call_id": "c-11"},
        },
        expect=201,
    )
    for action in ("open", "internal", "next", "confirm"):
        await c.call(api, "POST", "/v1/sessions/s-11/transfer", {"action": action}, expect=200)
    await service.ingest(
        evidence(
            "sip:1004@pbx.example", TransferFailed("notify_4xx", "SIP/2.0 486 Busy Here"), "c-11"
        )
    )
    r = await c.call(api, "GET", "/v1/sessions/s-11", expect=200)
    assert r.body["transfer"]["state"] == "failed"
    assert r.body["transfer"]["conflict"]["phone"] == "failed"
    assert r.body["transfer"]["unavailable"] is None and "transfer.open" in r.body["actions"]

    # --- two calls with the customer's number: ambiguous ---
    phone10 = "sip:1005@pbx.example"
    for call_id in ("c-a", "c-b"):
        await service.ingest(
            evidence(phone10, CallStateChanged(CallState.CONNECTED), call_id, "+34900000012")
        )
    r = await c.call(
        api,
        "POST",
        "/v1/sessions",
        {"id": "s-12", "agent_id": "a-10", "customer": {"number": "+34900000012"}},
        expect=201,
    )
    assert r.body["call"]["binding"] == "ambiguous"

    # --- list ---
    r = await c.call(api, "GET", "/v1/sessions", expect=200)
    assert {s["id"] for s in r.body["sessions"]} >= {"s-1", "s-10", "s-11", "s-12"}
    await c.call(
        api,
        "GET",
        "/v1/sessions",
        params={"agent_id": "a-7", "status": "ended", "limit": "5"},
        expect=200,
    )
    # an unknown query parameter is refused by the code; OpenAPI cannot forbid one
    for params, ok in (
        ({"status": "bogus"}, False),
        ({"limit": "0"}, False),
        ({"limit": "2.5"}, False),
        ({"colour": "red"}, None),
    ):
        await c.call(
            api,
            "GET",
            "/v1/sessions",
            params=params,
            expect=400,
            code="invalid_parameter",
            request_ok=ok,
        )
    await c.call(admin, "GET", "/v1/sessions", expect=403)
    await c.call(anon, "GET", "/v1/sessions", expect=401, request_ok=False)

    # --- audit ---
    r = await c.call(api, "GET", "/v1/sessions/s-1/audit", expect=200)
    assert [e["event"] for e in r.body["entries"]][:2] == ["session_opened", "transfer.open"]
    await c.call(api, "GET", "/v1/sessions/nope/audit", expect=404)
    await c.call(admin, "GET", "/v1/sessions/s-1/audit", expect=403)
    await c.call(anon, "GET", "/v1/sessions/s-1/audit", expect=401, request_ok=False)

    # --- events ---
    events = await c.stream(api, count=1, params={"agent_id": "a-8"})
    assert events[0]["data"]["id"] == "s-10"
    replay = await c.stream(api, count=3, headers={"Last-Event-ID": "0"})
    assert [e["data"]["id"] for e in replay] == ["s-1", "s-1", "s-1"]
    assert [e["data"]["version"] for e in replay] == [1, 2, 3]
    await c.stream(api, count=1, params={"last_event_id": replay[-1]["id"]})
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

    # --- failures: 503 and 500 ---
    async def failing(*args: Any) -> None:
        raise RuntimeError("store down (test)")

    with monkeypatch.context() as m:
        m.setattr(service, "ping_store", failing)
        r = await c.call(anon, "GET", "/healthz", expect=503)
        assert r.body["store"] == "failing"
        m.setattr(service, "list_sessions", failing)
        await c.call(api, "GET", "/v1/sessions", expect=500, code="internal_error")

    # --- every response kind, and every documented status of every operation, was seen ---
    kinds = {(s.status, s.code) for s in c.seen}
    assert kinds >= REQUIRED_KINDS, REQUIRED_KINDS - kinds
    documented = {
        (path, method, int(status))
        for path, item in c.doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
        for status in op["responses"]
    }
    observed = {(s.path, s.method, s.status) for s in c.seen}
    # The desk-phone and desktop-page routes have their own walks (test_devices_openapi.py,
    # tests/browser/test_static.py); this one covers the desktop API proper.
    elsewhere = ("/v1/devices/", "/device-urls", "/device-commands", "/desktop")
    missing = {
        d
        for d in documented - observed
        if d[2] != 500 and not any(part in d[0] for part in elsewhere)
    }
    assert not missing, sorted(missing)
