"""The real command line, stopped with SIGTERM and started again on the same SQLite file.

What a desktop had before the restart it has after: sessions with their versions and transfer
states, audit trails, the blocked agent, the token, the event cursor. Shutting down answers
waiting long-polls instead of leaving them hanging, exits 0 and logs JSON lines only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from desktop_api.testing import ApiClient, EventStream
from tests.conftest import STORES
from tests.desktop_api.bridge_proc import free_port

pytestmark = [pytest.mark.slow, STORES]  # SQLite, and PostgreSQL behind the same CLI

ADMIN = "restart-admin-token"


def spawn(cwd: Path, env: dict[str, str], out: Any, err: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "desktop_api.cli", "serve"], cwd=cwd, env=env, stdout=out, stderr=err
    )


@dataclass
class Bridge:
    """One `transfer-bridge serve` process."""

    proc: subprocess.Popen[bytes]
    url: str
    stderr: Path
    stdout: Path
    store_password: str = ""


@pytest.fixture
def launch(tmp_path: Path, store_url: str) -> Iterator[Any]:
    """`await launch(n)` starts the CLI in tmp_path (so ./var/ is shared between runs), or on
    one PostgreSQL database shared between runs."""
    started: list[subprocess.Popen[bytes]] = []

    async def start(n: int) -> Bridge:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFER_BRIDGE_")}
        env.update(
            TRANSFER_BRIDGE_HTTP_LISTEN=f"127.0.0.1:{port}",
            TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN=ADMIN,
            TRANSFER_BRIDGE_LOG_FORMAT="json",
        )
        if store_url.startswith("postgresql://"):
            env["TRANSFER_BRIDGE_STORE_URL"] = store_url
        err, out = tmp_path / f"stderr-{n}.log", tmp_path / f"stdout-{n}.log"
        with err.open("wb") as e, out.open("wb") as o:
            proc = spawn(tmp_path, env, o, e)
        started.append(proc)
        password = store_url.rsplit("@", 1)[0].rsplit(":", 1)[-1] if "@" in store_url else ""
        bridge = Bridge(proc, f"http://127.0.0.1:{port}", err, out, password)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        async with aiohttp.ClientSession() as http:
            while True:
                assert proc.poll() is None, f"exited {proc.returncode}: {err.read_text()}"
                assert loop.time() < deadline, f"no /healthz: {err.read_text()}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(bridge.url + "/healthz") as r:
                        if r.status == 200:
                            return bridge
                await asyncio.sleep(0.05)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def terminate(bridge: Bridge, within: float = 5.0) -> float:
    """SIGTERM; the process must exit 0 within `within` seconds. Returns how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    bridge.proc.send_signal(signal.SIGTERM)
    rc = await asyncio.to_thread(bridge.proc.wait, within + 5)
    took = loop.time() - started
    assert rc == 0, bridge.stderr.read_text()
    assert took < within, took
    return took


def _password(bridge: Bridge) -> tuple[str, ...]:
    """The store's password, when the bridge runs on PostgreSQL (it must never be logged)."""
    return tuple(p for p in [bridge.store_password] if p)


def assert_json_logs(bridge: Bridge, *secrets: str) -> list[dict[str, Any]]:
    """Every line the process wrote is a JSON object; no secret appears in any of them."""
    records = []
    for stream in (bridge.stderr, bridge.stdout):
        text = stream.read_text()
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {stream.name}"
        for line in text.splitlines():
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError:
                    pytest.fail(f"not a JSON log line in {stream.name}: {line!r}")
                assert isinstance(record, dict) and "event" in record, line
                records.append(record)
    return records


@contextlib.asynccontextmanager
async def clients(bridge: Bridge, token: str | None = None) -> AsyncIterator[ApiClient]:
    async with aiohttp.ClientSession() as http:
        yield ApiClient(http, bridge.url, token or ADMIN)


async def snapshot(api: ApiClient, admin: ApiClient) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for sid in ("s-1", "s-2", "s-3"):
        r = await api.get(f"/v1/sessions/{sid}")
        seen[sid] = (r.status, r.body, r.headers.get("ETag"))
        seen[f"{sid}/audit"] = (await api.get(f"/v1/sessions/{sid}/audit")).body
    for agent in ("a-7", "a-8"):
        seen[agent] = (await api.get(f"/v1/agents/{agent}")).body
    seen["list"] = (await api.get("/v1/sessions")).body
    seen["account"] = (await admin.get("/v1/accounts/acme")).body
    return seen


async def steps(api: ApiClient, sid: str, *actions: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for action in actions:
        r = await api.step(sid, action)
        assert r.status == 200, (action, r.body)
        body = r.body
    return body


async def open_session(api: ApiClient, sid: str, agent: str, number: str) -> None:
    r = await api.post(
        "/v1/sessions",
        {
            "id": sid,
            "agent_id": agent,
            "customer": {"number": number},
            "call": {"state": "connected"},
        },
    )
    assert r.status == 201, r.body


async def test_a_restart_loses_nothing(launch: Any) -> None:
    first = await launch(1)
    async with clients(first) as admin:
        r = await admin.post(
            "/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True}
        )
        assert r.status == 201
        token = (await admin.post("/v1/accounts/acme/tokens")).body["token"]
        api = admin.with_token(token)
        for agent, ext in (("a-7", "1001"), ("a-8", "1002")):
            r = await api.put(
                f"/v1/agents/{agent}",
                {"name": agent, "phone": {"sip_uri": f"sip:{ext}@pbx.example"}},
            )
            assert r.status == 201

        # s-1: the whole seed flow, transferred and acknowledged; a-7 is now blocked (rule 5).
        await open_session(api, "s-1", "a-7", "+34900000001")
        s1 = await steps(api, "s-1", "open", "internal", "next", "confirm", "acknowledge")
        assert (s1["status"], s1["transfer"]["state"], s1["version"]) == (
            "call_transferred",
            "transferred",
            6,
        )
        r = await api.post(
            "/v1/sessions", {"id": "s-9", "agent_id": "a-7", "customer": {"number": "9"}}
        )
        assert r.status == 409 and r.body["error"]["code"] == "agent_blocked"

        # The desktop's event cursor at this point.
        async with admin.http.get(
            first.url + "/v1/events", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            (current,) = await EventStream(resp).drain(0.3)
        cursor = current["id"]
        assert current["data"] == s1

        # s-2 left mid-flow in `confirming`; s-3 opened and ended.
        await open_session(api, "s-2", "a-8", "+34900000002")
        s2 = await steps(api, "s-2", "open", "internal", "next")
        assert s2["transfer"]["state"] == "confirming" and s2["version"] == 4
        await open_session(api, "s-3", "a-8", "+34900000003")
        assert (await api.post("/v1/sessions/s-3/end", {"result": "no answer"})).status == 200
        before = await snapshot(api, admin)
    await terminate(first)
    records = assert_json_logs(first, token, ADMIN, *_password(first))
    [loaded] = [r for r in records if r.get("event") == "store_loaded"]
    assert loaded["store"] == ("PostgresStore" if first.store_password else "SqliteStore")
    assert {"bridge_started", "bridge_stopped"} <= {r["event"] for r in records}

    second = await launch(2)
    async with clients(second) as admin:
        api = admin.with_token(token)  # the token still works
        after = await snapshot(api, admin)
        for key in before:
            assert after[key] == before[key], f"{key} differs after the restart"
        assert before["s-1"][2] == '"6"' and before["s-2"][2] == '"4"'

        agent = after["a-7"]
        assert agent["can_take_requests"] is False and agent["blocking_sessions"] == ["s-1"]
        r = await api.post(
            "/v1/sessions", {"id": "s-9", "agent_id": "a-7", "customer": {"number": "9"}}
        )
        assert r.status == 409 and r.body["error"]["code"] == "agent_blocked"

        # The confirming session carries on where it stopped.
        s2 = await steps(api, "s-2", "confirm")
        assert s2["transfer"]["state"] == "transferred" and s2["version"] == 5
        assert s2["transfer"]["confirmed_by"] == "agent"
        # One transfer per session still holds for s-1 after the restart (rule 6).
        r = await api.step("s-1", "open")
        assert r.status == 409 and r.body["error"]["code"] == "already_transferred"

        # Resuming the event stream from the pre-restart cursor replays everything after it.
        headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": cursor}
        async with admin.http.get(second.url + "/v1/events", headers=headers) as resp:
            replay = await EventStream(resp).drain(0.5)
        assert [(e["data"]["id"], e["data"]["version"]) for e in replay] == [
            ("s-2", 1),
            ("s-2", 2),
            ("s-2", 3),
            ("s-2", 4),
            ("s-3", 1),
            ("s-3", 2),
            ("s-2", 5),
        ]
        ids = [int(e["id"]) for e in replay]
        assert ids == sorted(set(ids)) and ids[0] > int(cursor)
        assert replay[-1]["data"] == s2

        # Ending the transferred session unblocks the agent.
        assert (await api.post("/v1/sessions/s-1/end", {"result": "transferred"})).status == 200
        await open_session(api, "s-9", "a-7", "+34900000009")
    await terminate(second)
    assert_json_logs(second, token, ADMIN, *_password(second))


async def test_sigterm_answers_a_waiting_long_poll_and_exits_cleanly(launch: Any) -> None:
    bridge = await launch(1)
    async with clients(bridge) as admin:
        assert (
            await admin.post(
                "/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True}
            )
        ).status == 201
        token = (await admin.post("/v1/accounts/acme/tokens")).body["token"]
        api = admin.with_token(token)
        r = await api.put("/v1/agents/a-7", {"name": "A", "phone": {"sip_uri": "sip:1@pbx"}})
        assert r.status == 201
        await open_session(api, "s-1", "a-7", "+34900000001")
        await steps(api, "s-1", "open")

        poll = asyncio.create_task(
            api.get("/v1/sessions/s-1", params={"wait": "30", "version": "2"})
        )
        headers = {"Authorization": f"Bearer {token}"}
        async with admin.http.get(bridge.url + "/v1/events", headers=headers) as resp:
            assert len(await EventStream(resp).drain(0.3)) == 1
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while (
                "transfer_bridge_long_polls 1.0" not in (await admin.get("/metrics")).raw.decode()
            ):
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            started = loop.time()
            bridge.proc.send_signal(signal.SIGTERM)
            answered = await asyncio.wait_for(poll, 5)
            assert loop.time() - started < 3, "the long-poll held up the shutdown"
            assert answered.status == 200
            assert answered.body["version"] == 2 and answered.body["transfer"]["state"] == "offered"
            # The event stream ends too instead of hanging.
            rest = await asyncio.wait_for(resp.content.read(), 5)
            assert b"event: session" not in rest
    rc = await asyncio.to_thread(bridge.proc.wait, 10)
    assert rc == 0, bridge.stderr.read_text()
    assert_json_logs(bridge, token, ADMIN)
