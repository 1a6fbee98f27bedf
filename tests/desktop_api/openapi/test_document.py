"""The OpenAPI document is true to the app.

The document served at `/openapi.json` is a valid OpenAPI 3.1 document and every route the
app serves is in it. The other modules of this package walk the API route by route over a
real socket, producing every response kind (each resource's success, every refusal code,
304, 413, 422, 500, 503, the event stream), and validate request by request and response by
response against it with openapi-core. Session, Agent, Account and Error are closed
(`additionalProperties: false`), so a field the code adds without documenting it fails there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict
from openapi_core.exceptions import OpenAPIError
from openapi_spec_validator import validate

from desktop_api.app import load_openapi
from desktop_api.testing import ApiClient, RunningBridge
from tests.desktop_api.openapi.checker import HTTP_METHODS, Checker, RawResponse
from tests.desktop_api.openapi.coverage import COVERS, ELSEWHERE, REQUIRED_KINDS


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


# --- the walk leaves nothing out ---------------------------------------------------------------


def test_the_walk_owns_every_operation_and_every_response_kind() -> None:
    """Every operation of the desktop API is owned by a test of this package (which proves
    each of its documented statuses), and together they produce every response kind."""
    doc = load_openapi()
    operations = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS and not any(part in path for part in ELSEWHERE)
    }
    owned = {op for cover in COVERS.values() for op in cover.ops}
    assert owned == operations, (sorted(operations - owned), sorted(owned - operations))
    kinds = {kind for cover in COVERS.values() for kind in cover.kinds}
    assert kinds >= REQUIRED_KINDS, sorted(REQUIRED_KINDS - kinds, key=str)
    # ...and a test of this package really asserts each entry of the table.
    sources = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    unused = [name for name in COVERS if f'COVERS["{name}"]' not in sources]
    assert not unused, unused
