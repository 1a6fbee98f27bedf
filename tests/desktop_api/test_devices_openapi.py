"""The desk-phone routes answer exactly as the OpenAPI document says, status by status."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from desktop_api.config import DeskphoneSettings
from desktop_api.testing import ApiClient, RunningBridge, running_bridge, settings_for
from tests.conftest import ADMIN, make_tenant
from tests.desktop_api.openapi.checker import HTTP_METHODS, Checker, make_openapi

DEVICE_PATHS = ("/v1/devices/", "/device-urls", "/device-commands")


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    deskphones = DeskphoneSettings(device_key="k", allow=("127.0.0.1/32",), remote_scheme="http")
    settings = dataclasses.replace(settings_for(tmp_path, ADMIN), deskphones=deskphones)
    async with running_bridge(settings) as running:
        yield running


@pytest.fixture
async def phone_port() -> AsyncIterator[int]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok" if request.query.get("key") != "X" else "no", status=200)

    app = web.Application()
    app.router.add_get("/servlet", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_device_routes_fit_the_document(
    admin: ApiClient, http: aiohttp.ClientSession, phone_port: int
) -> None:
    doc = (await admin.with_token(None).get("/openapi.json")).body
    c = Checker(doc, make_openapi(doc))
    tenant = await make_tenant(admin)
    api, anon = tenant.api, admin.with_token(None)
    device = {"vendor": "yealink", "mac": "001565abcdef", "ip": f"127.0.0.1:{phone_port}"}
    await api.put(
        "/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": tenant.phone, "device": device}}
    )
    urls = "/v1/accounts/acme/agents/a-7/device-urls"
    key = (await c.call(admin, "GET", urls, expect=200)).body["key"]
    await c.call(anon, "GET", urls, expect=401, request_ok=False)
    await c.call(api, "GET", urls, expect=403)
    await c.call(admin, "GET", "/v1/accounts/acme/agents/nobody/device-urls", expect=404)
    q = {"mac": "001565abcdef", "call_id": "1", "remote": "sip:900000001@pbx", "key": key}
    y = "/v1/devices/acme/yealink/incoming_call"
    await c.call(anon, "GET", y, params=q, expect=200)
    await c.call(
        anon, "GET", y, params={**q, "key": "wrong"}, expect=403, code="invalid_device_key"
    )
    await c.call(anon, "GET", y, params={**q, "mac": "bad"}, expect=400, code="invalid_parameter")
    await c.call(
        anon, "GET", "/v1/devices/acme/yealink/nope", params=q, expect=404, code="unknown_event"
    )
    await c.call(
        anon,
        "GET",
        "/v1/devices/acme/snom/incoming",
        params=q,
        expect=403,
        code="invalid_device_key",
    )
    await api.put(
        "/v1/agents/a-7",
        {"name": "Ana", "phone": {"sip_uri": tenant.phone, "device": {**device, "vendor": "snom"}}},
    )
    await c.call(anon, "GET", "/v1/devices/acme/snom/connected", params=q, expect=200)
    await c.call(
        anon,
        "GET",
        "/v1/devices/acme/snom/connected",
        params={**q, "key": ""},
        expect=403,
        request_ok=None,
    )
    await c.call(anon, "GET", "/v1/devices/acme/snom/connected", params={"key": key}, expect=400)
    await c.call(anon, "GET", "/v1/devices/acme/snom/x", params=q, expect=404)
    await api.put(
        "/v1/agents/a-7",
        {"name": "Ana", "phone": {"sip_uri": tenant.phone, "device": {**device, "vendor": "poly"}}},
    )
    xml = {"Content-Type": "application/xml"}
    body = (
        b'<PolycomIPPhone><CallStateChangeEvent CallReference="7" CallState="Connected">'
        b"<MACAddress>001565abcdef</MACAddress></CallStateChangeEvent></PolycomIPPhone>"
    )
    p = "/v1/devices/acme/poly"
    await c.call(anon, "POST", p, raw=body, headers=xml, params={"key": key}, expect=200)
    await c.call(
        anon, "POST", p, raw=b"<x", headers=xml, params={"key": key}, expect=400, request_ok=False
    )
    await c.call(anon, "POST", p, raw=body, headers=xml, params={"key": "no"}, expect=403)
    await c.call(
        anon,
        "POST",
        "/v1/devices/other/poly",
        raw=body,
        headers=xml,
        params={"key": key},
        expect=403,
        code="invalid_device_key",
    )
    commands = "/v1/accounts/acme/agents/a-7/device-commands"
    await c.call(admin, "POST", commands, {"command": "ok"}, expect=409, code="unsupported_command")
    await api.put(
        "/v1/agents/a-7",
        {"name": "Ana", "phone": {"sip_uri": tenant.phone, "device": device}},
    )
    await c.call(admin, "POST", commands, {"command": "ok"}, expect=200)
    await c.call(admin, "POST", commands, {"command": "dial"}, expect=400, request_ok=False)
    await c.call(anon, "POST", commands, {"command": "ok"}, expect=401, request_ok=False)
    await c.call(api, "POST", commands, {"command": "ok"}, expect=403)
    await c.call(
        admin, "POST", "/v1/accounts/acme/agents/x/device-commands", {"command": "ok"}, expect=404
    )
    await api.put(
        "/v1/agents/a-7",
        {
            "name": "Ana",
            "phone": {"sip_uri": tenant.phone, "device": {**device, "ip": "127.0.0.1:9"}},
        },
    )
    await c.call(admin, "POST", commands, {"command": "ok"}, expect=502, code="device_error")
    await api.put("/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": tenant.phone}})
    await c.call(admin, "GET", urls, expect=409, code="no_device")
    documented = {
        (path, method, int(status))
        for path, item in doc["paths"].items()
        if any(marker in path for marker in DEVICE_PATHS)
        for method, op in item.items()
        if method in HTTP_METHODS
        for status in op["responses"]
    }
    observed: set[tuple[str, str, int]] = {(s.path, s.method, s.status) for s in c.seen}
    missing = {d for d in documented - observed if d[2] not in (413, 500)}
    assert not missing, sorted(missing)
