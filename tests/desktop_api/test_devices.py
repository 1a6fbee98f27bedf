"""Desk phones posting their own events to a real bridge, as each vendor documents the request.

Every request is what the phone sends once it has the URL the bridge printed for the agent
(`GET .../device-urls`) with its `$variables` filled in (Yealink, Snom) or the XML it POSTs
(Poly). Each test checks what the desktop sees: the session's call and transfer state, the audit
trail, and that refused requests change nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from bridge.deskphone.events import derive_secret
from desktop_api.config import DeskphoneSettings
from desktop_api.testing import ApiClient, RunningBridge, running_bridge, settings_for
from tests.conftest import ADMIN, Tenant, make_tenant, open_session

DEVICE_KEY = "device-key-for-tests"
MAC = "00:15:65:AB:CD:EF"
CUSTOMER = "+34900000001"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "deskphones"


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A bridge with desk phones switched on (phones post from 127.0.0.1)."""
    settings = dataclasses.replace(
        settings_for(tmp_path, ADMIN), deskphones=DeskphoneSettings(device_key=DEVICE_KEY)
    )
    async with running_bridge(settings) as running:
        yield running


async def with_device(
    admin: ApiClient, vendor: str, mac: str | None = MAC, ip: str = "127.0.0.1"
) -> Tenant:
    tenant = await make_tenant(admin)
    device: dict[str, str] = {"vendor": vendor, "ip": ip}
    if mac is not None:
        device["mac"] = mac
    r = await tenant.api.put(
        "/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": tenant.phone, "device": device}}
    )
    assert r.status == 200, r.body
    return tenant


async def device_urls(admin: ApiClient, account: str = "acme") -> dict[str, Any]:
    r = await admin.get(f"/v1/accounts/{account}/agents/a-7/device-urls")
    assert r.status == 200, r.body
    return r.body  # type: ignore[no-any-return]


def fill(template: str, values: dict[str, str]) -> str:
    """What the phone does with the configured URL: replace each `$variable` it knows."""
    return re.sub(
        r"\$([A-Za-z_][A-Za-z0-9_-]*)",
        lambda m: quote(values[m.group(1)], safe="@:") if m.group(1) in values else m.group(0),
        template,
    )


class Yealink:
    """A Yealink phone configured with the bridge's Action URLs."""

    def __init__(self, http: aiohttp.ClientSession, urls: dict[str, Any]) -> None:
        self.http = http
        self.urls = {t["setting"].removeprefix("action_url."): t["url"] for t in urls["templates"]}

    async def send(
        self, event: str, call_id: str = "33093", remote: str = CUSTOMER, **kw: str
    ) -> aiohttp.ClientResponse:
        values = {
            "mac": MAC.replace(":", ""),
            "ip": "127.0.0.1",
            "local": "sip:1001@pbx.example",
            "remote": f"sip:{remote}@pbx.example",
            "call_id": call_id,
            "active_user": "1001",
            **kw,
        }
        async with self.http.get(fill(self.urls[event], values)) as resp:
            await resp.read()
            return resp


async def session(api: ApiClient, sid: str = "s-1") -> dict[str, Any]:
    r = await api.get(f"/v1/sessions/{sid}")
    assert r.status == 200
    return r.body  # type: ignore[no-any-return]


async def phone_audit(api: ApiClient, sid: str = "s-1") -> list[dict[str, Any]]:
    r = await api.get(f"/v1/sessions/{sid}/audit")
    assert r.status == 200
    return [e for e in r.body["entries"] if e["kind"] == "phone"]


async def test_yealink_blind_transfer_is_progress_until_the_agent_confirms(
    admin: ApiClient, http: aiohttp.ClientSession
) -> None:
    tenant = await with_device(admin, "yealink")
    await open_session(tenant.api, state=None, number=CUSTOMER)
    phone = Yealink(http, await device_urls(admin))
    assert (await phone.send("incoming_call")).status == 200
    s = await session(tenant.api)
    assert (s["call"]["state"], s["call"]["binding"], s["call"]["sip_call_id"]) == (
        "ringing",
        "phone_and_number",
        "33093",
    )
    await phone.send("call_established")
    assert (await session(tenant.api))["call"]["state"] == "connected"
    for step in ("open", "internal"):
        assert (await tenant.api.step("s-1", step)).status == 200
    await phone.send("blind_transfer_call")
    s = await session(tenant.api)
    assert (s["transfer"]["kind"], s["transfer"]["phone"]["refer"]) == ("blind", "requested")
    await phone.send("transfer_finished")
    await phone.send("call_terminated")
    s = await session(tenant.api)
    # "Transfer finished" is the phone handing the call over, not proof the customer got there.
    assert s["transfer"]["state"] == "dialing"
    assert s["transfer"]["phone"]["refer"] == "accepted"
    assert s["call"]["state"] == "ended"
    assert s["status"] == "active"
    for step in ("next", "confirm"):
        assert (await tenant.api.step("s-1", step)).status == 200
    s = await session(tenant.api)
    assert (s["transfer"]["state"], s["transfer"]["confirmed_by"]) == ("transferred", "agent")
    audit = await phone_audit(tenant.api)
    assert [e["event"] for e in audit] == [
        "call_state",
        "call_state",
        "transfer_requested",
        "transfer_progress",
        "call_state",
    ]
    assert {e["detail"]["source"] for e in audit} == {"yealink"}


async def test_yealink_transfer_failed_fails_the_transfer(
    admin: ApiClient, http: aiohttp.ClientSession
) -> None:
    tenant = await with_device(admin, "yealink")
    await open_session(tenant.api, state=None, number=CUSTOMER)
    phone = Yealink(http, await device_urls(admin))
    await phone.send("incoming_call")
    await phone.send("call_established")
    await tenant.api.step("s-1", "open")
    await tenant.api.step("s-1", "internal")
    await phone.send("transfer_call")
    await phone.send("transfer_failed")
    s = await session(tenant.api)
    assert s["transfer"]["state"] == "failed"
    assert s["transfer"]["phone"]["refer"] == "failed"
    assert "transfer.open" in s["actions"]  # a failed attempt does not use up the transfer


async def test_snom_attended_transfer_reports_the_consult(
    admin: ApiClient, http: aiohttp.ClientSession
) -> None:
    tenant = await with_device(admin, "snom")
    await open_session(tenant.api, state=None, number=CUSTOMER)
    urls = {t["setting"]: t["url"] for t in (await device_urls(admin))["templates"]}

    async def send(setting: str, call_id: str, remote: str) -> None:
        values = {
            "mac": MAC.replace(":", "").lower(),
            "phone_ip": "127.0.0.1",
            "local": "sip:1001@pbx.example",
            "remote": f"sip:{remote}@pbx.example",
            "call-id": call_id,
            "active_user": "1001",
        }
        async with http.get(fill(urls[setting], values)) as resp:
            assert resp.status == 200, await resp.text()

    customer_call = "3c26700b58a1-9s7ewq@10.0.0.5"
    await send("action_incoming_url", customer_call, CUSTOMER)
    await send("action_connected_url", customer_call, CUSTOMER)
    await tenant.api.step("s-1", "open")
    await tenant.api.step("s-1", "internal")
    await send("action_hold", customer_call, CUSTOMER)
    assert (await session(tenant.api))["call"]["state"] == "on_hold"
    await send("action_outgoing_url", "consult-1@10.0.0.5", "1002")
    await send("action_connected_url", "consult-1@10.0.0.5", "1002")
    await send("action_attended_transfer", customer_call, CUSTOMER)
    s = await session(tenant.api)
    assert s["call"]["sip_call_id"] == customer_call
    assert s["transfer"]["phone"]["consult"] == "answered"
    assert (s["transfer"]["kind"], s["transfer"]["target"]) == ("attended", "1002")
    assert s["transfer"]["phone"]["refer"] == "requested"
    assert s["transfer"]["state"] == "dialing"


def poly_call_state(reference: str, state: str, stamp: str, remote: str = CUSTOMER) -> bytes:
    """A Call State Change Event filled in after the documented format (Table 24)."""
    return f"""<PolycomIPPhone>
<CallStateChangeEvent CallReference="{reference}" CallState="{state}">
<PhoneIP>127.0.0.1</PhoneIP>
<MACAddress>0004f214b89e</MACAddress>
<LineNumber>1</LineNumber>
<TimeStamp>{stamp}</TimeStamp>
<CallLineInfo>
<LineKeyNum>1</LineKeyNum>
<LineDirNum>1001</LineDirNum>
<LineState>Active</LineState>
<CallInfo>
<CallState>{state}</CallState>
<CallType>Incoming</CallType>
<UIAppearanceIndex>1*</UIAppearanceIndex>
<CalledPartyName>Ana</CalledPartyName>
<CalledPartyDirNum>1001</CalledPartyDirNum>
<CallingPartyName>Customer</CallingPartyName>
<CallingPartyDirNum>{remote}@10.0.0.1</CallingPartyDirNum>
<CallReference>{reference}</CallReference>
<CallDuration>0</CallDuration>
</CallInfo>
</CallLineInfo>
</CallStateChangeEvent>
</PolycomIPPhone>""".encode()


async def test_poly_call_state_events_and_out_of_order_time_stamps(
    admin: ApiClient, http: aiohttp.ClientSession
) -> None:
    tenant = await with_device(admin, "poly", mac="0004f214b89e")
    await open_session(tenant.api, state=None, number=CUSTOMER)
    [url_template] = [
        t["url"]
        for t in (await device_urls(admin))["templates"]
        if t["setting"] == "apps.telNotification.URL"
    ]

    async def post(body: bytes) -> dict[str, Any]:
        async with http.post(url_template, data=body, headers={"Content-Type": "text/xml"}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()  # type: ignore[no-any-return]

    assert (await post(poly_call_state("0x1", "Offering", "2026-01-01T10:00:00+01:00")))[
        "outcomes"
    ] == ["applied"]
    await post(poly_call_state("0x1", "Connected", "2026-01-01T10:00:05+01:00"))
    await post(poly_call_state("0x1", "CallHold", "2026-01-01T10:00:09+01:00"))
    s = await session(tenant.api)
    assert (s["call"]["state"], s["call"]["binding"]) == ("on_hold", "phone_and_number")
    late = await post(poly_call_state("0x1", "Connected", "2026-01-01T10:00:07+01:00"))
    assert late["outcomes"] == ["out_of_order"]
    assert (await session(tenant.api))["call"]["state"] == "on_hold"
    # The documented Incoming Call Event names no call: counted, not applied.
    documented = await post(
        (FIXTURES / "poly_incoming_call_event_sip31.xml")
        .read_bytes()
        .replace(b"172.24.132.135", b"127.0.0.1")
    )
    assert documented["outcomes"] == ["no_call"]


async def test_replayed_and_out_of_order_events_change_nothing(
    admin: ApiClient, http: aiohttp.ClientSession
) -> None:
    tenant = await with_device(admin, "yealink")
    await open_session(tenant.api, state=None, number=CUSTOMER)
    phone = Yealink(http, await device_urls(admin))
    await phone.send("incoming_call")
    await phone.send("call_established")
    before = await session(tenant.api)
    audit_before = await phone_audit(tenant.api)
    async with http.get(
        fill(
            phone.urls["call_established"],
            {"mac": "001565abcdef", "call_id": "33093", "remote": CUSTOMER},
        )
    ) as resp:
        assert (await resp.json())["outcomes"] == ["duplicate"]
    async with http.get(
        fill(
            phone.urls["incoming_call"],
            {"mac": "001565abcdef", "call_id": "33093", "remote": CUSTOMER},
        )
    ) as resp:
        assert (await resp.json())["outcomes"] == ["out_of_order"]
    assert (await session(tenant.api))["version"] == before["version"]
    assert await phone_audit(tenant.api) == audit_before
    metrics = await (await http.get(admin.base + "/metrics")).text()
    assert (
        'transfer_bridge_deskphone_events_total{outcome="duplicate",vendor="yealink"} 1.0'
        in metrics
    )
    assert (
        'transfer_bridge_deskphone_events_total{outcome="out_of_order",vendor="yealink"} 1.0'
        in metrics
    )


async def test_unknown_devices_and_wrong_keys_are_refused_and_change_nothing(
    admin: ApiClient, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await with_device(admin, "yealink")
    await open_session(tenant.api, state="connected", number=CUSTOMER)
    urls = await device_urls(admin)
    good = Yealink(http, urls).urls["incoming_call"]
    key = urls["key"]
    values = {"mac": "001565abcdef", "call_id": "1", "remote": CUSTOMER}
    base = admin.base
    cases = [
        (good.replace(key, "A" * 26), 403, "invalid_device_key"),
        (good.replace(f"&key={key}", ""), 403, "invalid_device_key"),
        (good.replace(key, key.lower()), 403, "invalid_device_key"),
        # an unknown device, another account or another vendor answers exactly as a wrong key
        (good.replace("mac=$mac", "mac=001565abcdee"), 403, "invalid_device_key"),
        (good.replace("/acme/", "/other/"), 403, "invalid_device_key"),
        (
            good.replace("/yealink/", "/snom/").replace("incoming_call", "incoming"),
            403,
            "invalid_device_key",
        ),
        (good.replace("incoming_call", "reboot"), 404, "unknown_event"),
        (good.replace("mac=$mac&ip=$ip", "mac=&ip="), 400, "invalid_parameter"),
        (good.replace("mac=$mac", "mac=not-a-mac"), 400, "invalid_parameter"),
    ]
    before = await session(tenant.api)
    for url, status, code in cases:
        # A bearer token is neither needed nor used here: a bogus one changes nothing.
        async with http.get(
            fill(url, values), headers={"Authorization": "Bearer nonsense"}
        ) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]["code"]) == (status, code), url
            assert set(body["error"]) >= {"code", "message", "field"}
    seen = set()
    for url, _status, _code in cases:
        async with http.get(fill(url, values)) as resp:
            seen.add((resp.status, resp.reason, await resp.read(), resp.content_type))
    assert len({s for s in seen if s[0] == 403}) == 1, "every device refusal looks the same"
    # Poly: the key is checked before the body is parsed (this key is the Yealink device's)
    async with http.post(base + "/v1/devices/acme/poly?key=" + key, data=b"<not xml") as resp:
        assert (resp.status, (await resp.json())["error"]["code"]) == (403, "invalid_device_key")
    after = await session(tenant.api)
    assert after["version"] == before["version"]
    assert await phone_audit(tenant.api) == []
    metrics = await (await http.get(base + "/metrics")).text()
    assert (
        'transfer_bridge_deskphone_events_total{outcome="invalid_device_key",vendor="yealink"} 10.0'
        in metrics
    )
    assert "unknown_device" not in metrics
    assert key not in caplog.text


async def test_addresses_not_allowed_and_receivers_off(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    for deskphones, code in (
        (
            DeskphoneSettings(device_key=DEVICE_KEY, allow=("10.0.0.0/8", "::1/128")),
            "address_not_allowed",
        ),
        (DeskphoneSettings(), "forbidden"),
    ):
        settings = dataclasses.replace(settings_for(tmp_path / code, ADMIN), deskphones=deskphones)
        (tmp_path / code).mkdir()
        async with running_bridge(settings) as running:
            admin = ApiClient(http, running.url, ADMIN)
            tenant = await with_device(admin, "yealink")
            await open_session(tenant.api, state=None, number=CUSTOMER)
            key = derive_secret(DEVICE_KEY, "acme", "001565abcdef")
            url = (
                f"{running.url}/v1/devices/acme/yealink/incoming_call"
                f"?mac=001565abcdef&call_id=1&remote={CUSTOMER}&key={key}"
            )
            async with http.get(url) as resp:
                assert (resp.status, (await resp.json())["error"]["code"]) == (403, code)
            s = await session(tenant.api)
            assert (s["version"], s["call"]["state"]) == (1, "none")


async def test_device_urls_are_admin_only_and_name_each_vendors_settings(
    admin: ApiClient, tmp_path: Path
) -> None:
    tenant = await with_device(admin, "yealink")
    r = await tenant.api.get("/v1/accounts/acme/agents/a-7/device-urls")
    assert (r.status, r.body["error"]["code"]) == (403, "forbidden")
    r = await admin.with_token(None).get("/v1/accounts/acme/agents/a-7/device-urls")
    assert r.status == 401
    r = await admin.get("/v1/accounts/acme/agents/nobody/device-urls")
    assert r.status == 404
    urls = await device_urls(admin)
    assert urls["device"] == "001565abcdef"
    lines = [t["line"] for t in urls["templates"]]
    expected = (
        f"action_url.transfer_finished = {admin.base}/v1/devices/acme/yealink/transfer_finished"
        "?mac=$mac&ip=$ip&local=$local&remote=$remote&call_id=$call_id&user=$active_user"
        f"&key={urls['key']}"
    )
    assert expected in lines
    for vendor, setting in (
        ("snom", "action_connected_url"),
        ("poly", "apps.telNotification.callStateChangeEvent"),
    ):
        await tenant.api.put(
            "/v1/agents/a-7",
            {
                "name": "Ana",
                "phone": {"sip_uri": tenant.phone, "device": {"vendor": vendor, "mac": MAC}},
            },
        )
        settings = {t["setting"] for t in (await device_urls(admin))["templates"]}
        assert setting in settings
    await tenant.api.put("/v1/agents/a-7", {"name": "Ana", "phone": {"sip_uri": tenant.phone}})
    r = await admin.get("/v1/accounts/acme/agents/a-7/device-urls")
    assert (r.status, r.body["error"]["code"]) == (409, "no_device")
