"""Validating real exchanges against the OpenAPI document with openapi-core.

`Checker.call` sends one request to the running bridge and validates the request and the
response against the served document; `Checker.stream` does the same for the event stream.
Every exchange is recorded, so a test can prove it produced every documented status of the
operations it owns (`Checker.assert_covers`, table in `coverage.py`).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
from multidict import CIMultiDict, MultiDict
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError

from bridge.evidence import PhoneEvent, PhoneEvidence
from desktop_api.testing import ApiClient, Reply

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
TOO_LARGE = 65536 + 1024  # Settings.max_body_bytes is 65536
HUGE = {"id": "x" * TOO_LARGE}  # a body over the limit: 413 body_too_large
JSON = {"Content-Type": "application/json"}


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


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of a `text/event-stream` body, each `{field: value}` (comments skipped)."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")
    return events


def text_loads(value: bytes, **parameters: str) -> dict[str, str]:
    """The document describes one event of `text/event-stream` (as schema-driven tools read
    it); openapi-core validates the first, `Checker.stream` every one."""
    events = sse_events(value.decode(parameters.get("charset", "utf-8")))
    return events[0] if events else {}


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
        event_schema = self.doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"][
            "text/event-stream"
        ]["schema"]
        for event in events:
            jsonschema.Draft202012Validator(
                {**event_schema, "components": self.doc["components"]}
            ).validate(event)
            assert event["event"] == "session"
            assert event["id"].isdigit()
            event["data"] = json.loads(event["data"])
            validate_schema(self.doc, "Session", event["data"])
        return events


def validate_schema(doc: dict[str, Any], name: str, instance: Any) -> None:
    """Validate a value against one of the document's component schemas."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)


def evidence(
    phone: str,
    observation: Any,
    call_id: str | None = None,
    remote: str | None = None,
    at: str = "2026-01-01T00:00:00.000Z",
) -> PhoneEvent:
    """A phone event as a source would hand it to the service (seen by the source at `at`)."""
    return PhoneEvent(phone, PhoneEvidence("hep", at, observation), call_id, remote)


Kind = tuple[int, str | None]  # (status, error code or None)


@dataclass(frozen=True)
class Cover:
    """What one test must have produced: every documented status (but 500) of `ops`, and
    each response kind in `kinds`."""

    ops: tuple[tuple[str, str], ...] = ()
    kinds: frozenset[Kind] = frozenset()


def documented_statuses(doc: dict[str, Any], path: str, method: str) -> set[int]:
    """The statuses the document lists for one operation, but 500 (shown once, on its own)."""
    return {int(s) for s in doc["paths"][path][method]["responses"]} - {500}


def assert_covers(checker: Checker, cover: Cover) -> None:
    """`checker` saw every documented status of `cover.ops` and every kind in `cover.kinds`."""
    observed = {(s.path, s.method, s.status) for s in checker.seen}
    missing_statuses = sorted(
        (path, method, status)
        for path, method in cover.ops
        for status in documented_statuses(checker.doc, path, method)
        if (path, method, status) not in observed
    )
    assert not missing_statuses, missing_statuses
    kinds = {(s.status, s.code) for s in checker.seen}
    assert cover.kinds <= kinds, sorted(cover.kinds - kinds, key=str)
