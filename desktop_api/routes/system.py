"""`/healthz`, `/metrics`, `/openapi.json`: for operators and integrators, no token needed."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from desktop_api.config import default_instance
from desktop_api.keys import HEALTH, LEASES, METRICS, OPENAPI, SERVICE, SETTINGS
from desktop_api.storage import POSTGRES_SCHEMES

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Up, the store answers, and how each source is doing."""
    service = request.app[SERVICE]
    # A source's health is a dict, or a function giving it now (a connection comes and goes).
    sources = {name: h() if callable(h) else h for name, h in request.app[HEALTH].items()}
    try:
        await service.ping_store()
        store_ok = True
    except Exception:
        store_ok = False
    ok = store_ok and not service.hub.closed
    body = {
        "status": "ok" if ok else "degraded",
        "store": "ok" if store_ok else "failing",
        "sources": sources,
        "cluster": _cluster(request.app),
    }
    return web.json_response(body, status=200 if ok else 503)


def _cluster(app: web.Application) -> dict[str, Any]:
    """This instance's name, the store kind, and who holds each of its source leases (as the
    database said at the last lease check; holder None while this instance cannot ask)."""
    settings = app[SETTINGS]
    leases = app.get(LEASES)
    postgres = settings.store_url.startswith(POSTGRES_SCHEMES)
    return {
        "instance": leases.instance if leases else settings.instance or default_instance(),
        "store": "postgresql" if postgres else "sqlite",
        "leases": leases.holders() if leases else {},
        "feed": app[SERVICE].follower.health(),
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The desktop API contract as OpenAPI 3.1."""
    return web.json_response(request.app[OPENAPI])


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text exposition of the app's own registry."""
    service = request.app[SERVICE]
    polls, streams = service.hub.counts()
    m = request.app[METRICS]
    m.long_polls.set(polls)
    m.sse_streams.set(streams)
    handler = make_aiohttp_handler(m.registry, disable_compression=True)
    return await handler(request)


routes.get("/metrics")(metrics)
