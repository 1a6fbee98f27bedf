"""Contract nits schema fuzzing found (issue 14, item 9), and the shared encodings of item 6.

The document and the server must agree exactly: what `openapi.yaml`'s patterns allow the
server accepts, and what they refuse the server refuses.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import InvalidInput
from desktop_api.app import load_openapi
from desktop_api.routes.agents import MAC, SIP_URI, parse_phone
from desktop_api.testing import ApiClient, RunningBridge
from desktop_api.validation import VISIBLE, text
from tests.conftest import Tenant, open_session

DOC = load_openapi()
SCHEMAS = DOC["components"]["schemas"]
SIP_PATTERN = SCHEMAS["PhoneInput"]["properties"]["sip_uri"]["pattern"]
TEXT_PATTERN = SCHEMAS["Text"]["pattern"]


def test_the_document_uses_the_servers_own_expressions() -> None:
    assert re.compile(SIP_PATTERN).pattern == SIP_URI.pattern
    assert re.compile(TEXT_PATTERN).pattern == VISIBLE.pattern
    device = SCHEMAS["PhoneInput"]["properties"]["device"]["properties"]
    assert device["mac"]["pattern"] == MAC.pattern


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.from_regex(SIP_PATTERN), st.text(max_size=40)))
def test_sip_uri_accepted_exactly_when_the_schema_allows_it(uri: str) -> None:
    allowed = bool(re.search(SIP_PATTERN, uri)) and len(uri) <= 256 and VISIBLE.search(uri)
    try:
        parse_phone({"phone": {"sip_uri": uri}})
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted == bool(allowed), uri


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=8))
def test_text_accepted_exactly_when_the_schema_allows_it(value: str) -> None:
    allowed = bool(value) and bool(re.search(TEXT_PATTERN, value))
    try:
        text({"x": value}, "x", "")
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted == allowed, repr(value)


@pytest.mark.parametrize(
    "uri", ["sip:@pbx", "sip:1001@", "sip:1001@:5060", "sip:a@b@c", "sip:1001@pbx x", "tel:1"]
)
def test_sip_uris_the_old_pattern_let_through_are_refused_by_both(uri: str) -> None:
    assert not re.search(SIP_PATTERN, uri)
    with pytest.raises(InvalidInput):
        parse_phone({"phone": {"sip_uri": uri}})


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("9007199254740992", True),  # 2^53
        ("9007199254740993", False),  # 2^53 + 1: read as a float it would round to 2^53
        ("99999999999999999999", False),
        ("1e3", False),
        ("1.0", False),
        ("-1", False),
        ("٣", False),  # a digit, but not an ASCII one
        ("²", False),
    ],
)
async def test_version_is_a_whole_number_up_to_2_53(api: ApiClient, version: str, ok: bool) -> None:
    await open_session(api, "s-1")
    r = await api.get("/v1/sessions/s-1", params={"wait": "0", "version": version})
    if ok:
        assert r.status == 200
    else:
        assert (r.status, r.body["error"]["field"]) == (400, "/query/version")


@pytest.mark.parametrize("result", ["\x1c\x1d\x1e\x1f", "\x01", "\x7f\x85", " \ufeff ", "\u2028"])
async def test_a_result_without_a_visible_character_is_refused(api: ApiClient, result: str) -> None:
    await open_session(api, "s-1")
    r = await api.post("/v1/sessions/s-1/end", {"result": result})
    assert (r.status, r.body["error"]["field"]) == (400, "/result")
    assert (await api.post("/v1/sessions/s-1/end", {"result": "\x1c ok"})).status == 200


async def test_opening_many_streams_encodes_each_session_once(
    bridge: RunningBridge, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(20):
        await open_session(tenant.api, f"s-{i}", number=f"+3490000{i:04d}")
    import desktop_api.service.reads as reads

    encodings = 0
    real = reads.session_view

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal encodings
        encodings += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(reads, "session_view", counting)
    headers = {"Authorization": f"Bearer {tenant.token}"}
    async with aiohttp.ClientSession() as http:
        responses = await asyncio.gather(
            *(http.get(bridge.url + "/v1/events", headers=headers) for _ in range(100))
        )
        for resp in responses:
            got = b""
            while got.count(b"event: session") < 20:
                got += await asyncio.wait_for(resp.content.readany(), 5)
            resp.close()
    # 100 streams x 20 sessions, but each session is encoded once (the snapshot, once too)
    assert encodings <= 20, encodings


async def test_a_long_poll_ends_when_its_client_leaves(
    bridge: RunningBridge, api: ApiClient
) -> None:
    await open_session(api, "s-1")
    url = f"{bridge.url}/v1/sessions/s-1?wait=60&version=1"
    async with aiohttp.ClientSession() as http:
        polls = [
            asyncio.create_task(http.get(url, headers={"Authorization": f"Bearer {api.token}"}))
            for _ in range(50)
        ]
        await asyncio.sleep(0.3)
        assert bridge.service.hub.counts()[0] == 50
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
    await asyncio.sleep(0.3)
    assert bridge.service.hub.counts()[0] == 0


def test_secrets_quoted_inside_log_text_are_masked() -> None:
    from desktop_api.logs import scrub

    event = {
        "event": "Error handling request",
        "exception": "BadHttpMessage: b'GET /v1/devices/a/poly?key=ABCDEF234567 HTTP/1.1\\r\\n"
        "Authorization: Bearer tb_secret-token\\x01'",
        "n": 3,
    }
    out = scrub(None, "warning", dict(event))
    assert "ABCDEF234567" not in out["exception"] and "tb_secret-token" not in out["exception"]
    assert "key=***" in out["exception"] and "Bearer ***" in out["exception"]
    assert out["n"] == 3 and out["event"] == event["event"]


async def test_a_token_that_is_not_utf8_is_401_not_500(bridge: RunningBridge) -> None:
    host, port = bridge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET /v1/agents/a-7 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tb_\xff\xfe\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 401"), head
