"""Two instances while their database restarts under traffic: clear `503 store_unavailable` with
`Retry-After` meanwhile (no 500, no request left hanging), both recover by themselves, every
write acknowledged with a 2xx is in the store afterwards, and the desktops' streams resume with
every version of every session, whichever instance wrote it.

The test restarts a PostgreSQL server of its own, never the session's shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from desktop_api.testing import ApiClient, EventStream, Reply
from tests.desktop_api.cluster.instances import Instance, make_tenant, running_instances, until
from tests.rig.postgres import Cluster, running_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
WRITERS = ("w-1", "w-2", "w-3", "w-4")  # one agent per writer; w-1, w-3 on A, w-2, w-4 on B
STEPS = (  # the click, its audit event, the transfer state it leads to
    ("open", "transfer.open", "offered"),
    ("internal", "transfer.internal", "dialing"),
    ("next", "transfer.next", "confirming"),
)
PATIENCE = 10.0  # seconds any one request may take, outage or not


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server for this test alone (it is stopped and started mid-test)."""
    with running_cluster() as cluster:
        yield cluster


@dataclass
class Traffic:
    """What the clients saw."""

    acked: list[tuple[str, str, int, str]] = field(default_factory=list)  # (via, sid, v, event)
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # via -> 503s
    applied_though_refused: list[tuple[str, str]] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def call(
    via: str, desk: ApiClient, traffic: Traffic, method: str, path: str, body: Any = None
) -> Reply:
    """One request, bounded: a hang fails the test; a 503 must be the clear one."""
    reply = await asyncio.wait_for(desk.call(method, path, body), PATIENCE)
    traffic.statuses.add(reply.status)
    if reply.status == 503:
        assert reply.body["error"]["code"] == "store_unavailable", reply.body
        assert reply.headers.get("Retry-After") == "2", dict(reply.headers)
        traffic.refused[via] += 1
    return reply


async def read_back(via: str, desk: ApiClient, traffic: Traffic, sid: str) -> Reply:
    """The session as stored, once the store answers again."""
    for _ in range(int(PATIENCE / 0.2)):
        got = await call(via, desk, traffic, "GET", f"/v1/sessions/{sid}")
        if got.status != 503:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"{sid} unreadable for {PATIENCE} s")


async def write(
    via: str,
    desk: ApiClient,
    traffic: Traffic,
    sid: str,
    method: str,
    path: str,
    body: Any,
    event: str,
    done: Any,
) -> None:
    """Send one write until it is acknowledged, retrying after a 503 as a desktop would;
    `done(session)` tells whether a write answered 503 was applied after all."""
    refused = False
    while True:
        reply = await call(via, desk, traffic, method, path, body)
        if reply.status in (200, 201):
            traffic.acked.append((via, sid, reply.body["version"], event))
            return
        if reply.status == 409 and refused:
            # The connection died around the commit: it may have committed. Read it back.
            got = await read_back(via, desk, traffic, sid)
            assert got.status == 200 and done(got.body), (reply.body, got.body)
            traffic.applied_though_refused.append((sid, event))
            return
        assert reply.status == 503, (method, path, reply.status, reply.body)
        refused = True
        await asyncio.sleep(0.2)


async def writer(via: str, desk: ApiClient, agent: str, traffic: Traffic) -> None:
    """A desktop taking sessions one after another: open, three clicks, end."""
    n = 0
    while not traffic.stop.is_set():
        n += 1
        sid = f"{agent}-{n}"
        body = {
            "id": sid,
            "agent_id": agent,
            "customer": {"number": "+34900000001"},
            "call": {"state": "connected"},
        }
        await write(
            via, desk, traffic, sid, "POST", "/v1/sessions", body, "session_opened", lambda s: True
        )
        for action, event, state in STEPS:
            await write(
                via,
                desk,
                traffic,
                sid,
                "POST",
                f"/v1/sessions/{sid}/transfer",
                {"action": action},
                event,
                lambda s, state=state: s["transfer"]["state"] == state,
            )
        await write(
            via,
            desk,
            traffic,
            sid,
            "POST",
            f"/v1/sessions/{sid}/end",
            {"result": "done"},
            "end",
            lambda s: s["status"] == "ended",
        )


async def follow(
    instance: Instance,
    token: str,
    seen: list[dict[str, Any]],
    reconnects: list[int],
    stop: asyncio.Event,
) -> None:
    """A desktop's stream on one instance, resumed with Last-Event-ID whenever it ends."""
    last: str | None = None
    while not stop.is_set():
        headers = {"Authorization": f"Bearer {token}"}
        if last is not None:
            headers["Last-Event-ID"] = last
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{instance.url}/v1/events", headers=headers) as resp,
            ):
                reconnects.append(resp.status)
                if resp.status != 200:
                    assert resp.status == 503, (resp.status, await resp.text())
                    await asyncio.sleep(0.2)
                    continue
                stream = EventStream(resp)
                while not stop.is_set():
                    event = await stream.next(within=0.5)
                    if event is None:
                        if stream.closed:
                            break
                        continue
                    seen.append(event)
                    last = event["id"]
        except aiohttp.ClientError:
            reconnects.append(0)
            await asyncio.sleep(0.2)


async def test_a_database_restart_under_traffic_on_two_instances(
    tmp_path: Path, own_cluster: Cluster
) -> None:
    database = own_cluster.create_database("restart")
    async with running_instances(tmp_path, database, ("A", "B")) as (a, b):
        token = (await make_tenant(a)).token
        for agent in WRITERS:
            phone = {"sip_uri": f"sip:{3000 + WRITERS.index(agent)}@pbx.example"}
            r = await a.api(token).put(f"/v1/agents/{agent}", {"name": agent, "phone": phone})
            assert r.status == 201, r.body

        async def b_knows_them() -> bool:
            return (await b.api(token).get(f"/v1/agents/{WRITERS[-1]}")).status == 200

        await until(b_knows_them, "B knows the agents A created")
        traffic = Traffic()
        via = {"A": a, "B": b}
        desks = [("A" if i % 2 == 0 else "B", agent) for i, agent in enumerate(WRITERS)]
        seen: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        reconnects: dict[str, list[int]] = {"A": [], "B": []}
        stop_following = asyncio.Event()
        followers = [
            asyncio.create_task(follow(via[n], token, seen[n], reconnects[n], stop_following))
            for n in seen
        ]
        writers = [
            asyncio.create_task(writer(n, via[n].api(token), agent, traffic)) for n, agent in desks
        ]
        try:
            await until(lambda: _count(traffic, 20), "traffic before the outage", 10)
            await asyncio.to_thread(own_cluster.stop, "fast")
            try:
                await until(lambda: _refused_on_both(traffic), "503s on both instances", 10)
                for instance in (a, b):
                    status, health = await instance.healthz()
                    assert (status, health["store"]) == (503, "failing"), health
                await asyncio.sleep(1.0)
            finally:
                await asyncio.to_thread(own_cluster.start)
            before = len(traffic.acked)
            # Both recover by themselves: each writer gets writes acknowledged again.
            await until(lambda: _count(traffic, before + 40), "writes after the restart", 20)
            traffic.stop.set()
            await asyncio.wait_for(asyncio.gather(*writers), PATIENCE * 2)
            for instance in (a, b):
                status, health = await instance.healthz()
                assert (status, health["store"]) == (200, "ok"), health
        finally:
            traffic.stop.set()
            for task in writers:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*writers)

        assert traffic.statuses <= {200, 201, 409, 503}, traffic.statuses
        acked_via = {v for v, *_ in traffic.acked}
        assert acked_via == {"A", "B"}

        # Every acknowledged write is in the store, read through either instance.
        finals: dict[str, int] = {}
        by_session: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for _, sid, version, event in traffic.acked:
            by_session[sid].append((version, event))
        for n, (sid, writes) in enumerate(sorted(by_session.items())):
            instance = (a, b)[n % 2]
            r = await instance.api(token).get(f"/v1/sessions/{sid}/audit")
            assert r.status == 200, r.body
            entries = {(e["version"], e["event"]) for e in r.body["entries"]}
            for version, event in writes:
                assert (version, event) in entries, (sid, version, event, r.body)
            finals[sid] = max(e["version"] for e in r.body["entries"])

        # Both streams resumed: every version of every session, in order, once each.
        async def streams_caught_up() -> bool:
            for events in seen.values():
                newest: dict[str, int] = {}
                for e in events:
                    newest[e["data"]["id"]] = e["data"]["version"]
                if newest != finals:
                    return False
            return True

        try:
            await until(streams_caught_up, "both streams show every version", 10)
        finally:
            stop_following.set()
            await asyncio.gather(*followers)
        for name, events in seen.items():
            versions: dict[str, list[int]] = defaultdict(list)
            for e in events:
                versions[e["data"]["id"]].append(e["data"]["version"])
            for sid, final in finals.items():
                assert versions[sid] == list(range(1, final + 1)), (name, sid, versions[sid])
            cursors = [int(e["id"]) for e in events]
            assert cursors == sorted(set(cursors)), name
        assert set(reconnects["A"] + reconnects["B"]) <= {0, 200, 503}, reconnects
        print(
            f"acknowledged {len(traffic.acked)} writes, 503s {dict(traffic.refused)}, "
            f"stream (re)connections {reconnects}, "
            f"applied though answered 503: {traffic.applied_though_refused}"
        )


async def _count(traffic: Traffic, at_least: int) -> bool:
    return len(traffic.acked) >= at_least


async def _refused_on_both(traffic: Traffic) -> bool:
    return traffic.refused["A"] > 0 and traffic.refused["B"] > 0
