"""How late the event loop runs: the first thing to watch when sources or clients stall.

docs/benchmarks.md: Asterisk drops AMI clients that do not read within its write timeout (100 ms in
its sample configuration), so the loop's lag should stay low (p99 <= 10 ms). A task sleeps
`interval` seconds over and over and records how much later than asked it woke up; /metrics
shows it as the histogram `transfer_bridge_event_loop_lag_seconds` and the worst seen.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LoopLag(Collector):
    """The lag samples as plain counts, exported at scrape time."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.worst = 0.0

    def record(self, lag: float) -> None:
        """One sample (seconds late; never negative)."""
        lag = max(lag, 0.0)
        self.buckets[bisect.bisect_left(BUCKETS, lag)] += 1
        self.total += lag
        self.worst = max(self.worst, lag)

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.record(loop.time() - start - self.interval)

    def collect(self) -> Iterator[Metric]:
        """The histogram and the worst sample."""
        hist = HistogramMetricFamily(
            "transfer_bridge_event_loop_lag_seconds",
            "How much later than asked the event loop woke a sleeping task",
        )
        cumulative, running = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            running += n
            cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
        hist.add_metric([], cumulative, self.total)
        yield hist
        worst = GaugeMetricFamily(
            "transfer_bridge_event_loop_lag_worst_seconds", "The worst event-loop lag seen"
        )
        worst.add_metric([], self.worst)
        yield worst
