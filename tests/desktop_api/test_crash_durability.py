"""SIGKILL under write load: nothing the bridge acknowledged is lost (issue 14).

Writers open sessions and step them through the flow as fast as the bridge answers; the bridge
is killed with SIGKILL mid-load, restarted on the same store (SQLite file, or PostgreSQL
database), and every write that was
answered 2xx before the kill must be there: the session, at least at the acknowledged version,
its audit trail, and the event feed's replay. Three kills per run keep it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import aiohttp
import pytest

from desktop_api.testing import ApiClient
from tests.conftest import STORES
from tests.desktop_api import bridge_proc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180), STORES]

KILLS = 3
WRITERS = 8
STEPS = ("open", "internal", "next", "dismiss")


async def writer(api: ApiClient, name: str, acked: dict[str, int]) -> None:
    """Open sessions and walk them; remember the highest version each 2xx answer carried."""
    n = 0
    while True:
        sid = f"{name}-{n}"
        n += 1
        try:
            r = await api.post(
                "/v1/sessions",
                {
                    "id": sid,
                    "agent_id": name,
                    "customer": {"number": "+34900000001"},
                    "call": {"state": "connected"},
                },
            )
            if r.status != 201:
                return
            acked[sid] = r.body["version"]
            for action in STEPS:
                r = await api.step(sid, action)
                if r.status != 200:
                    return
                acked[sid] = r.body["version"]
        except (aiohttp.ClientError, ConnectionError, TimeoutError):
            return


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path, store_url: str) -> None:
    directory = tmp_path / "bridge"
    # SQLite: the default file under the bridge's working directory, as a user runs it
    settings = {"TRANSFER_BRIDGE_STORE_URL": store_url} if "postgresql" in store_url else {}
    acked: dict[str, int] = {}
    token = ""
    for kill in range(KILLS):
        bridge = await bridge_proc.start(directory, settings)
        try:
            async with aiohttp.ClientSession() as http:
                admin = ApiClient(http, bridge.url, bridge_proc.ADMIN)
                if kill == 0:
                    r = await admin.post(
                        "/v1/accounts", {"id": "acme", "name": "A", "transfer_enabled": True}
                    )
                    assert r.status == 201
                    token = (await admin.post("/v1/accounts/acme/tokens")).body["token"]
                api = admin.with_token(token)
                names = [f"k{kill}w{i}" for i in range(WRITERS)]
                for i, name in enumerate(names):
                    phone = {"sip_uri": f"sip:{kill}{i:03d}@pbx"}
                    assert (
                        await api.put(f"/v1/agents/{name}", {"name": name, "phone": phone})
                    ).status == 201
                tasks = [asyncio.create_task(writer(api, name, acked)) for name in names]
                await asyncio.sleep(1.5)  # under load
                bridge.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(bridge.proc.wait, 10)
                await asyncio.gather(*tasks)
        finally:
            with contextlib.suppress(ProcessLookupError):
                bridge.proc.kill()
    bridge = await bridge_proc.start(directory, settings)
    try:
        async with aiohttp.ClientSession() as http:
            api = ApiClient(http, bridge.url, token)
            lost = []
            for sid, version in acked.items():
                r = await api.get(f"/v1/sessions/{sid}")
                if r.status != 200 or r.body["version"] < version:
                    lost.append((sid, version, r.status, r.body.get("version")))
            r = await api.get(f"/v1/sessions/{next(iter(acked))}/audit")
            assert r.status == 200 and r.body["entries"]
        writes = sum(acked.values())
        figures = f"{len(acked)} sessions, {writes} acknowledged writes, {len(lost)} lost"
        print(f"crash durability: {KILLS} SIGKILLs, {figures}")
        assert writes > 100, "the load was too light to mean anything"
        assert lost == []
    finally:
        await bridge_proc.stop(bridge)
