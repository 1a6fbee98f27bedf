"""The HTTP server around the app: connection limits, timeouts, and aiohttp's own errors.

aiohttp answers what it cannot parse (a bad request line, a header with a control character) by
itself, before any middleware runs: as `text/plain`, logging the exception whose text holds the
raw request bytes (the request line with a device's `key=`, an `Authorization` header). This
module's request handler answers those with the project's JSON error body and logs only the
status, the error's class and the peer. It also

- closes a connection that has not sent a whole request head within `http.idle_timeout`
  seconds of connecting or of its previous response (slow or silent clients);
- refuses connections beyond `http.max_connections` (kept below the process's descriptor
  limit), so a crowd of clients cannot make `accept()` fail and flood the log;
- tells long-polls when their client has gone (`client_gone`), so they end at once;
- rate-limits the event loop's own error reports (accept errors and the like).

`BridgeRunner` is `aiohttp.web.AppRunner` with this handler; the CLI and `desktop_api.testing`
both serve through it.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from desktop_api.keys import METRICS
from desktop_api.logs import RateLimited
from desktop_api.middleware import HTTP_CODES, error_response

log = structlog.get_logger("transfer_bridge.http")

# The listening socket's backlog. asyncio accepts up to this many connections in one loop turn
# before any of them can be closed, so that many descriptors must stay free under the cap.
BACKLOG = 128
# Descriptors kept free when connections are capped: the store, the sources and the log (64),
# plus one turn's worth of accepted connections. Without the second part a burst of clients at
# the cap ran the process out of descriptors ("socket.accept() out of system resource").
SPARE_DESCRIPTORS = 64 + BACKLOG
LOG_EVERY = 10.0  # seconds between two lines about the same kind of refused connection


class BridgeRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the project's error shape and limits."""

    _gone: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._manager
        if isinstance(server, BridgeServer) and len(server.connections) > server.max_connections:
            server.refused += 1
            held_back = server.refusal_log.allow("max_connections")
            if held_back is not None:
                log.warning(
                    "http_connection_refused",
                    reason="max_connections",
                    limit=server.max_connections,
                    held_back=held_back,
                )
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    def gone(self) -> asyncio.Future[None]:
        """Resolves when the client's connection is lost."""
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
            if self.transport is None:
                self._gone.set_result(None)
        return self._gone

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse or handle: the JSON error, a log line without any of
        the request's bytes (they may hold a key or a token)."""
        server = self._manager
        held_back: int | None = 0
        if isinstance(server, BridgeServer):
            held_back = server.refusal_log.allow((request.remote, status))
        if held_back is not None:
            log.warning(
                "http_request_refused" if status < 500 else "http_request_failed",
                status=status,
                error=type(exc).__name__ if exc is not None else None,
                peer=request.remote,
                held_back=held_back,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent")
        if status >= 500:
            code, text = "internal_error", "the bridge failed to answer; see logs"
        else:
            code, text = HTTP_CODES.get(status, "bad_request"), "the request could not be parsed"
        resp = error_response(status, code, text)
        resp.force_close()
        return resp


class BridgeServer(Server):
    """aiohttp's server (the protocol factory), making `BridgeRequestHandler`s."""

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.refused = 0
        self.refusal_log = RateLimited(LOG_EVERY)

    def __call__(self) -> RequestHandler:
        return BridgeRequestHandler(self, loop=self._loop, **self._kwargs)


def connection_limit(wanted: int) -> int:
    """`wanted`, or fewer if the process may not open that many descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - SPARE_DESCRIPTORS))


class BridgeRunner(web.AppRunner):
    """`web.AppRunner` serving through `BridgeServer`."""

    def __init__(
        self, app: web.Application, *, idle_timeout: float, max_connections: int, **kwargs: Any
    ) -> None:
        # keepalive_timeout is aiohttp's timer for "no request head yet": it runs from the
        # connection's start and after each response, and closes only an idle handler.
        # lingering_time: after answering a request whose body did not all arrive (408, 413),
        # aiohttp reads on for this long before closing; its default of 10 s lets a client that
        # dribbles a body hold the connection on.
        super().__init__(app, keepalive_timeout=idle_timeout, lingering_time=1.0, **kwargs)
        self.max_connections = connection_limit(max_connections)

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        server = BridgeServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            max_connections=self.max_connections,
            **plain._kwargs,
        )
        self.app[METRICS].registry.register(ConnectionCollector(server))
        return server


class ConnectionCollector(Collector):
    """`transfer_bridge_http_connections` and `..._connections_refused`, read at scrape time."""

    def __init__(self, server: BridgeServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        """Open connections, and connections closed at once for being over the cap."""
        open_now = GaugeMetricFamily("transfer_bridge_http_connections", "Open HTTP connections")
        open_now.add_metric([], len(self.server.connections))
        yield open_now
        refused = CounterMetricFamily(
            "transfer_bridge_http_connections_refused",
            "HTTP connections closed at once: over http.max_connections",
        )
        refused.add_metric([], self.server.refused)
        yield refused


def client_gone(request: web.Request) -> asyncio.Future[None]:
    """A future that resolves when the request's client disconnects (never, if unknown)."""
    protocol = request.protocol
    if isinstance(protocol, BridgeRequestHandler):
        return protocol.gone()
    return asyncio.get_running_loop().create_future()


def limit_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's own error reports (e.g. `socket.accept() out of system resource`, repeated
    for as long as descriptors run out) at most once per message every `LOG_EVERY` seconds."""
    limiter = RateLimited(LOG_EVERY)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        held_back = limiter.allow(str(context.get("message")))
        if held_back is None:
            return
        if held_back:
            context = {**context, "message": f"{context.get('message')} ({held_back} held back)"}
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
