"""Session writes and GETs per second with 1 instance on SQLite, 1 on PostgreSQL and 2 and 3
instances on one PostgreSQL database; the cross-instance change-feed delay.

    python bench/cluster_throughput.py [--seconds 5] [--clients 16] [--loaders 2] [--changes 300]
                                       [--rounds 1]

Every instance is a real `transfer-bridge serve` process (configured by environment variables,
log level warning) on a fresh database of one throwaway PostgreSQL 15 cluster
(`tests/rig/postgres.py`; needs Debian's `postgresql` package and root) or on its own SQLite
file. The load comes from `--loaders` processes on the same machine, each running an asyncio
HTTP client, with `--clients` concurrent clients in all spread round-robin over the instances
(as a load balancer would):

- writes/s: each client drives its own agent through `POST /v1/sessions`, the `open`, `internal`
  and `next` clicks and `/end`, each a stored version with audit line and change-feed entry (one
  agent per client, so no click waits on another agent's lock);
- GET/s: `GET /v1/sessions/{id}` of one open session, through every instance.

The scaling ratio is each row's figure over the 1-instance PostgreSQL row of the same run; with
`--rounds` the rows are run in turn that many times and the median kept. Each row also shows how
busy the whole machine was (all cores, /proc/stat) and how many cores the bridge processes
themselves used, during the writes and during the GETs.
Then the change-feed delay between two instances: a desktop's stream on B, `--changes` clicks
written one at a time through A; for each, the time from sending the click to A until B's
stream delivers it (and A's own answer time, for comparison); median and worst.

The load generator, the database server and the instances all share this machine's cores, so
more instances mean more processes on the same cores: the figures say what one machine does,
not what N machines would.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desktop_api.testing import ApiClient, EventStream
from tests.desktop_api import bridge_proc
from tests.rig.postgres import running_cluster

CLICKS = ("open", "internal", "next")
ROWS = (("sqlite", 1), ("postgres", 1), ("postgres", 2), ("postgres", 3))


# --- the load, in the loader processes ---------------------------------------------------


async def _writer(api: ApiClient, client: int, window: tuple[float, float], out: list[int]) -> None:
    start, end = window
    n = 0
    while time.time() < end:
        sid = f"w-{client}-{n}"
        n += 1
        body = {
            "id": sid,
            "agent_id": f"a-{client}",
            "customer": {"number": "+34900000001"},
            "call": {"state": "connected"},
        }
        requests: list[tuple[str, Any]] = [("/v1/sessions", body)]
        requests += [(f"/v1/sessions/{sid}/transfer", {"action": a}) for a in CLICKS]
        requests.append((f"/v1/sessions/{sid}/end", {"result": "bench"}))
        for path, payload in requests:
            r = await api.post(path, payload)
            if r.status not in (200, 201):
                out[1] += 1
                return
            if start <= time.time() < end:
                out[0] += 1


async def _reader(api: ApiClient, window: tuple[float, float], out: list[int]) -> None:
    start, end = window
    while time.time() < end:
        r = await api.get("/v1/sessions/r-1")
        if r.status != 200:
            out[1] += 1
            return
        if start <= time.time() < end:
            out[0] += 1


async def _load(
    kind: str, urls: list[str], token: str, clients: list[int], window: tuple[float, float]
) -> tuple[int, int]:
    out = [0, 0]  # answered within the window, errors
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        apis = {c: ApiClient(http, urls[c % len(urls)], token) for c in clients}
        await asyncio.sleep(max(0.0, window[0] - time.time()))
        if kind == "writes":
            await asyncio.gather(*(_writer(apis[c], c, window, out) for c in clients))
        else:
            await asyncio.gather(*(_reader(apis[c], window, out) for c in clients))
    return out[0], out[1]


def load(
    kind: str, urls: list[str], token: str, clients: list[int], window: tuple[float, float]
) -> tuple[int, int]:
    """One loader process's share of the clients."""
    return asyncio.run(_load(kind, urls, token, clients, window))


# --- the instances, in this process ------------------------------------------------------


async def _until_known(
    http: aiohttp.ClientSession, urls: list[str], token: str, agent: str
) -> None:
    """Every instance knows the agent (an admin's change through one reaches the others)."""
    deadline = time.monotonic() + 20
    for url in urls:
        while (await ApiClient(http, url, token).get(f"/v1/agents/{agent}")).status != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} does not know {agent}: the instances do not share")
            await asyncio.sleep(0.05)


async def _setup(http: aiohttp.ClientSession, urls: list[str], clients: int) -> str:
    admin = ApiClient(http, urls[0], bridge_proc.ADMIN)
    r = await admin.post("/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True})
    assert r.status == 201, r.body
    r = await admin.post("/v1/accounts/acme/tokens")
    token: str = r.body["token"]
    api = admin.with_token(token)
    for i in range(clients):
        phone = {"sip_uri": f"sip:{1000 + i}@pbx"}
        r = await api.put(f"/v1/agents/a-{i}", {"name": f"A{i}", "phone": phone})
        assert r.status == 201, r.body
    await _until_known(http, urls, token, f"a-{clients - 1}")
    return token


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _process_ticks(pids: list[int]) -> int:
    """User + system clock ticks of these processes (/proc/PID/stat)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


async def _phase(
    pool: ProcessPoolExecutor,
    kind: str,
    urls: list[str],
    pids: list[int],
    token: str,
    args: argparse.Namespace,
) -> tuple[float, int, float, float]:
    """(requests/s, errors, machine busy share, the instances' CPU in cores) of one phase."""
    start = time.time() + 1.0  # every loader starts at once
    window = (start, start + args.seconds)
    shares = [list(range(i, args.clients, args.loaders)) for i in range(args.loaders)]
    loop = asyncio.get_running_loop()
    jobs = [loop.run_in_executor(pool, load, kind, urls, token, s, window) for s in shares if s]
    await asyncio.sleep(max(0.0, start - time.time()))
    busy0, total0 = _machine_ticks()
    mine0, wall0 = _process_ticks(pids), time.monotonic()
    await asyncio.sleep(args.seconds)
    busy1, total1 = _machine_ticks()
    mine1, wall1 = _process_ticks(pids), time.monotonic()
    results = await asyncio.gather(*jobs)
    hz = os.sysconf("SC_CLK_TCK")
    cores = (mine1 - mine0) / hz / (wall1 - wall0)
    busy = (busy1 - busy0) / max(1, total1 - total0)
    return sum(r[0] for r in results) / args.seconds, sum(r[1] for r in results), busy, cores


async def _feed_delay(
    http: aiohttp.ClientSession, a: str, b: str, token: str, changes: int
) -> tuple[list[float], list[float]]:
    """Clicks through A one at a time; (send → B's stream has it, send → A's answer), seconds."""
    api = ApiClient(http, a, token)
    body = {
        "id": "d-1",
        "agent_id": "a-0",
        "customer": {"number": "+34900000001"},
        "call": {"state": "connected"},
    }
    r = await api.post("/v1/sessions", body)
    assert r.status == 201, r.body
    seen, answered = [], []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as sse, sse.get(b + "/v1/events", headers=headers) as resp:
        assert resp.status == 200
        stream = EventStream(resp)
        version = 1
        # the snapshot of open sessions, or the live open: B knows d-1
        while (event := await stream.next(5)) is not None:
            if event["data"]["id"] == "d-1":
                break
        for n in range(changes):
            sent = time.perf_counter()
            r = await api.step("d-1", "open" if n % 2 == 0 else "dismiss")
            answered.append(time.perf_counter() - sent)
            assert r.status == 200, r.body
            version = r.body["version"]
            while True:
                event = await stream.next(10)
                if event is None:
                    raise RuntimeError(f"B's stream did not show version {version} in 10 s")
                if event["data"]["id"] == "d-1" and event["data"]["version"] >= version:
                    break
            seen.append(time.perf_counter() - sent)
    return seen, answered


async def _row(
    pool: ProcessPoolExecutor,
    kind: str,
    count: int,
    database: str,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    env = {"TRANSFER_BRIDGE_STORE_URL": database, "TRANSFER_BRIDGE_LOG_LEVEL": "warning"}
    procs = []
    try:
        for i in range(count):
            name = "ABC"[i]
            settings = {**env, "TRANSFER_BRIDGE_CLUSTER_INSTANCE": name}
            procs.append(await bridge_proc.start(work / name, settings))
        urls = [p.url for p in procs]
        async with aiohttp.ClientSession() as http:
            token = await _setup(http, urls, args.clients)
            pids = [p.proc.pid for p in procs]
            writes, write_errors, write_busy, write_cores = await _phase(
                pool, "writes", urls, pids, token, args
            )
            r = await ApiClient(http, urls[0], token).post(
                "/v1/sessions",
                {"id": "r-1", "agent_id": "a-0", "customer": {"number": "+34900000001"}},
            )
            assert r.status == 201, r.body
            for url in urls:
                await _until_session(http, url, token)
            reads, read_errors, read_busy, read_cores = await _phase(
                pool, "reads", urls, pids, token, args
            )
            delay = None
            if count >= 2 and args.changes:
                delay = await _feed_delay(http, urls[0], urls[1], token, args.changes)
    finally:
        for p in procs:
            await bridge_proc.stop(p)
    errors = write_errors + read_errors
    return {
        "writes": writes,
        "reads": reads,
        "errors": errors,
        "delay": delay,
        "cpu": (write_busy, write_cores, read_busy, read_cores),
    }


async def _until_session(http: aiohttp.ClientSession, url: str, token: str) -> None:
    deadline = time.monotonic() + 20
    while (await ApiClient(http, url, token).get("/v1/sessions/r-1")).status != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} does not see session r-1")
        await asyncio.sleep(0.05)


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms, worst {max(values) * 1000:.1f} ms"


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's median figures over its runs; the delay samples of all runs together."""
    delays = [r["delay"] for r in runs if r["delay"] is not None]
    return {
        "writes": statistics.median(r["writes"] for r in runs),
        "reads": statistics.median(r["reads"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "delay": (
            ([x for d in delays for x in d[0]], [x for d in delays for x in d[1]])
            if delays
            else None
        ),
        "cpu": tuple(statistics.median(r["cpu"][i] for r in runs) for i in range(4)),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in all")
    parser.add_argument("--loaders", type=int, default=2, help="load generator processes")
    parser.add_argument("--changes", type=int, default=300, help="for the change-feed delay")
    parser.add_argument("--rounds", type=int, default=1, help="runs per row; the median is kept")
    args = parser.parse_args()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {row: [] for row in ROWS}
    context = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_cluster() as cluster,
        ProcessPoolExecutor(args.loaders, mp_context=context) as pool,
    ):
        for r in range(args.rounds):  # rows interleaved, so drift hits every row alike
            for n, (kind, count) in enumerate(ROWS):
                work = Path(tmp) / f"run-{r}-{n}"
                database = (
                    f"sqlite:///{work / 'bridge.db'}"
                    if kind == "sqlite"
                    else cluster.create_database(f"bench_{r}_{n}")
                )
                try:
                    runs[(kind, count)].append(await _row(pool, kind, count, database, work, args))
                except RuntimeError as exc:
                    print(f"{count} on {kind}: not measured: {exc}")
    results = {row: _median(r) for row, r in runs.items() if r}

    cores = os.cpu_count()
    print(
        f"{args.clients} clients from {args.loaders} load-generator processes, {args.seconds:g} s "
        f"per measurement, median of {args.rounds} runs; the load generator, PostgreSQL and "
        f"the instances share the machine's {cores} cores"
    )
    print(
        f"{'instances':<20}{'writes/s':>10}{'GET/s':>10}  {'scaling':<13}"
        f"{'machine busy':<14}instances' CPU (cores)"
    )
    base = results.get(("postgres", 1))
    for (kind, count), row in results.items():
        label = f"{count} on {'SQLite' if kind == 'sqlite' else 'PostgreSQL'}"
        ratio = "-"
        if base is not None:
            ratio = f"{row['writes'] / base['writes']:.2f} / {row['reads'] / base['reads']:.2f}"
        errors = f"   ({row['errors']} errors)" if row["errors"] else ""
        wb, wc, rb, rc = row["cpu"]
        busy = f"{wb:.0%} / {rb:.0%}"
        print(
            f"{label:<20}{row['writes']:>10.0f}{row['reads']:>10.0f}  {ratio:<13}{busy:<14}"
            f"{wc:.2f} / {rc:.2f}{errors}"
        )
    print(
        "scaling: writes / GETs over 1 instance on PostgreSQL; machine busy: all cores' busy "
        "share during the writes / GETs; instances' CPU: the bridge processes' own"
    )
    for (_, count), row in results.items():
        if row["delay"] is not None:
            seen, answered = row["delay"]
            print(
                f"change feed, {count} instances: a click sent to A shows on B's stream: "
                f"{_ms(seen)} ({len(seen)} changes); A's own answer: {_ms(answered)}"
            )


if __name__ == "__main__":
    asyncio.run(main())
