"""Tenants are separate namespaces (issue 14): phones, cursors, tokens, devices.

Account B must not learn whether account A uses a phone, must not be able to claim it, and must
never receive its call evidence; cursors must not show another tenant's volume; a revoked or
expired token stops working at once; every route answers every kind of bad credential with
401/403/404 and nothing of another tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.evidence import CallStateChanged, PhoneEvent, PhoneEvidence
from bridge.model import CallState
from desktop_api.app import load_openapi
from desktop_api.storage.sqlite import MIGRATIONS, SqliteStore
from desktop_api.testing import ApiClient, RunningBridge
from tests.conftest import Tenant, open_session

SHARED_PHONE = "sip:5001@pbx.example"
ACME_NUMBER = "+34911111111"


def evidence(state: CallState, *, call_id: str, remote: str = ACME_NUMBER) -> PhoneEvent:
    ev = PhoneEvidence("pbx-1", "2026-11-25T10:00:00.000Z", CallStateChanged(state))
    return PhoneEvent(SHARED_PHONE, ev, call_id=call_id, remote=remote)


async def put_phone(api: ApiClient, agent_id: str, sip_uri: str) -> int:
    r = await api.put(f"/v1/agents/{agent_id}", {"name": "X", "phone": {"sip_uri": sip_uri}})
    return r.status


async def call_state(api: ApiClient, sid: str) -> tuple[str, int]:
    r = await api.get(f"/v1/sessions/{sid}")
    assert r.status == 200, r.body
    return r.body["call"]["state"], r.body["version"]


async def test_a_phone_uri_is_per_account_and_another_tenant_cannot_probe_or_claim_it(
    tenant: Tenant, tenant_factory: Any
) -> None:
    other = await tenant_factory("globex")
    assert await put_phone(tenant.api, "a-1", SHARED_PHONE) == 201
    # globex cannot tell that acme uses the phone: no 409, its own agent simply gets it
    assert await put_phone(other.api, "g-1", SHARED_PHONE) == 201
    # within one account a phone still belongs to one agent only
    r = await tenant.api.put(
        "/v1/agents/a-2", {"name": "Y", "phone": {"sip_uri": SHARED_PHONE.upper()}}
    )
    assert (r.status, r.body["error"]["code"]) == (409, "phone_in_use")
    assert (await tenant.api.get("/v1/agents/a-1")).body["phone"]["sip_uri"] == SHARED_PHONE


async def test_evidence_reaches_only_the_account_owning_the_source_and_the_phone(
    bridge: RunningBridge, tenant: Tenant, tenant_factory: Any
) -> None:
    other = await tenant_factory("globex")
    for t, agent in ((tenant, "a-1"), (other, "g-1")):
        assert await put_phone(t.api, agent, SHARED_PHONE) == 201
        await open_session(t.api, "s-5", agent_id=agent, state=None, number=ACME_NUMBER)
    pump = bridge.evidence
    # a source owned by acme: acme's session moves, globex's (same phone, same number) does not
    pump.put([evidence(CallState.RINGING, call_id="c-acme")], "acme")
    await pump.drain()
    assert (await call_state(tenant.api, "s-5"))[0] == "ringing"
    assert await call_state(other.api, "s-5") == ("none", 1)
    # a source tied to no account, while two accounts have the phone: nobody gets it
    pump.put([evidence(CallState.CONNECTED, call_id="c-acme")])
    await pump.drain()
    assert (await call_state(tenant.api, "s-5"))[0] == "ringing"
    assert await call_state(other.api, "s-5") == ("none", 1)
    async with aiohttp.ClientSession() as http, http.get(bridge.url + "/metrics") as metrics:
        assert 'reason="ambiguous_phone"' in await metrics.text()
    # once only acme has the phone, the unowned source delivers to acme again
    assert await put_phone(other.api, "g-1", "sip:5999@pbx.example") == 200
    pump.put([evidence(CallState.CONNECTED, call_id="c-acme")])
    await pump.drain()
    assert (await call_state(tenant.api, "s-5"))[0] == "connected"
    assert await call_state(other.api, "s-5") == ("none", 1)


async def test_change_cursors_and_audit_seq_count_one_tenant_only(
    bridge: RunningBridge, tenant: Tenant, tenant_factory: Any
) -> None:
    await open_session(tenant.api, "s-1")
    for action in ("open", "internal", "next", "dismiss"):
        assert (await tenant.api.step("s-1", action)).status == 200
    other = await tenant_factory("globex")
    await open_session(other.api, "g-1", number="+34900000009")
    headers = {"Authorization": f"Bearer {other.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(bridge.url + "/v1/events", headers=headers) as resp,
    ):
        line = b""
        while not line.startswith(b"id:"):
            line = await asyncio.wait_for(resp.content.readline(), 3)
    # globex has made one change; acme's five are invisible in its cursor
    assert line.strip() == b"id: 1"
    r = await other.api.get("/v1/sessions/g-1/audit")
    assert [e["seq"] for e in r.body["entries"]] == [1]
    r = await tenant.api.get("/v1/sessions/s-1/audit")
    seqs = [e["seq"] for e in r.body["entries"]]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_revoked_or_expired_token_is_refused_at_once(
    bridge: RunningBridge, admin: ApiClient, tenant: Tenant
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    r = await admin.post("/v1/accounts/acme/tokens", {"expires_at": soon})
    assert r.status == 201, r.body
    expiring = admin.with_token(r.body["token"])
    assert (await expiring.get("/v1/agents/a-7")).status == 200
    assert (await tenant.api.get("/v1/agents/a-7")).status == 200  # cached as valid now
    [listed] = [
        t
        for t in (await admin.get("/v1/accounts/acme/tokens")).body["tokens"]
        if t["id"] != r.body["id"]
    ]
    assert (await admin.call("DELETE", f"/v1/accounts/acme/tokens/{listed['id']}")).status == 200
    r = await tenant.api.get("/v1/agents/a-7")
    assert (r.status, r.body["error"]["code"]) == (401, "unauthorized")
    await asyncio.sleep(1.6)
    assert (await expiring.get("/v1/agents/a-7")).status == 401
    states = {t["state"] for t in (await admin.get("/v1/accounts/acme/tokens")).body["tokens"]}
    assert states == {"revoked", "expired"}


async def test_a_revocation_by_another_process_sharing_the_store_counts_within_the_bound(
    bridge: RunningBridge, tenant: Tenant
) -> None:
    """A second bridge on the same store (the multi-instance case) revokes; this one refuses the
    token within TOKEN_CACHE_SECONDS without being told."""
    from desktop_api.service import registry

    assert (await tenant.api.get("/v1/agents/a-7")).status == 200
    path = Path(bridge.settings.store_url.removeprefix("sqlite:///"))
    db = sqlite3.connect(path)
    db.execute("UPDATE account_tokens SET revoked_at = '2026-01-01T00:00:00.000Z'")
    db.commit()
    db.close()
    deadline = asyncio.get_running_loop().time() + registry.TOKEN_CACHE_SECONDS + 1
    while (await tenant.api.get("/v1/agents/a-7")).status == 200:
        assert asyncio.get_running_loop().time() < deadline, "revocation never took effect"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    "mac", ["not-a-mac", "00:15:65:AB:CD", "0015.65ab.cdeg", "$mac", "00:15:65:AB:CD:EF:00"]
)
async def test_device_mac_is_validated_on_put(tenant: Tenant, mac: str) -> None:
    body = {
        "name": "Ana",
        "phone": {"sip_uri": tenant.phone, "device": {"vendor": "yealink", "mac": mac}},
    }
    r = await tenant.api.put("/v1/agents/a-7", body)
    assert (r.status, r.body["error"]["field"]) == (400, "/phone/device/mac")
    body["phone"]["device"]["mac"] = "00:15:65:AB:CD:EF"  # type: ignore[index]
    assert (await tenant.api.put("/v1/agents/a-7", body)).status == 200


def test_migration_2_keeps_existing_data_and_resumable_cursors(tmp_path: Path) -> None:
    """A store written by schema 1 (global phones, global cursors) upgrades in place."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[0].split(";\n"):
        if statement.strip():
            db.execute(statement)
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute("INSERT INTO accounts VALUES ('acme', 'Acme', 1, 't'), ('globex', 'G', 1, 't')")
    db.execute("INSERT INTO account_tokens VALUES ('ab' || printf('%062d', 1), 'acme', 't')")
    phone = json.dumps({"sip_uri": "sip:1001@pbx"})
    db.execute("INSERT INTO agents VALUES ('acme', 'a-7', 'Ana', ?, '1001@pbx', 't')", (phone,))
    store = SqliteStore(tmp_path / "new.db")  # a session body in the current format
    store.close()
    for seq, account in enumerate(["acme", "globex", "acme"], start=1):
        db.execute(
            "INSERT INTO changes (account_id, session_id, version, body) VALUES (?, 's', ?, '{}')",
            (account, seq),
        )
    db.close()
    store = SqliteStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    assert [a.id for a in store.load_agents()] == ["a-7"]
    # old cursors keep their values: a desktop resuming across the upgrade loses nothing
    assert store.last_change_cursors() == {"acme": 3, "globex": 2}
    assert store.first_change_seq("acme") == 1
    [token] = store.list_tokens("acme")
    assert token.id == "tok_ab00000000000000" and token.revoked_at is None
    # the same phone in another account is now allowed; in the same account it is not
    from bridge.model import Agent, Phone
    from bridge.store import StoreConflict

    store.put_agent(Agent("globex", "g-1", "Gus", Phone("sip:1001@pbx"), "t"), "1001@pbx")
    with pytest.raises(StoreConflict):
        store.put_agent(Agent("acme", "a-8", "Bo", Phone("sip:1001@pbx"), "t"), "1001@pbx")
    store.close()


# --- the tenant matrix: every route x every bad credential ---------------------------------

PUBLIC = ("/healthz", "/metrics", "/openapi.json", "/desktop", "/v1/devices/")
FILL = {
    "account_id": "acme",
    "agent_id": "a-7",
    "session_id": "s-1",
    "event": "incoming_call",
}
BODIES: dict[str, Any] = {
    "post /v1/accounts": {"id": "x", "name": "X", "transfer_enabled": True},
    "patch /v1/accounts/{account_id}": {"transfer_enabled": False},
    "put /v1/agents/{agent_id}": {"name": "Evil", "phone": {"sip_uri": "sip:1001@pbx.example"}},
    "post /v1/sessions": {"id": "s-1", "agent_id": "a-7", "customer": {"number": "1"}},
    "post /v1/sessions/{session_id}/transfer": {"action": "open"},
    "post /v1/sessions/{session_id}/end": {"result": "stolen"},
    "post /v1/accounts/{account_id}/agents/{agent_id}/device-commands": {"command": "answer"},
}


def matrix_routes() -> list[tuple[str, str]]:
    doc = load_openapi()
    return [
        (method, path)
        for path, item in doc["paths"].items()
        if not path.startswith(PUBLIC)
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    ]


async def read_some(resp: aiohttp.ClientResponse) -> bytes:
    """The body; for an event stream, what it sends within half a second."""
    if resp.content_type != "text/event-stream":
        return await resp.read()
    raw = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.5):
            while chunk := await resp.content.readany():
                raw += chunk
    return raw


async def acme_state(api: ApiClient) -> list[Any]:
    paths = ["/v1/agents/a-7", "/v1/sessions/s-1", "/v1/sessions/s-1/audit", "/v1/sessions"]
    return [(await api.get(p)).body for p in paths]


async def test_every_route_refuses_every_bad_credential_and_leaks_nothing(
    bridge: RunningBridge, admin: ApiClient, tenant: Tenant, tenant_factory: Any
) -> None:
    await open_session(tenant.api, "s-1", number=ACME_NUMBER)
    other = await tenant_factory("globex")
    r = await admin.post("/v1/accounts/acme/tokens")
    revoked_id = r.body["id"]
    revoked = r.body["token"]
    assert (await admin.call("DELETE", f"/v1/accounts/acme/tokens/{revoked_id}")).status == 200
    fill = {**FILL, "token_id": revoked_id}
    before = await acme_state(tenant.api)
    credentials = {
        "none": None,
        "malformed": "Bearer tb_ü!" + "x" * 40,
        "empty bearer": "Bearer",
        "not bearer": "Basic " + tenant.token,
        "revoked": f"Bearer {revoked}",
        "other tenant": f"Bearer {other.token}",
    }
    routes = matrix_routes()
    assert len(routes) >= 15
    tried = 0
    async with aiohttp.ClientSession() as http:
        for method, path in routes:
            url = bridge.url + path.format(**fill)
            body = BODIES.get(f"{method} {path}")
            for name, header in credentials.items():
                headers = {"Authorization": header} if header else {}
                timeout = aiohttp.ClientTimeout(total=5)
                async with http.request(
                    method.upper(), url, json=body, headers=headers, timeout=timeout
                ) as resp:
                    status = resp.status
                    raw = await read_some(resp)
                tried += 1
                where = f"{method.upper()} {path} with {name} token: {status} {raw[:200]!r}"
                assert status < 500, where
                if name == "other tenant":
                    # globex acts on its own namespace (its own a-7, its own s-1) or is refused;
                    # nothing of acme shows, and acme's state is compared below
                    assert status != 401, where
                    assert b"acme" not in raw and ACME_NUMBER.encode() not in raw, where
                else:
                    assert status == 401, where
                    assert json.loads(raw)["error"]["code"] == "unauthorized", where
    assert tried == len(routes) * len(credentials)
    assert await acme_state(tenant.api) == before


def test_a_source_takes_an_account_and_watches_only_its_phones(tmp_path: Path) -> None:
    from bridge.model import Agent, Phone
    from desktop_api.config import ConfigError, load_settings
    from desktop_api.sources import RunningSources
    from desktop_api.sources.hep import HepSource
    from desktop_api.sources.pump import EvidencePump

    config = tmp_path / "bridge.toml"
    config.write_text('[[sources.hep]]\nname = "acme-pbx"\naccount = "acme"\n')
    settings = load_settings(config, env={})
    assert settings.sources["hep"][0]["account"] == "acme"
    config.write_text('[[sources.hep]]\naccount = "not an id!"\n')
    with pytest.raises(ConfigError, match="account"):
        load_settings(config, env={})

    async def apply(_event: PhoneEvent) -> None:
        return None

    pump = EvidencePump(apply)
    source = HepSource(0, settings.sources["hep"][0], pump)
    agents = [
        Agent("acme", "a-1", "A", Phone("sip:1001@pbx"), "t"),
        Agent("globex", "g-1", "G", Phone("sip:2002@pbx"), "t"),
    ]
    RunningSources(pump, [source]).sync_phones(agents)
    assert source.tracker.directory.phones == ["sip:1001@pbx"]
    # what it concludes is stamped with its account on the way into the queue
    pump.putter("acme")([evidence(CallState.RINGING, call_id="c")])
    event, _ = pump.queue.get_nowait()
    assert event.account_id == "acme"
