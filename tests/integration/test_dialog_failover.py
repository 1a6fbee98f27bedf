"""Two `transfer-bridge serve` processes on one PostgreSQL, one Asterisk, the same dialog-info
source: the subscriptions to the agents' lines are leased to one of them; SIGKILL it while the
agent is on a call and the other takes the lease, subscribes to every line afresh, and judges
the transfer the agent then makes.

As in test_asterisk_failover.py (both set up through lease_pair.py), both processes run the same
configuration (here the rig's dialog-info only: no HEP, no AMI) but for `cluster.instance` and
the HTTP port; the instance started first holds `dialog:pbx-dialog`, and the desktop talks to
the other one (the survivor) all along. Until the kill, the holder's line states bind the
session the desktop opened on the survivor (written to the store, shown by the survivor's feed
follower); after the kill the survivor's own subscriptions see the blind transfer ring the
target with the customer's number and the target answer it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.desk import (
    AGENTS,
    audit,
    clean_up_case,
    click,
    customer_reaches_agent,
    transferred,
)
from tests.integration.lease_pair import LEASE_RETRY, Pair, kill_holder, lease_pair, poll_until
from tests.rig.asterisk import RunningAsterisk
from tests.rig.postgres import Cluster

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

SOURCE = "pbx-dialog"
LEASE = f"dialog:{SOURCE}"
LINES = f"{len(AGENTS)}/{len(AGENTS)}"


def holds_dialog(h: dict[str, Any], instance: str) -> bool:
    """`instance`'s /healthz: it holds the dialog-info lease and every agent's line is
    subscribed."""
    source = h["sources"][SOURCE]
    return bool(
        h["cluster"]["leases"].get(LEASE) == {"holder": instance, "mine": True}
        and source["status"] == "subscribed"
        and source["subscribed"] == LINES
    )


@pytest.fixture
async def pair(pbx: RunningAsterisk, pg_cluster: Cluster, tmp_path: Path) -> AsyncIterator[Pair]:
    async with lease_pair(
        pbx, pg_cluster, tmp_path, source=SOURCE, holds=holds_dialog, dialog=True
    ) as pair:
        yield pair


async def kill_holder_and_wait_for_takeover(pair: Pair) -> float:
    """SIGKILL the dialog-info holder; the seconds until the survivor's /healthz shows it
    holds the lease with every line subscribed."""
    took, h = await kill_holder(pair, holds_dialog, f"subscribed {LINES} lines")
    assert h["sources"][SOURCE]["lease"] == "held", h
    return took


async def test_holder_killed_during_a_call_the_survivor_proves_the_next_blind_transfer(
    pair: Pair,
) -> None:
    rig, phones = pair.rig, pair.rig.phones
    first, sid = "s-dialog-before-kill", "s-dialog-after-kill"
    try:
        # ana is on a call, bound (through the holder's line states) to the session the
        # desktop opened on the survivor, when the holder dies
        first_ref, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", first)
        took = await kill_holder_and_wait_for_takeover(pair)
        assert took < 3 * LEASE_RETRY + 3
        # That call was up before the survivor subscribed: Asterisk names no caller for it
        # (docs/dialog-source.md), so it is not what the survivor is asked to judge. The agent
        # ends it; the next customer's call is the survivor's own from its first ring.
        await phones.hangup("1001", agent_ref)
        await phones.wait_state("2000", "DISCONNECTED", ref=first_ref)
        r = await rig.api.post(f"/v1/sessions/{first}/end", {"result": "handled"})
        assert r.status == 200, r.body
        await phones.behaviour("1002", "auto", delay_ms=300)
        customer_ref, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", sid)
        await click(rig, sid, "open", "internal", "next")
        await asyncio.sleep(1.0)
        views: list[tuple[float, dict[str, Any]]] = []
        await phones.blind_transfer("1001", agent_ref, "1002")
        final = await phones.wait_xfer_final("1001", agent_ref)
        assert final["code"] == 200, final
        s = await poll_until(rig, sid, transferred, 10, views)
        # the customer is still on the same call, now with the person at 1002
        assert phones.state_of(customer_ref) == "CONFIRMED", phones.calls_of("2000")
        t = s["transfer"]
        assert t["kind"] == "blind" and t["target"] == "1002", t
        assert t["confirmed_by"] == "phone" and t["phone"]["proved_by"] == SOURCE, t
        entries = await audit(rig, sid)
        proof = [e for e in entries if e["event"] == "transfer_succeeded"]
        assert [e["detail"].get("reason") for e in proof] == ["target_answered_customer"], entries
        assert "transferred" not in [v["transfer"]["state"] for _, v in views[:-1]]
    finally:
        await clean_up_case(phones, [rig], first, "2000", "1001", "1002")
        await clean_up_case(phones, [rig], sid, "2000", "1001", "1002")
