"""AMI failover time: SIGKILL of the instance holding the AMI lease -> the other instance logged
in to the AMI and resynced.

    python bench/ami_failover.py [--runs 10] [--lease-retry 1.0]

Starts a real Asterisk 22 (scripts/asterisk, chroot), a throwaway PostgreSQL cluster
(tests/rig/postgres.py) and two `transfer-bridge serve` processes with the same configuration
(the rig's AMI, one database) but for `cluster.instance` and the HTTP port. Each run SIGKILLs
the instance holding `ami:pbx-ami` and measures, on the survivor:

- `lease`: its log's `lease_acquired` (the server dropped the dead connection's lock, the
  standby's next try took it: at most `lease_retry` after the kill, plus the server's clean-up);
- `login`: its log's `ami_connected` (TCP connect, banner, Login accepted);
- `resync`: its log's `ami_resynced` (the `CoreShowChannels` list complete: the calls already up
  are known again; from here AMI evidence is understood as before the kill);
- `healthz`: its `/healthz` polled every 10 ms shows it holds the lease and is connected.

The kill comes at a random moment of the standby's `lease_retry` cycle (a crash does not wait
for it). The killed instance is then started again (as the standby) and the next run kills the other
one. Prints each run and the median and worst of each column. No call is up during the runs,
so the channel list is short (a busy PBX lists more channels).

Needs root (chroot, the PostgreSQL server runs as `postgres`) and scripts/rig/install.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.bridge_process import BridgeProcess, cluster_config, free_tcp_port
from tests.rig.asterisk import AsteriskSettings, running_asterisk
from tests.rig.postgres import running_cluster

LEASE = "ami:pbx-ami"
EVENTS = ("lease_acquired", "ami_connected", "ami_resynced")


def holds(h: dict[str, Any], instance: str) -> bool:
    return bool(
        h["cluster"]["leases"].get(LEASE) == {"holder": instance, "mine": True}
        and h["sources"]["pbx-ami"]["status"] == "connected"
    )


def log_times(bridge: BridgeProcess, after: float) -> dict[str, float]:
    """Wall-clock time of the first of each of EVENTS in the bridge's latest log after `after`."""
    found: dict[str, float] = {}
    for line in bridge.logs[-1].read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        event = entry.get("event")
        if event in EVENTS and event not in found and "timestamp" in entry:
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            if at >= after:
                found[event] = at
    return found


async def wait_standby(http: aiohttp.ClientSession, bridge: BridgeProcess, holder: str) -> None:
    """Until the standby's /healthz names the holder (its first lease check is done)."""
    deadline = time.monotonic() + 10
    while True:
        h = await bridge.health(http)
        if h["cluster"]["leases"].get(LEASE, {}).get("holder") == holder:
            return
        assert time.monotonic() < deadline, h
        await asyncio.sleep(0.02)


async def one_run(
    http: aiohttp.ClientSession, holder: BridgeProcess, survivor: BridgeProcess, name: str
) -> dict[str, float]:
    proc = holder.proc
    assert proc is not None
    killed = time.time()
    proc.send_signal(signal.SIGKILL)
    while True:
        if holds(await survivor.health(http), name):
            seen = time.time()
            break
        assert time.time() - killed < 30, "no takeover within 30 s"
        await asyncio.sleep(0.01)
    await asyncio.to_thread(proc.wait, 10)
    deadline = time.time() + 5
    while True:  # the resync's list comes right after the login
        times = log_times(survivor, killed)
        if len(times) == len(EVENTS) or time.time() > deadline:
            break
        await asyncio.sleep(0.02)
    row = {"healthz": (seen - killed) * 1000}
    for event, column in zip(EVENTS, ("lease", "login", "resync"), strict=True):
        row[column] = (times[event] - killed) * 1000 if event in times else float("nan")
    return row


async def run(runs: int, lease_retry: float) -> None:
    with tempfile.TemporaryDirectory(prefix="tb-failover-") as tmp:
        work = Path(tmp)
        with running_cluster() as pg:
            store_url = pg.create_database("failover")
            async with (
                running_asterisk(AsteriskSettings.fresh(), work) as pbx,
                aiohttp.ClientSession() as http,
            ):
                bridges: dict[str, BridgeProcess] = {}
                for name in ("bridge-a", "bridge-b"):
                    folder = work / name
                    folder.mkdir()
                    port = free_tcp_port()
                    config = cluster_config(pbx, port, store_url, name, lease_retry)
                    bridges[name] = BridgeProcess(folder, config, port)
                try:
                    await bridges["bridge-a"].start(sources=("pbx-ami",))
                    await bridges["bridge-b"].start(sources=())
                    holder, survivor = "bridge-a", "bridge-b"
                    rows = []
                    for n in range(runs):
                        await wait_standby(http, bridges[survivor], holder)
                        # the kill lands anywhere in the standby's retry cycle, as a crash would
                        await asyncio.sleep(random.uniform(0, lease_retry))
                        row = await one_run(http, bridges[holder], bridges[survivor], survivor)
                        rows.append(row)
                        print(
                            f"  run {n + 1:2d}: lease {row['lease']:6.0f} ms, login "
                            f"{row['login']:6.0f} ms, resync {row['resync']:6.0f} ms, /healthz "
                            f"{row['healthz']:6.0f} ms  ({holder} killed, {survivor} took over)"
                        )
                        await bridges[holder].start(sources=())  # back, as the standby
                        holder, survivor = survivor, holder
                finally:
                    for bridge in bridges.values():
                        if bridge.proc is not None and bridge.proc.poll() is None:
                            await bridge.stop()
    print()
    print(
        f"AMI failover, SIGKILL of the holder -> the other instance; lease_retry {lease_retry:g} s;"
        f" {len(rows)} runs (ms since the kill)"
    )
    print("| | lease taken | AMI login | resync done | /healthz shows it |")
    print("|---|---|---|---|---|")
    columns = ("lease", "login", "resync", "healthz")
    for label, pick in (("median", statistics.median), ("worst", max)):
        cells = " | ".join(f"{pick(r[c] for r in rows):.0f}" for c in columns)
        print(f"| {label} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--lease-retry", type=float, default=1.0, help="cluster.lease_retry of both instances"
    )
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.lease_retry))


if __name__ == "__main__":
    main()
