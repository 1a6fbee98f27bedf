"""An instance killed (SIGKILL) under traffic: its desktops' streams resume on another instance
from their last cursor without a gap, and every write it acknowledged before dying is in the
store, readable through the survivor."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from desktop_api.testing import ApiClient
from tests.desktop_api.cluster.instances import make_tenant, running_instances, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def clicks(desk: ApiClient, sid: str, acked: list[int], stop: asyncio.Event) -> None:
    """Transfer Call, dismiss, Transfer Call, ... until stopped or the instance is gone."""
    n = 0
    with contextlib.suppress(aiohttp.ClientError):
        while not stop.is_set():
            r = await desk.step(sid, "open" if n % 2 == 0 else "dismiss")
            assert r.status == 200, r.body
            acked.append(r.body["version"])
            n += 1


async def test_a_killed_instance_loses_nothing_acknowledged_and_streams_resume_elsewhere(
    tmp_path: Path, database: str
) -> None:
    async with running_instances(tmp_path, database, ("A", "B")) as (a, b):
        token = (await make_tenant(a)).token
        desk_a, desk_b = a.api(token), b.api(token)

        async def b_knows_the_agents() -> bool:
            return (await desk_b.get("/v1/agents/a-8")).status == 200

        await until(b_knows_the_agents, "B knows the agents A created")
        for sid, agent, desk in (("s-1", "a-7", desk_b), ("s-2", "a-8", desk_a)):
            body = {"id": sid, "agent_id": agent, "customer": {"number": "+34900000001"}}
            r = await desk.post("/v1/sessions", {**body, "call": {"state": "connected"}})
            assert r.status == 201, r.body

        seen: list[dict[str, Any]] = []
        acked_b: list[int] = []
        acked_a: list[int] = []
        stop_b, stop_a = asyncio.Event(), asyncio.Event()
        async with a.events(token) as feed:
            # The open sessions first, then B's and A's clicks as they come.
            writers = [
                asyncio.create_task(clicks(desk_b, "s-1", acked_b, stop_b)),
                asyncio.create_task(clicks(desk_a, "s-2", acked_a, stop_a)),
            ]
            while sum(1 for e in seen if e["data"]["id"] == "s-1") < 10:
                event = await feed.next(within=5)
                assert event is not None
                seen.append(event)
            await a.kill()
            with contextlib.suppress(aiohttp.ClientPayloadError):  # cut mid-stream
                while (event := await feed.next(within=5)) is not None:
                    seen.append(event)  # whatever was on the wire before the kill
        await asyncio.wait_for(writers[1], 10)  # A's writer ends with A: a connection error
        cut = seen[-1]["id"]

        # The desktop reconnects through the balancer, which now sends it to B.
        async with b.events(token, last_event_id=cut) as resumed:
            target = 40 + len([e for e in seen if e["data"]["id"] == "s-1"])

            async def enough() -> bool:
                return len(acked_b) >= target

            await until(enough, "B's clicks go on after A died", 10)
            stop_b.set()
            await asyncio.wait_for(writers[0], 10)
            final = (await desk_b.get("/v1/sessions/s-1")).body["version"]
            rest = []
            while not rest or not any(
                e["data"]["id"] == "s-1" and e["data"]["version"] == final for e in rest
            ):
                event = await resumed.next(within=5)
                assert event is not None, f"B's stream stopped at {rest[-1:]}"
                rest.append(event)
            await resumed.quiet(0.5)

        events = seen + rest
        cursors = [int(e["id"]) for e in events if e["data"]["version"] > 1]
        assert cursors == sorted(set(cursors)), cursors
        for sid in ("s-1", "s-2"):
            versions = [e["data"]["version"] for e in events if e["data"]["id"] == sid]
            stored = (await desk_b.get(f"/v1/sessions/{sid}")).body["version"]
            assert versions == list(range(1, stored + 1)), (sid, versions)

        # Every click A acknowledged before it died is stored, as B reads it.
        assert acked_a, "A acknowledged clicks before it was killed"
        s2 = (await desk_b.get("/v1/sessions/s-2")).body
        assert s2["version"] >= acked_a[-1], (s2["version"], acked_a[-1])
        audit = (await desk_b.get("/v1/sessions/s-2/audit")).body["entries"]
        assert set(acked_a) <= {e["version"] for e in audit}
        # And B goes on with the session A was writing.
        r = await desk_b.step("s-2", "open" if s2["transfer"]["state"] == "none" else "dismiss")
        assert r.status == 200 and r.body["version"] == s2["version"] + 1, r.body
