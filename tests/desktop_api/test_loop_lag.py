"""/metrics tells an operator when the event loop stalls (docs/benchmarks.md: p99 <= 10 ms)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from desktop_api.loop_lag import LoopLag
from desktop_api.testing import RunningBridge


def samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_a_stalled_loop_shows_in_metrics(
    bridge: RunningBridge, http: aiohttp.ClientSession
) -> None:
    async with http.get(bridge.url + "/metrics") as r:
        before = samples(await r.text(), "transfer_bridge_event_loop_lag")
    assert before["transfer_bridge_event_loop_lag_worst_seconds"] < 0.1
    time.sleep(0.3)  # noqa: ASYNC251 - on purpose: a blocking call stalls the bridge's loop
    await asyncio.sleep(0.6)
    async with http.get(bridge.url + "/metrics") as r:
        after = samples(await r.text(), "transfer_bridge_event_loop_lag")
    assert after["transfer_bridge_event_loop_lag_worst_seconds"] >= 0.05
    slow = 'transfer_bridge_event_loop_lag_seconds_bucket{le="0.025"}'
    count = "transfer_bridge_event_loop_lag_seconds_count"
    assert after[count] - after[slow] >= 1  # at least one sample later than 25 ms


def test_samples_fall_in_their_buckets() -> None:
    lag = LoopLag()
    for value in (0.0005, 0.003, 0.2, -0.001):
        lag.record(value)
    families = {f.name: f for f in lag.collect()}
    buckets = {
        s.labels["le"]: s.value
        for s in families["transfer_bridge_event_loop_lag_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.001"] == 2  # 0.0005 and the negative one, clamped to 0
    assert buckets["0.005"] == 3
    assert buckets["0.1"] == 3 and buckets["0.25"] == 4 and buckets["+Inf"] == 4
    assert lag.worst == 0.2
