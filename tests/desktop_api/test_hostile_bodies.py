"""Issue 14 item 2 over HTTP: a Poly phone's POST with an unreadable XML encoding is a 4xx.

Before, `ET.fromstring` raised `LookupError`/`ValueError` past the typed-error contract and the
phone got HTTP 500.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from desktop_api.config import DeskphoneSettings
from desktop_api.testing import ApiClient, RunningBridge, running_bridge, settings_for
from tests.conftest import ADMIN, make_tenant

POLY = (
    '<PolycomIPPhone><CallStateChangeEvent CallReference="0x1" CallState="Connected">'
    "<MACAddress>0004f214b89e</MACAddress><PhoneIP>127.0.0.1</PhoneIP>"
    "<CallLineInfo><CallInfo><CallState>Connected</CallState>"
    "<CallingPartyDirNum>+34900000001@pbx</CallingPartyDirNum></CallInfo></CallLineInfo>"
    "</CallStateChangeEvent></PolycomIPPhone>"
)
BODIES = {
    "unknown_encoding": b'<?xml version="1.0" encoding="bogus"?>' + POLY.encode(),
    "multibyte_encoding": b'<?xml version="1.0" encoding="shift_jis"?>' + POLY.encode(),
    "utf16_doctype": ('<!DOCTYPE p [<!ENTITY x "y">]>' + POLY).encode("utf-16"),
}


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    settings = dataclasses.replace(
        settings_for(tmp_path, ADMIN), deskphones=DeskphoneSettings(device_key="k" * 24)
    )
    async with running_bridge(settings) as running:
        yield running


async def test_poly_posts_with_bad_encodings_are_refused_not_500(
    admin: ApiClient, http: aiohttp.ClientSession
) -> None:
    tenant = await make_tenant(admin)
    device = {"vendor": "poly", "ip": "127.0.0.1", "mac": "0004f214b89e"}
    r = await tenant.api.put(
        "/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": tenant.phone, "device": device}}
    )
    assert r.status == 200, r.body
    r = await admin.get("/v1/accounts/acme/agents/a-7/device-urls")
    key = r.body["key"]
    url = f"{admin.base}/v1/devices/acme/poly"
    for name, body in BODIES.items():
        async with http.post(f"{url}?key={key}", data=body) as resp:
            answer = await resp.json()
            assert (resp.status, answer["error"]["code"]) == (400, "invalid_body"), name
        async with http.post(url, data=body) as resp:  # no key: refused, never a 500
            assert 400 <= resp.status < 500, name
            assert "error" in await resp.json()
    async with http.post(f"{url}?key={key}", data=POLY.encode("utf-16")) as resp:
        assert resp.status < 300, await resp.text()


async def test_hundreds_of_mangled_poly_posts_get_no_5xx(
    admin: ApiClient, http: aiohttp.ClientSession
) -> None:
    """Mutated, re-encoded and re-declared Poly bodies over HTTP: 4xx or 2xx, never 5xx."""
    import random

    tenant = await make_tenant(admin)
    device = {"vendor": "poly", "ip": "127.0.0.1", "mac": "0004f214b89e"}
    r = await tenant.api.put(
        "/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": tenant.phone, "device": device}}
    )
    assert r.status == 200, r.body
    key = (await admin.get("/v1/accounts/acme/agents/a-7/device-urls")).body["key"]
    url = f"{admin.base}/v1/devices/acme/poly?key={key}"
    rng = random.Random(14)
    encodings = ["UTF-8", "UTF-16", "bogus", "shift_jis", "ISO-8859-1", "utf-32", "ut\x00f"]
    codecs = ["utf-8", "utf-16", "utf-16-le", "latin-1"]
    statuses: dict[int, int] = {}
    for _ in range(300):
        text = POLY
        if rng.random() < 0.7:
            text = f'<?xml version="1.0" encoding="{rng.choice(encodings)}"?>' + text
        if rng.random() < 0.2:
            text = text.replace(
                "<PolycomIPPhone>", '<!DOCTYPE p [<!ENTITY x "y">]><PolycomIPPhone>'
            )
        cut = rng.randrange(len(text) + 1)
        text = text[:cut] + rng.choice(["", "²", "&x;", "<", "\x00", "é"]) + text[cut:]
        body = text.encode(rng.choice(codecs), "replace")
        async with http.post(url, data=body) as resp:
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            assert resp.status < 500, (resp.status, body[:200])
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) > 100, statuses
