"""Three instances on one database are one service: the desktop clicks on A, the phone's evidence
reaches B as HEP (a recorded real Asterisk transfer), a second desktop follows on C's stream.

The recording is a blind transfer to a target that plays early media before it answers: the
PBX's NOTIFY `200 OK` comes first, the target's own answer later. C's stream must show every
version of the session, in order, and `transferred` only after the target answered; every
instance answers the same; a stream cut on C resumes on B from C's cursor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.desktop_api.cluster.instances import (
    Capture,
    Instance,
    make_tenant,
    running_instances,
    settled,
    until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def session(instance: Instance, token: str, sid: str = "s-1") -> dict[str, Any]:
    r = await instance.api(token).get(f"/v1/sessions/{sid}")
    assert r.status == 200, (instance.name, r.status, r.body)
    return r.body  # type: ignore[no-any-return]


async def agent_known(instances: list[Instance], token: str, agent: str) -> bool:
    """Every instance knows the agent (an admin's change on one reaches the others)."""
    for instance in instances:
        r = await instance.api(token).get(f"/v1/agents/{agent}")
        if r.status != 200:
            return False
    return True


async def test_clicks_on_a_evidence_on_b_stream_on_c(tmp_path: Path, database: str) -> None:
    async with running_instances(tmp_path, database, ("A", "B", "C")) as (a, b, c):
        tenant = await make_tenant(a)
        token = tenant.token
        await until(lambda: agent_known([b, c], token, "a-7"), "B and C know the agent", 5)
        desk_a, desk_b = a.api(token), b.api(token)
        capture = Capture("asterisk-blind_early_media_answer")

        async with c.events(token) as feed:
            # The customer's request reaches the desktop (through A) as the phone rings.
            r = await desk_a.post(
                "/v1/sessions", {"id": "s-1", "agent_id": "a-7", "customer": {"number": "2000"}}
            )
            assert r.status == 201, r.body
            # The call as B's capture sees it, up to the agent's REFER.
            capture.send_until(b.hep_port, capture.index("refer"))

            async def connected() -> bool:
                s = await session(a, token)
                return s["call"]["state"] == "connected" and s["transfer"]["state"] == "none"

            await until(connected, "B's evidence binds the session A opened", 5)
            for step in ("open", "internal", "next"):
                r = await desk_a.step("s-1", step)
                assert r.status == 200, (step, r.body)
            assert r.body["transfer"]["state"] == "confirming"

            # The PBX says 200 OK while the target still plays early media: not proof.
            capture.send_until(b.hep_port, capture.index("target answers"))

            async def pbx_reported() -> dict[str, Any] | None:
                s = await session(a, token)
                return s if s["transfer"]["phone"]["proof"] == "pbx_reported" else None

            reported = await until(pbx_reported, "the PBX's report reaches A", 5)
            assert reported["transfer"]["state"] == "confirming", reported["transfer"]
            assert reported["status"] == "active"

            # The target answers with the customer.
            capture.send_until(b.hep_port)

            async def transferred() -> dict[str, Any] | None:
                s = await session(a, token)
                return s if s["transfer"]["state"] == "transferred" else None

            await until(transferred, "the target's answer reaches A", 5)
            final = await settled(a, token, "s-1")
            assert final["status"] == "call_transferred"
            assert final["transfer"]["confirmed_by"] == "phone"
            assert final["transfer"]["phone"]["proof"] == "target_answered"
            assert final["transfer"]["phone"]["proved_by"] == "capture"
            assert final["transfer"]["phone"]["handoff_at"] is not None

            # C's stream, up to the last version.
            events = []
            while not events or events[-1]["data"]["version"] < final["version"]:
                event = await feed.next(within=5)
                assert event is not None, f"C's stream stopped at {events[-1:]}"
                events.append(event)
            await feed.quiet(0.5)
        # Every stored version, in order, once, none skipped (a binding made with the evidence
        # that caused it is one write and one version), as the audit trail shows them.
        trails = [(await x.api(token).get("/v1/sessions/s-1/audit")).body for x in (a, b, c)]
        stored = sorted({e["version"] for e in trails[0]["entries"]})
        versions = [e["data"]["version"] for e in events]
        assert versions == stored and stored[-1] == final["version"], (versions, stored)
        assert versions == list(range(versions[0], versions[-1] + 1)), versions
        cursors = [int(e["id"]) for e in events]  # the account's own count: only s-1 moved
        assert cursors == list(range(cursors[0], cursors[0] + len(events))), cursors
        assert {e["data"]["id"] for e in events} == {"s-1"}
        states = [e["data"]["transfer"]["state"] for e in events]
        first = states.index("transferred")
        assert "transferred" not in states[:first]
        proved = events[first]["data"]["transfer"]["phone"]
        assert proved["proof"] == "target_answered" and proved["handoff_at"] is not None
        assert [e["data"]["transfer"]["phone"]["proof"] for e in events[:first]].count(
            "pbx_reported"
        ) >= 1, "the PBX's report showed before the target answered"
        assert events[-1]["data"] == final

        # Every instance answers the same: the session, its audit trail, the agent.
        for instance in (b, c):
            assert await session(instance, token) == final, instance.name
        assert trails[0] == trails[1] == trails[2]
        assert [e["version"] for e in trails[0]["entries"]] == sorted(
            e["version"] for e in trails[0]["entries"]
        )
        for instance in (a, b, c):
            agent = (await instance.api(token).get("/v1/agents/a-7")).body
            assert agent["can_take_requests"] is False, (instance.name, agent)
            # Each instance names itself, and follows the others by notification.
            status, health = await instance.healthz()
            assert status == 200, health
            cluster = health["cluster"]
            assert (cluster["instance"], cluster["store"]) == (instance.name, "postgresql")
            assert cluster["feed"]["listening"] is True, cluster
        for instance in (b, c):  # A's clicks, read from the stored feed
            (_, health) = await instance.healthz()
            assert health["cluster"]["feed"]["changes_read"] > 0, (instance.name, health)

        # A desktop whose stream on C was cut after the middle event resumes on B.
        middle = len(events) // 2
        async with b.events(token, last_event_id=events[middle]["id"]) as resumed:
            rest = await resumed.take(len(events) - middle - 1, within=5)
            await resumed.quiet(0.5)
        assert [(e["id"], e["data"]) for e in rest] == [
            (e["id"], e["data"]) for e in events[middle + 1 :]
        ]

        # A change made now on B reaches a stream on C that resumes from the newest cursor.
        async with c.events(token, last_event_id=events[-1]["id"]) as live:
            await live.quiet(0.3)
            r = await desk_b.post("/v1/sessions/s-1/end", {"result": "sent to support"})
            assert r.status == 200, r.body
            (ended,) = await live.take(1, within=5)
        assert ended["data"] == r.body
        assert int(ended["id"]) == cursors[-1] + 1


async def test_a_cursor_fresh_from_one_instance_resumes_at_once_on_another(
    tmp_path: Path, database: str
) -> None:
    """A desktop moved to B the moment A's stream gave it a cursor (before B may have read that
    change): B replays from the cursor, it does not start over with a snapshot."""
    async with running_instances(tmp_path, database, ("A", "B")) as (a, b):
        token = (await make_tenant(a)).token
        await until(lambda: agent_known([b], token, "a-7"), "B knows the agent")
        desk_a = a.api(token)
        body = {"id": "s-1", "agent_id": "a-7", "customer": {"number": "+34900000001"}}
        r = await desk_a.post("/v1/sessions", {**body, "call": {"state": "connected"}})
        assert r.status == 201, r.body
        async with a.events(token) as on_a:
            await on_a.take(1)  # the open session
            for _ in range(20):
                r = await desk_a.step("s-1", "open")
                assert r.status == 200, r.body
                (event,) = await on_a.take(1)
                assert event["data"]["version"] == r.body["version"]
                async with b.events(token, last_event_id=event["id"]) as on_b:
                    await on_b.quiet(0.05)  # up to date: nothing to replay, no snapshot
                    r = await b.api(token).step("s-1", "dismiss")
                    assert r.status == 200, r.body
                    (after,) = await on_b.take(1)
                    assert int(after["id"]) == int(event["id"]) + 1, (event["id"], after["id"])
                    assert after["data"] == r.body
                (mirrored,) = await on_a.take(1)
                assert mirrored == after
