"""`/v1/events`: Server-Sent Events of session changes, resumable with `Last-Event-ID`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from bridge.errors import InvalidInput
from bridge.model import ID_PATTERN, Session
from desktop_api.changes import Subscriber
from desktop_api.keys import METRICS, SERVICE, SSE_SNAPSHOTS
from desktop_api.middleware import require_account

log = structlog.get_logger("transfer_bridge.events")
routes = web.RouteTableDef()
REPLAY_PAGE = 500
PING_SECONDS = 15.0
CURSOR = re.compile(r"[0-9]{1,18}")


async def _follow(
    stream: EventSourceResponse,
    sub: Subscriber,
    send: Callable[[int, Session], Awaitable[None]],
    sent: int,
) -> None:
    """Forward live changes until the client leaves, falls behind, or the bridge stops."""
    gone = asyncio.ensure_future(stream.wait())  # ends when a ping finds the client gone
    try:
        while not sub.overflowed:
            getter = asyncio.ensure_future(sub.queue.get())
            await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return
            item = getter.result()
            if item is None or sub.overflowed:
                return
            seq, session = item
            if seq <= sent:
                continue  # already replayed from the store
            await send(seq, session)
            sent = seq
    finally:
        gone.cancel()


SNAPSHOTS_KEPT = 10_000


def _event(cursor: int, body: bytes) -> bytes:
    """One event as aiohttp_sse writes it (the JSON body holds no line break)."""
    return b"id: %d\r\nevent: session\r\ndata: %s\r\n\r\n" % (cursor, body)


async def _snapshot(
    request: web.Request, account_id: str, agent_id: str | None, cursor: int
) -> bytes:
    """Every open session of the account (of one agent), as events at `cursor`, encoded once
    for all the streams that open while the cursor stays the same: a thousand desktops
    connecting at once cost one encoding, not a thousand."""
    snapshots = request.app[SSE_SNAPSHOTS]
    key = (account_id, agent_id)
    cached = snapshots.get(key)
    if cached is not None and cached[0] == cursor:
        return cached[1]
    service = request.app[SERVICE]
    sessions = await service.open_sessions(account_id, agent_id)
    payload = b"".join(_event(cursor, service.view_bytes(s)) for s in sessions)
    if service.hub.last_cursor(account_id) == cursor:  # nothing changed meanwhile
        if len(snapshots) >= SNAPSHOTS_KEPT:
            snapshots.clear()
        snapshots[key] = (cursor, payload)
    return payload


@routes.get("/v1/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Stream `event: session` with the session JSON; `id:` is a cursor to resume from.

    With `Last-Event-ID` every change after that cursor is replayed from the store first; without
    it the stream opens with the current state of every open session (same cursor), then goes
    live. Optional `?agent_id=` narrows the stream to one agent.
    """
    account_id = require_account(request)
    agent_id = request.query.get("agent_id")
    if agent_id is not None and not ID_PATTERN.fullmatch(agent_id):
        raise InvalidInput(
            "invalid_parameter", "agent_id must be an agent id", field="/query/agent_id"
        )
    raw_cursor, where = request.headers.get("Last-Event-ID"), "/header/Last-Event-ID"
    if raw_cursor is None:
        raw_cursor, where = request.query.get("last_event_id"), "/query/last_event_id"
    cursor: int | None = None
    if raw_cursor is not None:
        if not CURSOR.fullmatch(raw_cursor):
            raise InvalidInput(
                "invalid_parameter",
                "Last-Event-ID must be a cursor this stream sent (a whole number)",
                field=where,
            )
        cursor = int(raw_cursor)
    service = request.app[SERVICE]
    if cursor is not None and cursor > service.hub.last_cursor(account_id):
        # Maybe a cursor another instance sent that this one has not passed on yet.
        await service.catch_up(account_id)
    if cursor is not None and cursor > service.hub.last_cursor(account_id):
        # A cursor from another store (or a rebuilt one): skipping events up to it would lose
        # changes, so start over with the current state instead.
        cursor = None
    if cursor is not None and cursor + 1 < await service.first_change_seq(account_id):
        # Older than the retained feed ([store] keep_changes): what came between is gone, so
        # start over with the current state of the open sessions, as a new stream would.
        log.info("sse_cursor_pruned", account_id=account_id, cursor=cursor)
        cursor = None
    metrics = request.app[METRICS]
    sub = service.hub.subscribe(account_id, agent_id)
    metrics.sse_streams.inc()
    try:
        async with sse_response(request, ping_interval=PING_SECONDS) as stream:

            async def send(seq: int, session: Session) -> None:
                # view_bytes: one encoding per open session version, shared by every stream.
                data = service.view_bytes(session).decode()
                await stream.send(data, id=str(seq), event="session")

            sent = service.hub.last_cursor(account_id) if cursor is None else cursor
            if cursor is None:
                await stream.write(await _snapshot(request, account_id, agent_id, sent))
            else:
                while True:
                    page = await service.changes_after(account_id, sent, REPLAY_PAGE)
                    for change in page:
                        if agent_id is None or change.session.agent_id == agent_id:
                            await send(change.seq, change.session)
                        sent = change.seq
                    if len(page) < REPLAY_PAGE:
                        break
            await _follow(stream, sub, send, sent)
    except ConnectionResetError:
        pass  # the desktop left; it resumes with Last-Event-ID when it comes back
    finally:
        service.hub.unsubscribe(sub)
        metrics.sse_streams.dec()
    return stream
