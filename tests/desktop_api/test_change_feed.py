"""How a desktop follows a session: long-poll (`?wait=&version=`), ETags, Server-Sent Events.

Waiting requests are synchronised through `/metrics` (`transfer_bridge_long_polls`,
`transfer_bridge_sse_streams`), never by sleeping and hoping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import structlog

from bridge.model import Action
from desktop_api.testing import ApiClient, EventStream, Reply, RunningBridge
from tests.conftest import STORES

pytestmark = STORES  # the same API behaviour on SQLite and on PostgreSQL

# --- helpers -----------------------------------------------------------------------------


def now() -> float:
    return asyncio.get_running_loop().time()


async def metric(client: ApiClient, name: str) -> float:
    r = await client.get("/metrics")
    assert r.status == 200
    for line in r.raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def until_metric(client: ApiClient, name: str, value: float, within: float = 3.0) -> None:
    deadline = now() + within
    while (seen := await metric(client, name)) != value:
        assert now() < deadline, f"{name} stayed {seen}, expected {value}"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def stream(
    bridge: RunningBridge,
    token: str,
    *,
    last_event_id: str | None = None,
    query: str = "",
) -> AsyncIterator[EventStream]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{bridge.url}/v1/events{query}", headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        yield EventStream(resp)


def brief(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["data"]["id"], e["data"]["version"]) for e in events]


async def get(api: ApiClient, sid: str) -> dict[str, Any]:
    r = await api.get(f"/v1/sessions/{sid}")
    assert r.status == 200, r.body
    return r.body  # type: ignore[no-any-return]


@pytest.fixture
async def other_client(bridge: RunningBridge, api: ApiClient) -> AsyncIterator[ApiClient]:
    """The same account from another desktop (its own connection pool)."""
    async with aiohttp.ClientSession() as http:
        yield ApiClient(http, bridge.url, api.token)


def poll(api: ApiClient, sid: str, version: int, wait: float) -> asyncio.Task[Reply]:
    params = {"wait": f"{wait:g}", "version": str(version)}
    return asyncio.create_task(api.get(f"/v1/sessions/{sid}", params=params))


# --- long-poll ---------------------------------------------------------------------------


async def test_long_poll_answers_promptly_when_another_desktop_steps(
    api: ApiClient, other_client: ApiClient, session_opener: Any
) -> None:
    opened = await session_opener(api, "s-1")
    assert opened["version"] == 1
    waiting = poll(api, "s-1", 1, 5)
    await until_metric(api, "transfer_bridge_long_polls", 1)
    started = now()
    stepped = await other_client.step("s-1", "open")
    assert stepped.status == 200
    r = await waiting
    assert now() - started < 1.0, "the long-poll was not woken by the change"
    assert r.status == 200
    assert r.body["version"] == 2
    assert r.body["transfer"]["state"] == "offered"
    assert r.headers["ETag"] == '"2"'
    assert r.body == stepped.body == await get(api, "s-1")
    assert await metric(api, "transfer_bridge_long_polls") == 0


async def test_long_poll_answers_the_unchanged_session_when_the_wait_expires(
    api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, "s-1")
    before = await get(api, "s-1")
    started = now()
    r = await poll(api, "s-1", 1, 1)
    elapsed = now() - started
    assert 0.9 <= elapsed < 3.0, elapsed
    assert r.status == 200
    assert r.body == before
    assert r.headers["ETag"] == '"1"'


async def test_long_poll_answers_at_once_when_the_desktop_is_behind_or_it_ended(
    api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, "s-1")
    assert (await api.step("s-1", "open")).status == 200
    for version, params in [
        (0, {"wait": "30", "version": "0"}),
        (1, {"wait": "30", "version": "1"}),
        (None, {"wait": "30"}),  # without a version there is nothing to wait for
        (None, {"version": "2"}),  # without wait neither
        (None, {"wait": "0", "version": "2"}),
    ]:
        started = now()
        r = await api.get("/v1/sessions/s-1", params=params)
        assert now() - started < 0.5, (version, params)
        assert r.status == 200 and r.body["version"] == 2
    assert (await api.post("/v1/sessions/s-1/end", {"result": "sold"})).status == 200
    started = now()
    r = await api.get("/v1/sessions/s-1", params={"wait": "30", "version": "3"})
    assert now() - started < 0.5, "an ended session never changes again: no reason to wait"
    assert r.body["status"] == "ended" and r.body["version"] == 3


async def test_long_poll_is_released_when_the_session_ends(
    api: ApiClient, other_client: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, "s-1")
    waiting = poll(api, "s-1", 1, 10)
    await until_metric(api, "transfer_bridge_long_polls", 1)
    started = now()
    assert (await other_client.post("/v1/sessions/s-1/end", {"result": "sold"})).status == 200
    r = await waiting
    assert now() - started < 1.0
    assert r.body["status"] == "ended" and r.body["result"] == "sold"
    assert r.body["actions"] == []


async def test_several_desktops_waiting_on_one_session_are_all_woken(
    api: ApiClient, other_client: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, "s-1")
    waiting = [poll(api, "s-1", 1, 10) for _ in range(5)]
    await until_metric(api, "transfer_bridge_long_polls", 5)
    started = now()
    assert (await other_client.step("s-1", "open")).status == 200
    replies = await asyncio.gather(*waiting)
    assert now() - started < 1.0
    assert {r.body["version"] for r in replies} == {2}


async def test_a_long_poll_that_starts_while_another_is_being_answered_is_still_woken(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    """A desktop whose poll arrives just as another desktop's poll is being answered.

    Its registration lands between the change that wakes the first poll and the first poll's
    clean-up; that clean-up must not throw the new waiter away. The timing is made exact by
    calling the service the way the HTTP handler does (`transfer_step`, then `hub.wait`);
    everything observed goes through HTTP.
    """
    await session_opener(api, "s-1")
    first = poll(api, "s-1", 1, 5)
    await until_metric(api, "transfer_bridge_long_polls", 1)
    service = bridge.service
    await service.transfer_step("acme", "s-1", Action.OPEN)  # version 2, wakes `first`
    second = asyncio.create_task(service.hub.wait("acme", "s-1", 5))  # registers right now
    assert (await first).body["version"] == 2
    await asyncio.sleep(0.05)
    assert await metric(api, "transfer_bridge_long_polls") == 1, "the second poll was dropped"
    started = now()
    assert (await api.step("s-1", "internal")).status == 200
    try:
        await asyncio.wait_for(asyncio.shield(second), 1.0)
    except TimeoutError:
        await second
        pytest.fail(f"the second poll slept through the change ({now() - started:.1f} s)")


async def test_etag_is_the_version_and_if_none_match_answers_304(
    api: ApiClient, session_opener: Any
) -> None:
    r = await api.post(
        "/v1/sessions",
        {
            "id": "s-1",
            "agent_id": "a-7",
            "customer": {"number": "1"},
            "call": {"state": "connected"},
        },
    )
    assert r.status == 201 and r.headers["ETag"] == '"1"'
    r = await api.get("/v1/sessions/s-1")
    assert r.headers["ETag"] == f'"{r.body["version"]}"' == '"1"'
    r = await api.get("/v1/sessions/s-1", headers={"If-None-Match": '"1"'})
    assert r.status == 304
    assert r.raw == b""
    assert r.headers["ETag"] == '"1"'
    stepped = await api.step("s-1", "open")
    assert stepped.headers["ETag"] == '"2"'
    r = await api.get("/v1/sessions/s-1", headers={"If-None-Match": '"1"'})
    assert r.status == 200 and r.body["version"] == 2 and r.headers["ETag"] == '"2"'
    r = await api.get("/v1/sessions/s-1", headers={"If-None-Match": '"2"'})
    assert r.status == 304
    ended = await api.post("/v1/sessions/s-1/end", {"result": "sold"})
    assert ended.headers["ETag"] == '"3"'
    r = await api.get("/v1/sessions/s-1", headers={"If-None-Match": '"3"'})
    assert r.status == 304 and r.headers["ETag"] == '"3"'


# --- Server-Sent Events ----------------------------------------------------------------


async def test_events_open_with_current_sessions_go_live_and_resume_without_loss(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, "s-1")
    await session_opener(api, "s-2", number="+34900000002")
    await session_opener(api, "s-3", number="+34900000003")
    assert (await api.post("/v1/sessions/s-3/end", {"result": "x"})).status == 200
    token = api.token
    assert token is not None
    seen: dict[str, list[int]] = {"s-1": [], "s-2": []}

    async with stream(bridge, token) as events:
        snapshot = await events.take(2)
        await events.quiet(0.3)  # ended s-3 is not part of the current state
        assert sorted(e["data"]["id"] for e in snapshot) == ["s-1", "s-2"]
        assert all(e["event"] == "session" for e in snapshot)
        assert len({e["id"] for e in snapshot}) == 1, "the snapshot shares one cursor"
        for e in snapshot:
            assert e["data"] == await get(api, e["data"]["id"])
            seen[e["data"]["id"]].append(e["data"]["version"])

        stepped = await api.step("s-1", "open")
        live = await events.next()
        assert live is not None and live["event"] == "session"
        assert int(live["id"]) > int(snapshot[0]["id"])
        assert live["data"] == stepped.body
        seen["s-1"].append(live["data"]["version"])
        last_id = live["id"]

    # Missed while disconnected: two changes on two sessions.
    internal = await api.step("s-1", "internal")
    ended = await api.post("/v1/sessions/s-2/end", {"result": "sold"})
    assert internal.status == ended.status == 200

    async with stream(bridge, token, last_event_id=last_id) as events:
        missed = await events.take(2)
        await events.quiet()
        assert brief(missed) == [("s-1", 3), ("s-2", 2)]
        assert [e["data"] for e in missed] == [internal.body, ended.body]
        ids = [int(e["id"]) for e in missed]
        assert int(last_id) < ids[0] < ids[1]
        for e in missed:
            seen[e["data"]["id"]].append(e["data"]["version"])
        # and the resumed stream is live again
        nxt = await api.step("s-1", "next")
        again = await events.next()
        assert again is not None and again["data"] == nxt.body
        assert int(again["id"]) > ids[1]
        seen["s-1"].append(again["data"]["version"])

    assert seen == {"s-1": [1, 2, 3, 4], "s-2": [1, 2]}, "every version, in order, once"


async def test_events_resume_with_the_query_parameter_too(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, "s-1")
    token = api.token
    assert token is not None
    async with stream(bridge, token) as events:
        (first,) = await events.take(1)
    for action in ("open", "dismiss", "open"):
        assert (await api.step("s-1", action)).status == 200
    async with stream(bridge, token, query=f"?last_event_id={first['id']}") as events:
        replay = await events.take(3)
        await events.quiet(0.3)
    assert brief(replay) == [("s-1", 2), ("s-1", 3), ("s-1", 4)]
    # The header wins over the query parameter.
    last = replay[1]["id"]
    async with stream(
        bridge, token, last_event_id=last, query=f"?last_event_id={first['id']}"
    ) as events:
        assert brief(await events.take(1)) == [("s-1", 4)]
        await events.quiet(0.3)


async def test_events_for_one_agent(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    r = await api.put(
        "/v1/agents/a-8", {"name": "Bo", "phone": {"sip_uri": "sip:1002@pbx.example"}}
    )
    assert r.status == 201
    await session_opener(api, "s-7", agent_id="a-7")
    await session_opener(api, "s-8", agent_id="a-8", number="+34900000008")
    token = api.token
    assert token is not None
    async with stream(bridge, token, query="?agent_id=a-8") as events:
        snapshot = await events.take(1)
        assert brief(snapshot) == [("s-8", 1)]
        assert (await api.step("s-7", "open")).status == 200
        assert (await api.step("s-8", "open")).status == 200
        live = await events.take(1)
        await events.quiet(0.3)
    assert brief(live) == [("s-8", 2)]
    assert (await api.step("s-7", "internal")).status == 200
    assert (await api.step("s-8", "internal")).status == 200
    async with stream(
        bridge, token, last_event_id=snapshot[0]["id"], query="?agent_id=a-8"
    ) as events:
        replay = await events.take(2)
        await events.quiet(0.3)
    assert brief(replay) == [("s-8", 2), ("s-8", 3)]


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "0x10", "1e3", "12abc"])
async def test_a_bad_last_event_id_is_refused(
    bridge: RunningBridge, api: ApiClient, cursor: str
) -> None:
    r = await api.get("/v1/events", headers={"Last-Event-ID": cursor})
    assert r.status == 400, r.raw[:200]
    assert r.body == {
        "error": {
            "code": "invalid_parameter",
            "message": r.body["error"]["message"],
            "field": "/header/Last-Event-ID",
        }
    }
    assert await metric(api, "transfer_bridge_sse_streams") == 0


@pytest.mark.parametrize("cursor", ["\u00b2", "\u00b9\u00b2"], ids=["superscript-2", "sup-12"])
async def test_a_last_event_id_of_unicode_digits_is_refused_not_a_crash(
    api: ApiClient, cursor: str
) -> None:
    """`str.isdigit()` accepts '²', which `int()` then refuses: must be a 400, not a 500."""
    r = await api.get("/v1/events", headers={"Last-Event-ID": cursor})
    assert r.status == 400, r.raw[:200]
    assert r.body["error"]["code"] == "invalid_parameter"
    assert r.body["error"]["field"] == "/header/Last-Event-ID"


async def test_a_bad_last_event_id_query_parameter_names_the_query_parameter(
    api: ApiClient,
) -> None:
    r = await api.get("/v1/events", params={"last_event_id": "abc"})
    assert r.status == 400
    assert r.body["error"]["code"] == "invalid_parameter"
    assert r.body["error"]["field"] == "/query/last_event_id"


async def test_a_bad_agent_filter_is_refused(api: ApiClient) -> None:
    r = await api.get("/v1/events", params={"agent_id": "a 7"})
    assert r.status == 400
    # openapi.yaml says invalid_field, the code answers invalid_parameter (a query parameter).
    assert r.body["error"]["code"] in ("invalid_field", "invalid_parameter")
    assert r.body["error"]["field"] == "/query/agent_id"


async def test_a_desktop_leaving_its_stream_is_not_an_error(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    """Closing the desktop is normal: no 500 in the metrics, no error with a traceback."""
    await session_opener(api, "s-1")
    token = api.token
    assert token is not None
    with structlog.testing.capture_logs() as logs:
        async with stream(bridge, token) as events:
            await events.take(1)
        assert (await api.step("s-1", "open")).status == 200
        await until_metric(api, "transfer_bridge_sse_streams", 0)
    r = await api.get("/metrics")
    failures = [
        line
        for line in r.raw.decode().splitlines()
        if line.startswith("transfer_bridge_http_requests_total") and 'status="5' in line
    ]
    assert failures == []
    assert [e for e in logs if e.get("log_level") in ("error", "critical")] == []


# --- the account's transfer switch ----------------------------------------------------


async def test_switching_transfer_off_and_on_reaches_waiting_desktops(
    bridge: RunningBridge, admin: ApiClient, api: ApiClient, session_opener: Any
) -> None:
    opened = await session_opener(api, "s-1")
    assert "transfer.open" in opened["actions"]
    await session_opener(api, "s-2", number="+34900000002")
    assert (await api.post("/v1/sessions/s-2/end", {"result": "x"})).status == 200
    token = api.token
    assert token is not None
    async with stream(bridge, token) as events:
        await events.take(1)
        waiting = poll(api, "s-1", 1, 5)
        await until_metric(api, "transfer_bridge_long_polls", 1)
        started = now()
        r = await admin.patch("/v1/accounts/acme", {"transfer_enabled": False})
        assert r.status == 200 and r.body["transfer_enabled"] is False
        off = await waiting
        assert now() - started < 1.0
        assert off.body["version"] == 2
        assert "transfer.open" not in off.body["actions"]
        assert off.body["actions"] == ["end"]
        assert off.body["transfer"]["unavailable"]["code"] == "transfer_disabled"
        pushed = await events.next()
        assert pushed is not None and pushed["data"] == off.body

        refused = await api.step("s-1", "open")
        assert refused.status == 403 and refused.body["error"]["code"] == "transfer_disabled"
        assert (await get(api, "s-1"))["version"] == 2

        # The same value again changes nothing; switching back on offers the button again.
        assert (await admin.patch("/v1/accounts/acme", {"transfer_enabled": False})).status == 200
        assert (await get(api, "s-1"))["version"] == 2
        waiting = poll(api, "s-1", 2, 5)
        await until_metric(api, "transfer_bridge_long_polls", 1)
        assert (await admin.patch("/v1/accounts/acme", {"transfer_enabled": True})).status == 200
        on = await waiting
        assert on.body["version"] == 3 and "transfer.open" in on.body["actions"]
        assert on.body["transfer"]["unavailable"] is None
        pushed = await events.next()
        assert pushed is not None and pushed["data"] == on.body
        await events.quiet(0.3)  # the ended s-2 is not touched

    s2 = await get(api, "s-2")
    assert s2["version"] == 2 and s2["status"] == "ended"
    trail = (await api.get("/v1/sessions/s-1/audit")).body["entries"]
    switched = [e for e in trail if e["event"] == "account_transfer_switched"]
    assert [(e["kind"], e["detail"], e["version"]) for e in switched] == [
        ("system", {"transfer_enabled": False}, 2),
        ("system", {"transfer_enabled": True}, 3),
    ]


async def test_a_cursor_older_than_the_kept_feed_gets_the_current_state(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    """`[store] keep_changes` bounds the feed; a desktop away for longer than it covers gets
    the open sessions as they are now (as a new stream would), never a gap it cannot see."""
    service = bridge.service
    await session_opener(api, "s-1")
    await session_opener(api, "s-2", number="+34900000002")
    token = api.token
    assert token is not None
    async with stream(bridge, token) as events:
        first = await events.take(2)
    old_cursor = first[0]["id"]
    for action in ("open", "internal", "next"):
        assert (await api.step("s-1", action)).status == 200
    assert (await api.post("/v1/sessions/s-2/end", {"result": "sold"})).status == 200
    # keep only the newest change: the ones right after the old cursor are gone
    assert await service.prune_changes(1) >= 3
    assert await service.first_change_seq("acme") > int(old_cursor) + 1
    async with stream(bridge, token, last_event_id=old_cursor) as events:
        now_state = await events.take(1)
        await events.quiet(0.3)
        assert brief(now_state) == [("s-1", 4)]  # the open session as it is; s-2 has ended
        assert int(now_state[0]["id"]) == bridge.service.hub.last_cursor("acme")
        stepped = await api.step("s-1", "dismiss")
        live = await events.next()
        assert live is not None and live["data"] == stepped.body
    # a cursor still inside the kept feed resumes exactly as before
    kept = str(await service.first_change_seq("acme") - 1)
    async with stream(bridge, token, last_event_id=kept) as events:
        replay = await events.take(2)
        assert brief(replay) == [("s-2", 2), ("s-1", 5)]
