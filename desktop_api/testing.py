"""Test seams shipped with the package: run the real app on a real socket, call it over HTTP.

Used by the project's tests and benchmarks, and handy for desktop developers' own tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from desktop_api.app import create_app
from desktop_api.config import Settings
from desktop_api.keys import EVIDENCE, SERVICE
from desktop_api.server import BACKLOG, BridgeRunner
from desktop_api.service import BridgeService
from desktop_api.sources.pump import EvidencePump


def settings_for(directory: Path, admin_token: str = "admin-secret") -> Settings:
    """Settings for a bridge whose SQLite file lives in `directory`."""
    return Settings(
        host="127.0.0.1",
        port=0,
        store_url=f"sqlite:///{directory / 'bridge.db'}",
        admin_token=admin_token,
        log_format="console",
        log_level="warning",
    )


@dataclass
class RunningBridge:
    """A bridge listening on 127.0.0.1 with its base URL and in-process service."""

    url: str
    app: web.Application
    settings: Settings

    @property
    def service(self) -> BridgeService:
        """The service behind the API (to feed phone evidence as a source would)."""
        return self.app[SERVICE]

    @property
    def evidence(self) -> EvidencePump:
        """The ordered evidence queue every source feeds (tests drain it)."""
        return self.app[EVIDENCE]


@asynccontextmanager
async def running_bridge(settings: Settings) -> AsyncIterator[RunningBridge]:
    """Start the app on a free port; stop it cleanly (store closed) on exit."""
    app = create_app(settings)
    runner = BridgeRunner(
        app,
        idle_timeout=settings.idle_timeout,
        max_connections=settings.max_connections,
        access_log=None,
        shutdown_timeout=5.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=BACKLOG)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningBridge(f"http://{settings.host}:{port}", app, settings)
    finally:
        await runner.cleanup()


@dataclass
class Reply:
    """An HTTP answer: status, headers and the decoded JSON body (None when not JSON)."""

    status: int
    headers: CIMultiDict[str]
    body: Any
    raw: bytes = field(repr=False, default=b"")


class ApiClient:
    """A thin HTTP client for the desktop API with one bearer token."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.http = http
        self.base = base
        self.token = token

    def with_token(self, token: str | None) -> ApiClient:
        """The same connection pool, another caller."""
        return ApiClient(self.http, self.base, token)

    def prepare(
        self, body: Any = None, raw: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[bytes | None, dict[str, str]]:
        """The bytes and headers `call` sends: `body` as JSON, `raw` as it is, the token."""
        hdrs = dict(headers or {})
        if self.token is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        return data, hdrs

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """Send one request; `body` is sent as JSON, `raw` as it is."""
        data, hdrs = self.prepare(body, raw, headers)
        async with self.http.request(
            method, self.base + path, data=data, headers=hdrs, params=params
        ) as resp:
            content = await resp.read()
            try:
                decoded = json.loads(content) if content else None
            except ValueError:
                decoded = None
            return Reply(resp.status, CIMultiDict(resp.headers), decoded, content)

    async def get(self, path: str, **kw: Any) -> Reply:
        """GET."""
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """POST."""
        return await self.call("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """PUT."""
        return await self.call("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """PATCH."""
        return await self.call("PATCH", path, body, **kw)

    async def step(self, session_id: str, action: str) -> Reply:
        """One desktop transfer step."""
        return await self.post(f"/v1/sessions/{session_id}/transfer", {"action": action})


def _now() -> float:
    return asyncio.get_running_loop().time()


class EventStream:
    """A `text/event-stream` read by hand, one event at a time."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.closed = False

    async def next(self, within: float = 3.0) -> dict[str, Any] | None:
        """The next event, or None when the stream ends or nothing comes `within` seconds."""
        fields: dict[str, str] = {}
        data: list[str] = []
        deadline = _now() + within
        while True:
            left = deadline - _now()
            if left <= 0:
                return None
            try:
                line = await asyncio.wait_for(self.resp.content.readline(), left)
            except TimeoutError:
                return None
            if not line:
                self.closed = True
                return None
            text = line.decode().rstrip("\r\n")
            if text == "":
                if data:
                    return {**fields, "data": json.loads("\n".join(data))}
                fields = {}
                continue
            if text.startswith(":"):
                continue  # a comment (ping)
            name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value

    async def take(self, count: int, within: float = 3.0) -> list[dict[str, Any]]:
        """Exactly `count` events, each within `within` seconds."""
        events: list[dict[str, Any]] = []
        for _ in range(count):
            event = await self.next(within)
            assert event is not None, f"only {len(events)} of {count} events arrived: {events}"
            events.append(event)
        return events

    async def drain(self, quiet: float) -> list[dict[str, Any]]:
        """Every event until nothing comes for `quiet` seconds or the stream ends."""
        events = []
        while (event := await self.next(quiet)) is not None:
            events.append(event)
        return events

    async def quiet(self, seconds: float = 0.4) -> None:
        """Nothing more arrives for a while."""
        event = await self.next(seconds)
        assert event is None, f"unexpected event {event}"
