"""One capture point duplicating its HEP stream to two instances (as Kamailio's siptrace or
heplify can) gives one outcome: exactly what one bridge receiving the stream once records, each
change once in the audit trail and in both instances' streams, versions consecutive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.desktop_api.cluster.instances import (
    Capture,
    make_tenant,
    one_bridge,
    running_instances,
    until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
CASE = "asterisk-blind_answered"  # the target answers: the phone alone proves the transfer
OPEN = {"id": "s-1", "agent_id": "a-7", "customer": {"number": "2000"}}


def trail(audit: dict[str, Any]) -> list[tuple[int, str, str, Any]]:
    """The audit trail without the bridge's own times."""
    return [(e["version"], e["kind"], e["event"], e["detail"]) for e in audit["entries"]]


def timeless(session: dict[str, Any]) -> dict[str, Any]:
    """A session without the times the bridge's own clock gave (phone times stay)."""
    out = dict(session)
    for key in ("created_at", "ended_at"):
        out.pop(key, None)
    return out


async def test_the_same_capture_at_two_instances_gives_one_outcome(
    tmp_path: Path, database: str
) -> None:
    reference, reference_audit = await one_bridge(tmp_path / "one", CASE, OPEN)
    assert reference["transfer"]["state"] == "transferred", reference  # the recording's verdict

    async with running_instances(tmp_path, database, ("A", "B")) as (a, b):
        token = (await make_tenant(a)).token

        async def b_knows_the_agent() -> bool:
            return (await b.api(token).get("/v1/agents/a-7")).status == 200

        await until(b_knows_the_agent, "B knows the agent A created")
        async with a.events(token) as feed_a, b.events(token) as feed_b:
            r = await a.api(token).post("/v1/sessions", OPEN)
            assert r.status == 201, r.body
            # Both instances know the session before the capture starts (as in the reference).
            for feed in (feed_a, feed_b):
                (opened,) = await feed.take(1, within=5)
                assert opened["data"]["version"] == 1
            # Every packet to both, interleaved: A first, then B first, and so on.
            capture = Capture(CASE)
            for n, packet in enumerate(capture.packets):
                first, second = (a, b) if n % 2 == 0 else (b, a)
                first.send_hep([packet])
                second.send_hep([packet])

            async def settled() -> dict[str, Any] | None:
                s = (await a.api(token).get("/v1/sessions/s-1")).body
                return s if s["version"] >= reference["version"] else None

            await until(settled, "the outcome on A", 10)
            # Anything either instance still applies would show within a catch-up or two.
            seen_a = await feed_a.drain(quiet=2.5)
            seen_b = await feed_b.drain(quiet=0.5)

        final = (await a.api(token).get("/v1/sessions/s-1")).body
        assert (await b.api(token).get("/v1/sessions/s-1")).body == final
        assert timeless(final) == timeless(reference)
        audit = (await a.api(token).get("/v1/sessions/s-1/audit")).body
        assert (await b.api(token).get("/v1/sessions/s-1/audit")).body == audit
        assert trail(audit) == trail(reference_audit)
        ignored = [e for e in audit["entries"] if "ignored" in e["detail"]]
        assert not [
            e
            for e in ignored
            if e["detail"]["ignored"] in ("duplicate", "same_attempt_other_source")
        ], ignored

        # Every stored version once, in order, none skipped (a binding and the evidence that
        # caused it are one write and one version).
        stored = sorted({e["version"] for e in audit["entries"]})
        assert stored == list(range(1, stored[-1] + 1)), stored
        for seen in (seen_a, seen_b):
            versions = [e["data"]["version"] for e in seen]
            assert [1, *versions] == stored, (versions, stored)
            cursors = [int(e["id"]) for e in seen]
            assert cursors == list(range(cursors[0], cursors[0] + len(seen))), cursors
        assert [(e["id"], e["data"]) for e in seen_a] == [(e["id"], e["data"]) for e in seen_b]
        assert seen_a[-1]["data"] == final
