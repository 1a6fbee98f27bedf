"""What a desktop and a person at a phone do in the end-to-end tests against the real Asterisk
(`test_asterisk_transfers.py`, `test_dialog_source.py`) and the live latency bench."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from desktop_api.testing import ApiClient
from tests.integration.bridge_process import ADMIN, BridgeProcess, running_bridge_process
from tests.rig.asterisk import RunningAsterisk
from tests.rig.phones import Phones, running_phones
from tests.rig.procs import LOCALHOST, free_udp_ports

AGENTS = (("ana", "1001"), ("ben", "1002"), ("cy", "1003"))


@dataclass
class Rig:
    pbx: RunningAsterisk
    bridge: BridgeProcess
    phones: Phones
    api: ApiClient
    http: aiohttp.ClientSession
    seen: list[dict[str, Any]] = field(default_factory=list)  # what session_until returned


async def tenant_with_agents(
    http: aiohttp.ClientSession, bridge: BridgeProcess, agents: tuple[tuple[str, str], ...] = AGENTS
) -> ApiClient:
    """Account `acme` with transfer on, its token, and one agent per `(id, extension)` whose
    phone is `sip:<extension>@127.0.0.1`; a client with the account's token."""
    admin = ApiClient(http, bridge.url, ADMIN)
    r = await admin.post("/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True})
    assert r.status == 201, r.body
    r = await admin.post("/v1/accounts/acme/tokens")
    assert r.status == 201, r.body
    api = admin.with_token(r.body["token"])
    for agent, ext in agents:
        body = {"name": agent.title(), "phone": {"sip_uri": f"sip:{ext}@127.0.0.1"}}
        r = await api.put(f"/v1/agents/{agent}", body)
        assert r.status == 201, r.body
    return api


async def session_until(
    rig: Rig, sid: str, done: Callable[[dict[str, Any]], bool], within: float = 10.0
) -> dict[str, Any]:
    """Poll the session (as a desktop would) until `done` holds; fail showing the last view."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    body: dict[str, Any] = {}
    while loop.time() < deadline:
        r = await rig.api.get(f"/v1/sessions/{sid}")
        assert r.status == 200, r.body
        body = r.body
        if done(body):
            rig.seen.append(body)
            return body
        await asyncio.sleep(0.05)
    audit = (await rig.api.get(f"/v1/sessions/{sid}/audit")).body
    async with rig.http.get(rig.bridge.url + "/metrics") as r:
        metrics = [m for m in (await r.text()).splitlines() if "evidence" in m or "ami" in m]
    raise AssertionError(
        f"session {sid} never got there: {body}\naudit: {audit}\nmetrics: {metrics}"
    )


async def customer_reaches_agent(
    rig: Rig, customer: str, agent_ext: str, agent: str, sid: str
) -> tuple[str, str]:
    """The customer calls, the agent answers, the desktop opens a session; refs of both legs."""
    phones = rig.phones
    since = len(phones.events)
    call = await phones.call(customer, agent_ext)
    ringing = await phones.wait_state(agent_ext, "INCOMING", since=since)
    await phones.answer(agent_ext, ringing["ref"])
    await phones.wait_state(customer, "CONFIRMED", ref=call["ref"], since=since)
    body = {"id": sid, "agent_id": agent, "customer": {"number": customer}}
    body["call"] = {"state": "connected"}
    r = await rig.api.post("/v1/sessions", body)
    assert r.status == 201, r.body
    await session_until(rig, sid, lambda s: s["call"]["binding"] == "phone_and_number")
    return call["ref"], ringing["ref"]


async def click(rig: Rig, sid: str, *actions: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for action in actions:
        r = await rig.api.post(f"/v1/sessions/{sid}/transfer", {"action": action})
        assert r.status == 200, (action, r.body)
        body = r.body
    return body


async def consult(rig: Rig, agent_ext: str, customer_ref: str, target: str) -> str:
    """Hold the customer and call the other agent, who answers; the consult call's ref."""
    phones = rig.phones
    since = len(phones.events)
    await phones.hold(agent_ext, customer_ref)
    await phones.behaviour(target, "auto", delay_ms=200)
    consult_call = await phones.call(agent_ext, target)
    await phones.wait_state(agent_ext, "CONFIRMED", ref=consult_call["ref"], since=since)
    return str(consult_call["ref"])


async def audit(rig: Rig, sid: str) -> list[dict[str, Any]]:
    r = await rig.api.get(f"/v1/sessions/{sid}/audit")
    assert r.status == 200, r.body
    return list(r.body["entries"])


def phone_sources(entries: list[dict[str, Any]]) -> set[str]:
    return {e["detail"]["source"] for e in entries if e["kind"] == "phone"}


async def rules_after_transfer(rig: Rig, sid: str, agent: str) -> None:
    """Seed rules 4-6: the session stays open, once only, the agent blocked until it ends."""
    r = await rig.api.post(f"/v1/sessions/{sid}/transfer", {"action": "open"})
    assert r.status == 409 and r.body["error"]["code"] == "already_transferred", r.body
    r = await rig.api.get(f"/v1/agents/{agent}")
    assert r.body["can_take_requests"] is False and sid in r.body["blocking_sessions"]
    new = {"id": f"{sid}-next", "agent_id": agent, "customer": {"number": "3000"}}
    r = await rig.api.post("/v1/sessions", new)
    assert r.status == 409 and r.body["error"]["code"] == "agent_blocked", r.body
    r = await rig.api.post(f"/v1/sessions/{sid}/end", {"result": "transferred to support"})
    assert r.status == 200 and r.body["status"] == "ended", r.body
    r = await rig.api.get(f"/v1/agents/{agent}")
    assert r.body["can_take_requests"] is True, r.body


async def still_free(rig: Rig, sid: str, agent: str) -> None:
    """A failed or abandoned attempt uses nothing up: the agent may try again, is not blocked."""
    r = await rig.api.get(f"/v1/agents/{agent}")
    assert r.body["can_take_requests"] is True, r.body
    r = await rig.api.get(f"/v1/sessions/{sid}")
    assert "transfer.open" in r.body["actions"] or r.body["call"]["state"] == "ended", r.body


def transferred(s: dict[str, Any]) -> bool:
    return bool(s["transfer"]["state"] == "transferred")


def failed(s: dict[str, Any]) -> bool:
    return bool(s["transfer"]["state"] == "failed")


async def hang_up_everything(phones: Phones, *exts: str) -> None:
    """Hang up every call of these phones that is still up."""
    for ext in exts:
        for ref, e in phones.calls_of(ext).items():
            if e.get("state") != "DISCONNECTED":
                await phones.hangup(ext, ref)


async def clean_up_case(phones: Phones, rigs: Iterable[Rig], sid: str, *exts: str) -> None:
    """After a case: hang up what is left on these phones, wait (10 s at most) until nothing
    of theirs is up, and end session `sid` on every bridge (a transferred session blocks its
    agent)."""
    with contextlib.suppress(Exception):
        await hang_up_everything(phones, *exts)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        live = [
            ref
            for ext in exts
            for ref, e in phones.calls_of(ext).items()
            if e["state"] != "DISCONNECTED"
        ]
        if not live:
            break
        await asyncio.sleep(0.1)
    for r in rigs:
        with contextlib.suppress(Exception):
            await r.api.post(f"/v1/sessions/{sid}/end", {"result": "test over"})
    await asyncio.sleep(0.3)


# The four ways a bridge can watch the same calls, side by side on one Asterisk.
FOUR_SOURCES = ("hep", "ami", "hep_ami", "dialog")


async def four_bridges(
    pbx: RunningAsterisk,
    workdir: Path,
    stack: AsyncExitStack,
    relay_for: Callable[[list[int]], asyncio.DatagramProtocol],
    agents: tuple[tuple[str, str], ...],
) -> tuple[Phones, dict[str, Rig]]:
    """Four bridge processes (HEP alone, AMI alone, both, dialog-info alone) with one tenant
    and `agents` each, the module's phones, and Asterisk's HEP sent to `relay_for(ports)`, which
    forwards it to the two HEP bridges; ready once every dialog line is subscribed."""
    hep_ports = free_udp_ports(2)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: relay_for(hep_ports), local_addr=(LOCALHOST, pbx.hep_port)
    )
    stack.callback(transport.close)
    http = await stack.enter_async_context(aiohttp.ClientSession())
    phones = await stack.enter_async_context(
        running_phones(pbx.phone_ports, pbx.sip, workdir / "phones")
    )
    options: dict[str, dict[str, Any]] = {
        "hep": {"hep": True, "ami": False, "hep_listen": hep_ports[0]},
        "ami": {"hep": False, "ami": True},
        "hep_ami": {"hep": True, "ami": True, "hep_listen": hep_ports[1]},
        "dialog": {"hep": False, "ami": False, "dialog": True},
    }
    rigs: dict[str, Rig] = {}
    for source in FOUR_SOURCES:
        folder = workdir / source
        folder.mkdir()
        bridge = await stack.enter_async_context(
            running_bridge_process(folder, pbx, **options[source])
        )
        api = await tenant_with_agents(http, bridge, agents)
        rigs[source] = Rig(pbx, bridge, phones, api, http)
    n = len(agents)
    deadline = loop.time() + 10
    while True:
        health = await rigs["dialog"].bridge.wait_healthy(("pbx-dialog",))
        if health["sources"]["pbx-dialog"].get("subscribed") == f"{n}/{n}":
            return phones, rigs
        assert loop.time() < deadline, health
        await asyncio.sleep(0.1)
