"""Phone evidence applied by one instance while the desktop clicks through another, at the same
moments: the writes that lose a race are decided again on what the other committed, so no click
and no piece of evidence is lost or applied twice, and the phone's proof stands."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from desktop_api.testing import Reply
from tests.desktop_api.cluster.instances import (
    Capture,
    make_tenant,
    one_bridge,
    running_instances,
    settled,
    until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
CASE = "asterisk-blind_answered"
OPEN = {"id": "s-1", "agent_id": "a-7", "customer": {"number": "2000"}}
# The desktop goes round the flow without ever answering Yes: only the phone can prove it.
FLOW = ("open", "internal", "next", "deny", "dismiss")


def phone_entries(audit: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Each piece of phone evidence the trail holds: what it was and when the phone saw it."""
    return [
        (e["event"], e["detail"].get("observed_at"), e["detail"].get("state"))
        for e in audit["entries"]
        if e["kind"] == "phone"
    ]


async def test_evidence_on_b_and_clicks_on_a_at_the_same_moments(
    tmp_path: Path, database: str
) -> None:
    _, reference_audit = await one_bridge(tmp_path / "one", CASE, OPEN)
    async with running_instances(tmp_path, database, ("A", "B")) as (a, b):
        token = (await make_tenant(a)).token
        desk = a.api(token)

        async def b_knows_the_agent() -> bool:
            return (await b.api(token).get("/v1/agents/a-7")).status == 200

        await until(b_knows_the_agent, "B knows the agent A created")
        async with b.events(token) as feed:
            r = await desk.post("/v1/sessions", {**OPEN, "call": {"state": "connected"}})
            assert r.status == 201, r.body
            (opened,) = await feed.take(1, within=5)  # B knows the session
            capture = Capture(CASE)
            answers: list[tuple[str, Reply]] = []

            async def phone() -> None:
                for n in range(len(capture.packets)):
                    capture.send_until(b.hep_port, n + 1)
                    await asyncio.sleep(0.003)

            async def desktop() -> None:
                """Click whatever the flow offers next, as fast as the answers come."""
                session = r.body
                for _ in range(500):
                    offered = [x for x in FLOW if f"transfer.{x}" in session["actions"]]
                    if not offered:
                        return  # transferred: nothing of the flow left to click
                    answer = await desk.step("s-1", offered[0])
                    answers.append((offered[0], answer))
                    if answer.status == 200:
                        session = answer.body
                    else:
                        session = (await desk.get("/v1/sessions/s-1")).body

            await asyncio.gather(phone(), desktop())
            final = await settled(a, token, "s-1")
            events = [opened, *await feed.drain(quiet=0.5)]

        assert {r.status for _, r in answers} <= {200, 409}, [
            (action, r.status, r.body) for action, r in answers if r.status not in (200, 409)
        ]
        assert final["status"] == "call_transferred", final
        t = final["transfer"]
        assert t["phone"]["proof"] == "target_answered", t
        assert t["confirmed_by"] == "phone", t
        audit = (await desk.get("/v1/sessions/s-1/audit")).body
        assert (await b.api(token).get("/v1/sessions/s-1/audit")).body == audit

        # Every piece of evidence once, in the phone's order, as one bridge alone records it.
        assert phone_entries(audit) == phone_entries(reference_audit)
        # Every accepted click is in the trail at the version its answer gave.
        desktop_at = {e["version"]: e["event"] for e in audit["entries"] if e["kind"] == "desktop"}
        clicked = [(a, r.body["version"]) for a, r in answers if r.status == 200]
        assert clicked, "some clicks were accepted"
        for action, version in clicked:
            assert desktop_at.get(version) == f"transfer.{action}", (action, version, desktop_at)
        # B's stream: every stored version once, in order, the last one as A answers it.
        stored = sorted({e["version"] for e in audit["entries"]})
        assert [e["data"]["version"] for e in events] == stored
        assert events[-1]["data"] == final
        refused = {r.body["error"]["code"] for _, r in answers if r.status == 409}
        print(f"clicks {len(answers)}: accepted {len(clicked)}, refused {sorted(refused)}")
