"""Session writes and reads per second through the HTTP API, on SQLite and on PostgreSQL.

    python bench/store_throughput.py [--seconds 5] [--clients 16] [--agents 16]

For each store it starts one bridge in this process (the real app on a real socket; SQLite in a
temporary folder, PostgreSQL as a throwaway cluster of Debian's server, see tests/rig/postgres.py)
and measures, with `--clients` concurrent HTTP clients:

- writes/s: desktop clicks that each store a new session version with its audit line and
  change-feed entry (`POST /v1/sessions`, then the transfer steps, then `/end`, one agent per
  client so clicks never wait on another agent's lock);
- GET/s: `GET /v1/sessions/{id}` of an open session.

Several instances on one PostgreSQL database: bench/cluster_throughput.py.
Figures are for this machine only; compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desktop_api.testing import ApiClient, running_bridge, settings_for
from tests.rig.postgres import running_cluster

ADMIN = "bench-admin"
CLICKS = ("open", "internal", "next")


async def _tenant(admin: ApiClient, agents: int) -> ApiClient:
    r = await admin.post("/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True})
    assert r.status == 201, r.body
    r = await admin.post("/v1/accounts/acme/tokens")
    api = admin.with_token(r.body["token"])
    for i in range(agents):
        r = await api.put(
            f"/v1/agents/a-{i}", {"name": f"A{i}", "phone": {"sip_uri": f"sip:{1000 + i}@pbx"}}
        )
        assert r.status == 201, r.body
    return api


async def _writer(api: ApiClient, agent: int, until: float, counts: list[int]) -> None:
    n = 0
    while time.perf_counter() < until:
        sid = f"w-{agent}-{n}"
        n += 1
        body = {"id": sid, "agent_id": f"a-{agent}", "customer": {"number": "+34900000001"},
                "call": {"state": "connected"}}  # fmt: skip
        r = await api.post("/v1/sessions", body)
        assert r.status == 201, r.body
        counts[agent] += 1
        for action in CLICKS:
            r = await api.post(f"/v1/sessions/{sid}/transfer", {"action": action})
            assert r.status == 200, r.body
            counts[agent] += 1
        r = await api.post(f"/v1/sessions/{sid}/end", {"result": "bench"})
        assert r.status == 200, r.body
        counts[agent] += 1


async def _reader(api: ApiClient, sid: str, until: float, counts: list[int], i: int) -> None:
    while time.perf_counter() < until:
        r = await api.get(f"/v1/sessions/{sid}")
        assert r.status == 200, r.body
        counts[i] += 1


async def measure(store_url: str, workdir: Path, seconds: float, clients: int) -> dict[str, float]:
    settings = replace(settings_for(workdir, ADMIN), store_url=store_url)
    async with running_bridge(settings) as bridge, aiohttp.ClientSession() as http:
        api = await _tenant(ApiClient(http, bridge.url, ADMIN), clients)
        counts = [0] * clients
        until = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(_writer(api, i, until, counts) for i in range(clients)))
        writes = sum(counts) / (time.perf_counter() - started)
        body = {"id": "r-1", "agent_id": "a-0", "customer": {"number": "+34900000001"}}
        r = await api.post("/v1/sessions", body)
        assert r.status == 201, r.body
        counts = [0] * clients
        until = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(_reader(api, "r-1", until, counts, i) for i in range(clients)))
        reads = sum(counts) / (time.perf_counter() - started)
    return {"writes": writes, "reads": reads}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="runs per row; the median is kept")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        cluster = stack.enter_context(running_cluster())
        for n in range(args.rounds):
            for kind in rows:
                work = Path(tmp) / f"{kind}-{n}"
                work.mkdir()
                url = (
                    f"sqlite:///{work / 'bridge.db'}"
                    if kind == "sqlite"
                    else cluster.create_database(f"bench_{n}")
                )
                rows[kind].append(await measure(url, work, args.seconds, args.clients))
    print(f"{args.clients} clients, {args.seconds:g} s per run, median of {args.rounds}")
    print(f"{'store':<28}{'writes/s':>10}{'GET/s':>10}")
    base = {k: statistics.median(r[k] for r in rows["sqlite"]) for k in ("writes", "reads")}
    for kind, label in (("sqlite", "1 instance, SQLite"), ("postgres", "1 instance, PostgreSQL")):
        w = statistics.median(r["writes"] for r in rows[kind])
        g = statistics.median(r["reads"] for r in rows[kind])
        print(f"{label:<28}{w:>10.0f}{g:>10.0f}   ({w / base['writes']:.2f} / "
              f"{g / base['reads']:.2f} of SQLite)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
