"""Typed keys for what hangs on the application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from desktop_api.cluster.lease import LeaseKeeper
    from desktop_api.config import Settings
    from desktop_api.metrics import Metrics
    from desktop_api.service import BridgeService
    from desktop_api.sources import RunningSources
    from desktop_api.sources.deskphone import DeviceHub
    from desktop_api.sources.pump import EvidencePump

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
SERVICE: web.AppKey[BridgeService] = web.AppKey("service")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
HEALTH: web.AppKey[dict[str, Any]] = web.AppKey("health")
SOURCES: web.AppKey[RunningSources] = web.AppKey("sources")
EVIDENCE: web.AppKey[EvidencePump] = web.AppKey("evidence")
# The instance's source leases (None on SQLite: one instance, nothing leased).
LEASES: web.AppKey[LeaseKeeper | None] = web.AppKey("leases")
DEVICE_HUB: web.AppKey[DeviceHub] = web.AppKey("device_hub")
# The opening snapshot of the event stream, encoded once per (account, agent filter) and cursor.
SSE_SNAPSHOTS: web.AppKey[dict[tuple[str, str | None], tuple[int, bytes]]] = web.AppKey(
    "sse_snapshots"
)
