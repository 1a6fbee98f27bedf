"""Live latency on the real rig: the target answers -> the desktop sees `transferred`.

    python bench/transfer_latency.py [--transfers 20] [--sources both|hep|ami] [--ring-ms 1500]

Starts a real Asterisk 22 (scripts/asterisk, chroot), a real `transfer-bridge serve` process
with HEP (res_hep) and/or AMI sources, and pjsua2 phones. Each round the customer (2000) calls
the agent (1001), the agent answers, the desktop opens a session and long-polls it
(`GET /v1/sessions/{id}?wait=25&version=N`), and a second later the agent blind-transfers to
1002, which rings for `--ring-ms` and then answers. Per transfer it prints:

- `answer`: when the target's phone sent its 200 OK (the pjsua2 phone's own `answered` report,
  wall clock of this machine): the moment a person took the customer. The proof is target-side:
  nothing before it may show `transferred`, so this is the reference.
- `api`: when the long-poll answer showing `transfer.state = transferred` reached the client.
- latency = api - answer, and which source's evidence counted first (`proved_by`); a round that
  showed `transferred` before the answer is reported as an error.

Needs root (chroot) and scripts/rig/install.sh. Bounded: about 5 s per transfer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desktop_api.testing import ApiClient
from tests.integration.bridge_process import running_bridge_process
from tests.integration.desk import hang_up_everything, tenant_with_agents
from tests.rig.asterisk import AsteriskSettings, running_asterisk
from tests.rig.phones import Phones, running_phones


def loop_lag(metrics: str) -> dict[str, float]:
    """The bridge's own event-loop lag figures from its /metrics text."""
    values = {}
    for line in metrics.splitlines():
        if line.startswith("transfer_bridge_event_loop_lag"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    count = values["transfer_bridge_event_loop_lag_seconds_count"]
    within = values['transfer_bridge_event_loop_lag_seconds_bucket{le="0.01"}']
    worst = values["transfer_bridge_event_loop_lag_worst_seconds"]
    return {"worst": worst, "count": count, "over_10ms": count - within}


async def one_transfer(api: ApiClient, phones: Phones, n: int) -> dict[str, Any]:
    sid = f"lat-{n}"
    since = len(phones.events)
    call = await phones.call("2000", "1001")
    ringing = await phones.wait_state("1001", "INCOMING", since=since)
    await phones.answer("1001", ringing["ref"])
    await phones.wait_state("2000", "CONFIRMED", ref=call["ref"], since=since)
    body = {"id": sid, "agent_id": "ana", "customer": {"number": "2000"}}
    body["call"] = {"state": "connected"}
    r = await api.post("/v1/sessions", body)
    assert r.status == 201, r.body
    version = r.body["version"]
    await asyncio.sleep(1.0)  # a person, not a script (Asterisk refuses an instant REFER)

    async def watch() -> float:
        nonlocal version
        while True:
            r = await api.get(f"/v1/sessions/{sid}?wait=25&version={version}")
            seen = time.time()
            assert r.status == 200, r.body
            version = r.body["version"]
            if r.body["transfer"]["state"] == "transferred":
                return seen

    watcher = asyncio.create_task(watch())
    mark = len(phones.events)
    await phones.blind_transfer("1001", ringing["ref"], "1002")
    seen_at = await asyncio.wait_for(watcher, 20)
    answered = await phones.wait_for(
        lambda e: e.get("ev") == "answered" and e.get("phone") == "1002", since=mark
    )
    wire = float(answered["t"])
    r = await api.get(f"/v1/sessions/{sid}")
    proved_by = r.body["transfer"]["phone"]["proved_by"]
    proof = r.body["transfer"]["phone"]["proof"]
    r = await api.post(f"/v1/sessions/{sid}/end", {"result": "bench"})
    assert r.status == 200, r.body
    await hang_up_everything(phones, "2000", "1002")  # nothing left up for the next round
    await asyncio.sleep(0.3)
    return {"latency_ms": (seen_at - wire) * 1000, "proved_by": proved_by, "proof": proof}


async def run(transfers: int, sources: str, ring_ms: int) -> None:
    hep, ami = sources in ("both", "hep"), sources in ("both", "ami")
    with tempfile.TemporaryDirectory(prefix="tb-latency-") as tmp:
        work = Path(tmp)
        settings = AsteriskSettings.fresh()
        async with (
            running_asterisk(settings, work) as pbx,
            running_bridge_process(work, pbx, hep=hep, ami=ami) as bridge,
            aiohttp.ClientSession() as http,
            running_phones(pbx.phone_ports, pbx.sip, work / "phones") as phones,
        ):
            api = await tenant_with_agents(http, bridge, (("ana", "1001"), ("ben", "1002")))
            await phones.behaviour("1002", "auto", delay_ms=ring_ms)
            rows = []
            for n in range(transfers):
                row = await one_transfer(api, phones, n)
                rows.append(row)
                ms, first = row["latency_ms"], row["proved_by"]
                early = "  ERROR: transferred before the answer" if ms < 0 else ""
                print(f"  transfer {n + 1:3d}: {ms:7.1f} ms  (first proof: {first}){early}")
            async with http.get(bridge.url + "/metrics") as r:
                lag = loop_lag(await r.text())
    lat = sorted(r["latency_ms"] for r in rows)
    firsts: dict[str, int] = {}
    for r in rows:
        firsts[r["proved_by"]] = firsts.get(r["proved_by"], 0) + 1
    print()
    print(
        f"sources: {sources}; reference: the target phone's 200 OK; target rang {ring_ms} ms; "
        f"{len(lat)} transfers; proof grades {sorted({r['proof'] for r in rows})}"
    )
    print("| median | p90 | worst | best |")
    print("|---|---|---|---|")
    p90 = lat[max(0, int(len(lat) * 0.9) - 1)]
    print(
        f"| {statistics.median(lat):.1f} ms | {p90:.1f} ms | {lat[-1]:.1f} ms | {lat[0]:.1f} ms |"
    )
    print(f"first proof by source: {firsts}")
    print(
        f"bridge event-loop lag over the run: worst {lag['worst'] * 1000:.1f} ms; "
        f"{lag['over_10ms']:.0f} of {lag['count']:.0f} samples later than 10 ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--transfers", type=int, default=20)
    parser.add_argument("--sources", choices=("both", "hep", "ami"), default="both")
    parser.add_argument("--ring-ms", type=int, default=1500, help="how long the target rings")
    args = parser.parse_args()
    asyncio.run(run(args.transfers, args.sources, args.ring_ms))


if __name__ == "__main__":
    main()
