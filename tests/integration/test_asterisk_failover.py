"""Two `transfer-bridge serve` processes on one PostgreSQL, one Asterisk: the AMI login is leased
to one of them; SIGKILL it in the middle of a consult and the other takes over, and the transfer
still ends `transferred` only when a person at the target has the customer.

Both processes run the same configuration (the rig's AMI, one database on the test PostgreSQL,
no HEP) but for `cluster.instance` and the HTTP port. The instance started first holds
`ami:pbx-ami`; the desktop talks to the other one (the survivor) all along, as a load balancer
would once the first one is gone. Until the kill, what the holder's AMI sees of the consult is
written to the session the desktop opened on the survivor, which shows it (its feed follower);
after the kill the survivor logs in, rebuilds the calls from `CoreShowChannels`, and judges the
transfer itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.desk import (
    Rig,
    audit,
    clean_up_case,
    click,
    consult,
    failed,
    transferred,
)
from tests.integration.lease_pair import LEASE_RETRY, Pair, kill_holder, lease_pair, poll_until
from tests.rig.asterisk import RunningAsterisk
from tests.rig.postgres import Cluster

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(150)]

SOURCE = "pbx-ami"
LEASE = f"ami:{SOURCE}"


def holds_ami(h: dict[str, Any], instance: str) -> bool:
    """`instance`'s /healthz: it holds the AMI lease and is logged in."""
    return bool(
        h["cluster"]["leases"].get(LEASE) == {"holder": instance, "mine": True}
        and h["sources"][SOURCE]["status"] == "connected"
    )


@pytest.fixture
async def pair(pbx: RunningAsterisk, pg_cluster: Cluster, tmp_path: Path) -> AsyncIterator[Pair]:
    async with lease_pair(pbx, pg_cluster, tmp_path, source=SOURCE, holds=holds_ami) as pair:
        yield pair


async def kill_holder_and_wait_for_takeover(pair: Pair) -> float:
    """SIGKILL the AMI holder; the seconds until the survivor's /healthz shows it holds the
    lease and is logged in to the AMI."""
    took, _ = await kill_holder(pair, holds_ami, "logged in to the AMI")
    return took


async def customer_on_the_agent(rig: Rig, sid: str) -> tuple[str, str]:
    """The customer 2000 calls agent ana (1001), who answers; the desktop opens the session on
    the survivor. Refs of the customer's call and the agent's leg."""
    phones = rig.phones
    since = len(phones.events)
    call = await phones.call("2000", "1001")
    ringing = await phones.wait_state("1001", "INCOMING", since=since)
    await asyncio.sleep(0.3)
    await phones.answer("1001", ringing["ref"])
    await phones.wait_state("2000", "CONFIRMED", ref=call["ref"], since=since)
    body = {"id": sid, "agent_id": "ana", "customer": {"number": "2000"}}
    body["call"] = {"state": "connected", "sip_call_id": ringing["call_id"]}
    r = await rig.api.post("/v1/sessions", body)
    assert r.status == 201, r.body
    await click(rig, sid, "open", "internal")
    return str(call["ref"]), str(ringing["ref"])


async def test_holder_killed_during_an_answered_consult_the_survivor_proves_the_transfer(
    pair: Pair,
) -> None:
    rig, phones = pair.rig, pair.rig.phones
    sid = "s-failover-answered"
    try:
        customer_ref, agent_ref = await customer_on_the_agent(rig, sid)
        consult_ref = await consult(rig, "1001", agent_ref, "1002")  # 1002 answers the consult
        # the holder saw the consult on the AMI and wrote it to the session the desktop opened
        # on the survivor, which shows it (its feed follower)
        views: list[tuple[float, dict[str, Any]]] = []
        s = await poll_until(
            rig, sid, lambda s: s["transfer"]["phone"]["consult"] == "answered", 10, views
        )
        assert s["call"]["state"] == "on_hold", s
        took = await kill_holder_and_wait_for_takeover(pair)
        assert took < 3 * LEASE_RETRY + 3
        await click(rig, sid, "next")
        await asyncio.sleep(0.5)
        await phones.attended_transfer("1001", agent_ref, consult_ref)
        final = await phones.wait_xfer_final("1001", agent_ref)
        assert final["code"] == 200, final
        s = await poll_until(rig, sid, transferred, 10, views)
        # the customer is still on the same call, now with the person at 1002
        assert phones.state_of(customer_ref) == "CONFIRMED", phones.calls_of("2000")
        t = s["transfer"]
        assert t["kind"] == "attended" and t["confirmed_by"] == "phone", t
        assert t["phone"]["proof"] == "consult_replaced", t
        entries = await audit(rig, sid)
        proof = [e for e in entries if e["event"] == "transfer_succeeded"]
        assert proof and proof[0]["detail"]["source"] == "pbx-ami", entries
        assert "transferred" not in [v["transfer"]["state"] for _, v in views[:-1]]
    finally:
        await clean_up_case(phones, [rig], sid, "2000", "1001", "1002")


async def test_holder_killed_during_a_ringing_consult_nobody_answers_not_transferred(
    pair: Pair,
) -> None:
    rig, phones = pair.rig, pair.rig.phones
    sid = "s-failover-unanswered"
    try:
        await phones.behaviour("1002", "manual")  # rings, nobody picks up
        _, agent_ref = await customer_on_the_agent(rig, sid)
        since = len(phones.events)
        await phones.hold("1001", agent_ref)
        consult_call = await phones.call("1001", "1102")  # 1002 with an 8 s ring time-out
        await phones.wait_state("1001", "EARLY", ref=consult_call["ref"], since=since)
        views: list[tuple[float, dict[str, Any]]] = []
        await poll_until(  # written by the holder, shown by the survivor
            rig, sid, lambda s: s["transfer"]["phone"]["consult"] == "ringing", 10, views
        )
        took = await kill_holder_and_wait_for_takeover(pair)
        assert took < 3 * LEASE_RETRY + 3
        await click(rig, sid, "next")
        # semi-attended: the agent hands the customer over while the target still rings
        await phones.attended_transfer("1001", agent_ref, str(consult_call["ref"]))

        def gave_up(e: dict[str, Any]) -> bool:
            return bool(e.get("ev") == "call_state" and e.get("phone") == "1002"
                        and e.get("state") == "DISCONNECTED")  # fmt: skip

        waiter = asyncio.create_task(phones.wait_for(gave_up, 20, since=since))
        while not waiter.done():
            r = await rig.api.get(f"/v1/sessions/{sid}")
            views.append((time.time(), r.body))
            await asyncio.sleep(0.1)
        await waiter
        # A few seconds more: the verdict, if any, is in by then.
        with contextlib.suppress(AssertionError):
            await poll_until(rig, sid, failed, 4, views)
        shown = [v["transfer"]["state"] for _, v in views]
        assert "transferred" not in shown, shown
        s = views[-1][1]
        # The PBX's "success" at the REFER is not proof; nobody answered, so the session failed
        # with the target's reason. The survivor never saw the consult's Dial: it knows the
        # ringing target channel from the channel list (same Linkedid as the consult).
        t = s["transfer"]
        assert t["phone"]["proof"] == "pbx_reported", t
        assert t["state"] == "failed" and t["phone"]["failure"] == "target_no_answer", t
        print(f"unanswered after failover: {t['state']}, proof {t['phone']['proof']}")
    finally:
        await clean_up_case(phones, [rig], sid, "2000", "1001", "1002")
