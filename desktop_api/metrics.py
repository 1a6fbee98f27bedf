"""Prometheus metrics on an app-owned registry (never the process-global one)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class Metrics:
    """Every metric the bridge exports, registered on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = RequestStats()
        r.register(self.requests)
        self.sessions_open = Gauge(
            "transfer_bridge_sessions_open", "Sessions not ended", registry=r
        )
        self.sessions_opened = Counter(
            "transfer_bridge_sessions_opened", "Sessions opened", registry=r
        )
        self.desktop_steps = Counter(
            "transfer_bridge_desktop_steps",
            "Desktop transfer steps accepted",
            ["action"],
            registry=r,
        )
        self.transfers = Counter(
            "transfer_bridge_transfers_confirmed",
            "Transfers confirmed, by who proved them",
            ["by"],
            registry=r,
        )
        self.evidence_applied = Counter(
            "transfer_bridge_phone_evidence",
            "Phone evidence routed to a session",
            ["source", "type"],
            registry=r,
        )
        self.evidence_dropped = Counter(
            "transfer_bridge_phone_evidence_dropped",
            "Phone evidence dropped (unknown phone, no session, already applied)",
            ["source", "reason"],
            registry=r,
        )
        self.write_retries = Counter(
            "transfer_bridge_write_retries",
            "Writes decided again because another instance changed the session first",
            registry=r,
        )
        self.feed_catch_ups = Counter(
            "transfer_bridge_feed_catch_ups",
            "Reads of the stored change feed for changes other instances wrote",
            registry=r,
        )
        self.long_polls = Gauge(
            "transfer_bridge_long_polls", "Long-poll requests waiting", registry=r
        )
        self.sse_streams = Gauge(
            "transfer_bridge_sse_streams", "Server-Sent Events streams open", registry=r
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one HTTP request."""
        self.requests.observe(route, method, status, seconds)


class RequestStats(Collector):
    """HTTP request counts and latencies kept as plain numbers, exported when scraped.

    This is on every request, so it avoids prometheus-client's per-sample locks and label
    look-ups (they cost several microseconds a request); the event loop is single-threaded.
    """

    BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 60.0)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one request."""
        key = (route, method, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        hist = self._latency.get(route)
        if hist is None:
            hist = self._latency[route] = ([0] * (len(self.BUCKETS) + 1), [0.0])
        hist[0][bisect.bisect_left(self.BUCKETS, seconds)] += 1
        hist[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        """Prometheus families at scrape time."""
        counts = CounterMetricFamily(
            "transfer_bridge_http_requests",
            "HTTP requests answered",
            labels=["route", "method", "status"],
        )
        for (route, method, status), n in sorted(self._counts.items()):
            counts.add_metric([route, method, str(status)], n)
        yield counts
        latency = HistogramMetricFamily(
            "transfer_bridge_http_request_seconds", "HTTP request latency", labels=["route"]
        )
        for route, (buckets, total) in sorted(self._latency.items()):
            cumulative, running = [], 0
            for bound, n in zip((*self.BUCKETS, float("inf")), buckets, strict=True):
                running += n
                cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
            latency.add_metric([route], cumulative, total[0])
        yield latency
