"""Two `transfer-bridge serve` processes on one PostgreSQL, one Asterisk, sharing one leased
source (AMI or dialog-info), for the takeover tests (test_asterisk_failover.py,
test_dialog_failover.py).

Both processes run the same configuration but for `cluster.instance` and the HTTP port. The
instance started first ("bridge-a") holds the lease; the desktop talks to the other one
("bridge-b", the survivor) all along, as a load balancer would once the first one is gone.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from desktop_api.testing import ApiClient
from tests.integration.bridge_process import BridgeProcess, cluster_config, free_tcp_port
from tests.integration.desk import Rig, audit, tenant_with_agents
from tests.rig.asterisk import RunningAsterisk
from tests.rig.phones import running_phones
from tests.rig.postgres import Cluster

LEASE_RETRY = 1.0  # the default

# `holds(health, instance)`: that instance's /healthz says it holds the lease and runs the source.
Holds = Callable[[dict[str, Any], str], bool]


@dataclass
class Pair:
    holder: BridgeProcess  # started first: holds the lease, killed in the test
    survivor: BridgeProcess  # stands by; the desktop's bridge
    rig: Rig  # phones, and the survivor's API


@asynccontextmanager
async def lease_pair(
    pbx: RunningAsterisk,
    pg_cluster: Cluster,
    tmp_path: Path,
    *,
    source: str,
    holds: Holds,
    dialog: bool = False,
) -> AsyncIterator[Pair]:
    """bridge-a holding `source`'s lease (`holds`), bridge-b standing by and naming it."""
    lease = f"{'dialog' if dialog else 'ami'}:{source}"
    store_url = pg_cluster.create_database(f"failover{time.monotonic_ns()}")
    bridges: list[BridgeProcess] = []
    for name in ("bridge-a", "bridge-b"):
        folder = tmp_path / name
        folder.mkdir()
        port = free_tcp_port()
        config = cluster_config(pbx, port, store_url, name, LEASE_RETRY, dialog=dialog)
        bridges.append(BridgeProcess(folder, config, port))
    a, b = bridges
    async with (
        aiohttp.ClientSession() as http,
        running_phones(pbx.phone_ports, pbx.sip, tmp_path / "phones") as phones,
    ):
        try:
            await a.start(sources=(source,))
            api = await tenant_with_agents(http, a)  # the account and agents, written by a
            # a logs in, or subscribes to each agent's line as the agents appear
            await a.wait_for_health(http, lambda h: holds(h, "bridge-a"), 10)
            await b.start(sources=())  # reads the accounts and agents a wrote
            # its first lease check comes within a moment of starting
            h = await b.wait_for_health(
                http, lambda h: h["cluster"]["leases"][lease]["holder"] is not None, 5
            )
            assert h["sources"][source]["status"] == "standby", h
            assert h["cluster"]["leases"] == {lease: {"holder": "bridge-a", "mine": False}}, h
            # from here on the desktop talks to b only
            rig = Rig(pbx, b, phones, ApiClient(http, b.url, api.token), http)
            yield Pair(a, b, rig)
        finally:
            for bridge in (a, b):
                if bridge.proc is not None and bridge.proc.poll() is None:
                    await bridge.stop()


async def kill_holder(pair: Pair, holds: Holds, what: str) -> tuple[float, dict[str, Any]]:
    """SIGKILL the holder; the seconds until the survivor's /healthz shows `holds` (printed
    as the failover time, `what` naming the moment), and that /healthz."""
    proc = pair.holder.proc
    assert proc is not None
    killed = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    h = await pair.survivor.wait_for_health(
        pair.rig.http, lambda h: holds(h, "bridge-b"), 3 * LEASE_RETRY + 10
    )
    took = time.monotonic() - killed
    print(f"failover: SIGKILL -> survivor {what} in {took:.3f} s")
    return took, h


async def poll_until(
    rig: Rig, sid: str, done: Any, within: float, views: list[tuple[float, dict[str, Any]]]
) -> dict[str, Any]:
    """Poll the session every 0.1 s (as a desktop would), keeping every view with its time."""
    deadline = time.time() + within
    while True:
        r = await rig.api.get(f"/v1/sessions/{sid}")
        assert r.status == 200, r.body
        views.append((time.time(), r.body))
        if done(r.body):
            return dict(r.body)
        assert time.time() < deadline, f"{r.body}\n{await audit(rig, sid)}"
        await asyncio.sleep(0.1)
