"""QA remote control through the admin API, against a local HTTP server that plays the phone and
checks the exact request each vendor documents (method, path, query, auth, body)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from desktop_api.config import DeskphoneSettings
from desktop_api.testing import ApiClient, RunningBridge, running_bridge, settings_for
from tests.conftest import ADMIN, Tenant, make_tenant

USER, PASSWORD = "qa", "phone-web-password"
REALM, NONCE = "Poly phone", "dcd98b7102dd2f0e8b11d0f600bfb0c093"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "deskphones"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class FakePhone:
    """Answers like the phone would, and keeps every request it saw."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200

    def basic_ok(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == aiohttp.encode_basic_auth(USER, PASSWORD)

    def digest_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        params = dict(re.findall(r'(\w+)="?([^",]+)"?', header[7:]))
        ha1 = md5(f"{USER}:{REALM}:{PASSWORD}")
        ha2 = md5(f"{request.method}:{params['uri']}")
        expected = md5(f"{ha1}:{NONCE}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")
        return params.get("username") == USER and params.get("response") == expected

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        entry = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "content_type": request.headers.get("Content-Type"),
            "body": body,
            "authorization": request.headers.get("Authorization", ""),
        }
        if request.path == "/push":
            if not self.digest_ok(request):
                entry["challenged"] = True
                self.seen.append(entry)
                challenge = f'Digest realm="{REALM}", nonce="{NONCE}", qop="auth", algorithm=MD5'
                return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        elif not self.basic_ok(request):
            self.seen.append({**entry, "challenged": True})
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="phone"'})
        self.seen.append(entry)
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def phone() -> AsyncIterator[tuple[FakePhone, str]]:
    fake = FakePhone()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    deskphones = DeskphoneSettings(
        device_key="k", remote_username=USER, remote_password=PASSWORD, remote_scheme="http"
    )
    settings = dataclasses.replace(settings_for(tmp_path, ADMIN), deskphones=deskphones)
    async with running_bridge(settings) as running:
        yield running


async def command(admin: ApiClient, tenant: Tenant, vendor: str, address: str, cmd: str) -> Any:
    """Give the agent's phone this device, then send one command through the admin API."""
    device = {"vendor": vendor, "mac": "001565abcdef", "ip": address}
    r = await tenant.api.put(
        "/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": tenant.phone, "device": device}}
    )
    assert r.status == 200, r.body
    return await admin.post("/v1/accounts/acme/agents/a-7/device-commands", {"command": cmd})


@pytest.mark.parametrize(
    ("cmd", "key"),
    [
        ("answer", "ASW"),
        ("hangup", "CALLEND"),
        ("hold", "F_HOLD"),
        ("transfer", "F_TRANSFER"),
        ("ok", "OK"),
    ],
)
async def test_yealink_action_uri(
    admin: ApiClient, tenant: Tenant, phone: tuple[FakePhone, str], cmd: str, key: str
) -> None:
    fake, address = phone
    r = await command(admin, tenant, "yealink", address, cmd)
    assert r.status == 200, r.body
    [sent] = [s for s in fake.seen if not s.get("challenged")]
    assert (sent["method"], sent["path"], sent["query"]) == ("GET", "/servlet", f"key={key}")
    assert sent["body"] == b""
    assert r.body == {
        "vendor": "yealink",
        "command": cmd,
        "key": key,
        "method": "GET",
        "url": f"http://{address}/servlet?key={key}",
        "phone_status": 200,
    }


async def test_snom_command_htm(
    admin: ApiClient, tenant: Tenant, phone: tuple[FakePhone, str]
) -> None:
    fake, address = phone
    for cmd, key in (
        ("answer", "ENTER"),
        ("hangup", "CANCEL"),
        ("transfer", "TRANSFER"),
        ("hold", "F_HOLD"),
    ):
        fake.seen.clear()
        r = await command(admin, tenant, "snom", address, cmd)
        assert r.status == 200, r.body
        [sent] = fake.seen
        assert (sent["method"], sent["path"], sent["query"]) == (
            "GET",
            "/command.htm",
            f"key={key}",
        )
        assert sent["authorization"].startswith("Basic ")


async def test_poly_push_with_digest(
    admin: ApiClient, tenant: Tenant, phone: tuple[FakePhone, str]
) -> None:
    fake, address = phone
    r = await command(admin, tenant, "poly", address, "transfer")
    assert r.status == 200, r.body
    challenged, sent = fake.seen
    assert challenged.get("challenged") and not sent.get("challenged")
    assert (sent["method"], sent["path"]) == ("POST", "/push")
    assert sent["content_type"] == "application/x-com-polycom-spipx"
    assert sent["authorization"].startswith("Digest ")
    root = ET.fromstring(sent["body"])
    # The documented push (typographic quotes as printed, made well-formed) has the same shape.
    documented = ET.fromstring((FIXTURES / "poly_push_key_uris.xml").read_text().replace("”", '"'))
    assert root.tag == documented.tag == "PolycomIPPhone"
    [data] = list(root)
    assert data.tag == documented[0].tag == "Data"
    assert (data.get("priority"), data.text) == ("Critical", "Key:Transfer")


async def test_refusals(admin: ApiClient, tenant: Tenant, phone: tuple[FakePhone, str]) -> None:
    fake, address = phone
    r = await command(admin, tenant, "poly", address, "hangup")
    assert (r.status, r.body["error"]["code"]) == (409, "unsupported_command")
    r = await admin.post("/v1/accounts/acme/agents/a-7/device-commands", {"command": "dial"})
    assert (r.status, r.body["error"]["code"]) == (400, "invalid_field")
    r = await tenant.api.post("/v1/accounts/acme/agents/a-7/device-commands", {"command": "ok"})
    assert (r.status, r.body["error"]["code"]) == (403, "forbidden")
    fake.status = 500
    r = await command(admin, tenant, "yealink", address, "ok")
    assert (r.status, r.body["error"]["code"]) == (502, "device_error")
    r = await command(
        admin, tenant, "yealink", "127.0.0.1:9", "ok"
    )  # nothing listens on the discard port
    assert (r.status, r.body["error"]["code"]) == (502, "device_error")
    assert not any(PASSWORD in str(s) for s in fake.seen)


async def test_the_login_never_goes_outside_the_allow_list(
    admin: ApiClient, tenant: Tenant, phone: tuple[FakePhone, str]
) -> None:
    """A tenant writes the phone's address; the operator's login must not follow it anywhere."""
    fake, address = phone
    port = address.rpartition(":")[2]
    for elsewhere in (f"10.9.8.7:{port}", f"localhost:{port}", f"[::ffff:127.0.0.1]:{port}"):
        r = await command(admin, tenant, "snom", elsewhere, "answer")
        assert (r.status, r.body["error"]["code"]) == (409, "address_not_allowed"), elsewhere
    assert fake.seen == []


async def test_commands_go_over_https_unless_the_operator_chose_http(
    tmp_path: Path, http: aiohttp.ClientSession, phone: tuple[FakePhone, str]
) -> None:
    fake, address = phone  # a plain-HTTP phone: HTTPS to it fails, and nothing is sent in clear
    deskphones = DeskphoneSettings(device_key="k", remote_username=USER, remote_password=PASSWORD)
    settings = dataclasses.replace(settings_for(tmp_path, ADMIN), deskphones=deskphones)
    async with running_bridge(settings) as running:
        admin = ApiClient(http, running.url, ADMIN)
        tenant = await make_tenant(admin)
        r = await command(admin, tenant, "snom", address, "answer")
        assert (r.status, r.body["error"]["code"]) == (502, "device_error")
    assert all("authorization" not in s or not s["authorization"] for s in fake.seen)
    assert not any(PASSWORD in str(s) for s in fake.seen)
