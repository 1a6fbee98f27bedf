"""`create_app(settings)`: the aiohttp application, assembled in one place."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import structlog
import yaml
from aiohttp import web

from desktop_api.cluster.lease import LeaseKeeper
from desktop_api.config import Settings, default_instance
from desktop_api.keys import (
    DEVICE_HUB,
    EVIDENCE,
    HEALTH,
    LEASES,
    METRICS,
    OPENAPI,
    SERVICE,
    SETTINGS,
    SOURCES,
    SSE_SNAPSHOTS,
)
from desktop_api.loop_lag import LoopLag
from desktop_api.metrics import Metrics
from desktop_api.middleware import api_middleware
from desktop_api.routes import accounts, agents, deskphone, desktop, events, sessions, system
from desktop_api.server import limit_loop_errors
from desktop_api.service import BridgeService
from desktop_api.sources import running_sources
from desktop_api.sources.deskphone import DeviceCollector, DeviceHub
from desktop_api.sources.pump import EvidencePump
from desktop_api.storage import POSTGRES_SCHEMES, open_store

log = structlog.get_logger("transfer_bridge.app")


@functools.cache
def load_openapi() -> dict[str, Any]:
    """The hand-written contract shipped with the package (parsed once per process)."""
    text = resources.files("desktop_api").joinpath("openapi.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


PRUNE_EVERY = 600.0  # seconds between change-feed retention runs


async def _prune_changes(service: BridgeService, keep: int) -> None:
    """Keep the change feed (SSE resume) to the newest `keep` entries, every few minutes.

    The audit trail and the sessions are never pruned; a desktop resuming from a cursor older
    than what is kept gets the current state of the open sessions instead (routes/events.py).
    """
    while True:
        try:
            await service.prune_changes(keep)
        except Exception:
            log.exception("change_feed_prune_failed")
        await asyncio.sleep(PRUNE_EVERY)


async def _service_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    limit_loop_errors(asyncio.get_running_loop())
    store = open_store(settings.store_url)
    shared = settings.store_url if not settings.store_url.startswith("sqlite:") else None
    service = BridgeService(
        store,
        app[METRICS],
        shared_url=shared,
        instance=settings.instance,
        poll_interval=settings.poll_interval,
    )
    await service.start()
    app[SERVICE] = service
    # What start-up loaded lives as long as the process: keep the cyclic GC from re-scanning it.
    gc.freeze()
    log.info("bridge_started", listen=f"{settings.host}:{settings.port}")
    lag = LoopLag()
    app[METRICS].registry.register(lag)
    lag_task = asyncio.create_task(lag.run(), name="loop-lag")
    prune_task = asyncio.create_task(_prune_changes(service, settings.keep_changes))
    pump = app[EVIDENCE] = EvidencePump(service.ingest)
    leases = app[LEASES] = _lease_keeper(settings)
    if leases is not None:
        app[METRICS].registry.register(leases)
    async with running_sources(
        settings.sources,
        pump,
        service.agents.values(),
        app[HEALTH],
        app[METRICS].registry,
        leases,
    ) as sources:
        app[SOURCES] = sources
        service.on_agents_changed.append(lambda: sources.sync_phones(service.agents.values()))
        yield
    if leases is not None:
        app[METRICS].registry.unregister(leases)
    for task in (lag_task, prune_task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await service.close()
    log.info("bridge_stopped")


def _lease_keeper(settings: Settings) -> LeaseKeeper | None:
    """On PostgreSQL, the leases of this instance (several instances may share the store);
    on SQLite none (one instance per file)."""
    if not settings.store_url.startswith(POSTGRES_SCHEMES):
        return None
    instance = settings.instance or default_instance()
    return LeaseKeeper(settings.store_url, instance, settings.lease_retry)


async def _on_shutdown(app: web.Application) -> None:
    # Release long-polls and end SSE streams so shutdown does not wait for them.
    if SERVICE in app:
        app[SERVICE].hub.close()


def create_app(settings: Settings) -> web.Application:
    """The whole HTTP face: resources, middlewares, life cycle."""
    app = web.Application(
        middlewares=[api_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[OPENAPI] = load_openapi()
    app[HEALTH] = {}
    app[LEASES] = None
    app[SSE_SNAPSHOTS] = {}
    app.cleanup_ctx.append(_service_ctx)
    app.on_shutdown.append(_on_shutdown)
    hub = app[DEVICE_HUB] = DeviceHub()
    app[METRICS].registry.register(DeviceCollector(hub.counts))
    for module in (accounts, agents, sessions, events, system, desktop, deskphone):
        app.router.add_routes(module.routes)
    return app
