"""Prometheus metrics on an app-owned registry (never the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric the bridge exports, registered on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "transfer_bridge_http_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "transfer_bridge_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 60),
        )
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
            "Phone evidence dropped (unknown phone, no session)",
            ["source", "reason"],
            registry=r,
        )
        self.long_polls = Gauge(
            "transfer_bridge_long_polls", "Long-poll requests waiting", registry=r
        )
        self.sse_streams = Gauge(
            "transfer_bridge_sse_streams", "Server-Sent Events streams open", registry=r
        )
