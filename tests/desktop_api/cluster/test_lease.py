"""Source leases on a real PostgreSQL: one instance runs a leased source, the others stand by;
the holder that loses its connection stops its source at once, and a standby takes over within
about `lease_retry`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import structlog

from desktop_api.cluster.lease import APPLICATION_PREFIX, LeaseKeeper, lease_key, lock_ids
from desktop_api.config import Settings
from desktop_api.testing import RunningBridge, running_bridge, settings_for
from tests.phone_drivers.ami.test_ami_client import ScriptedPeer, logged_in_then_serve
from tests.rig.postgres import Cluster

RETRY = 0.2  # lease_retry of the instances here
NAME = "ami:pbx-ami"


@dataclass
class FakeSource:
    """Stands for an AMI source: records when it is started and stopped."""

    events: list[tuple[str, float]] = field(default_factory=list)
    running: bool = False

    async def start(self) -> None:
        self.running = True
        self.events.append(("start", time.monotonic()))

    async def stop(self) -> None:
        self.running = False
        self.events.append(("stop", time.monotonic()))


@dataclass
class Instance:
    keeper: LeaseKeeper
    source: FakeSource

    @property
    def holds(self) -> bool:
        return self.keeper.leases[NAME].held


@pytest.fixture
def db_url(pg_cluster: Cluster) -> str:
    return pg_cluster.create_database(f"lease{time.monotonic_ns()}")


@contextlib.asynccontextmanager
async def instances(url: str, *names: str) -> AsyncIterator[dict[str, Instance]]:
    out: dict[str, Instance] = {}
    try:
        for name in names:
            source = FakeSource()
            keeper = LeaseKeeper(url, name, RETRY)
            keeper.add(NAME, source.start, source.stop)
            keeper.start()
            out[name] = Instance(keeper, source)
            # the first one started takes the lease before the next starts
            await until(lambda k=keeper: k.connected, 5)  # type: ignore[misc]
            await asyncio.sleep(RETRY / 2)
        yield out
    finally:
        for i in out.values():
            await i.keeper.close()


async def until(cond: Callable[[], bool], within: float) -> float:
    """Wait until `cond()`; the seconds it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def terminate(url: str, instance: str) -> int:
    """End the instance's lease connection from the server side (as a crash or a network cut
    that the server noticed would); how many backends ended."""
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (APPLICATION_PREFIX + instance,),
        ).fetchall()
    return len(rows)


def server_holder(url: str) -> str | None:
    """Who holds the lease, read by a bystander straight from pg_locks."""
    classid, objid = lock_ids(lease_key(NAME))
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.classid::bigint = %s AND l.objid::bigint = %s",
            (classid, objid),
        ).fetchone()
    return None if row is None else str(row[0])


async def test_one_instance_holds_and_the_others_stand_by(db_url: str) -> None:
    async with instances(db_url, "a", "b", "c") as inst:
        await asyncio.sleep(3 * RETRY)  # the standbys have tried several times
        assert [n for n, i in inst.items() if i.source.running] == ["a"]
        assert [n for n, i in inst.items() if i.holds] == ["a"]
        assert [e for e, _ in inst["b"].source.events] == []
        # every instance names the holder; only the holder says it is its own
        assert inst["a"].keeper.holders() == {NAME: {"holder": "a", "mine": True}}
        assert inst["b"].keeper.holders() == {NAME: {"holder": "a", "mine": False}}
        assert inst["c"].keeper.holders() == {NAME: {"holder": "a", "mine": False}}
        # and the server agrees, through the connection's name
        assert await asyncio.to_thread(server_holder, db_url) == "transfer-bridge a"


async def test_the_holder_that_loses_its_connection_stops_at_once_and_a_standby_takes_over(
    db_url: str,
) -> None:
    async with instances(db_url, "a", "b") as inst:
        a, b = inst["a"], inst["b"]
        assert a.source.running and not b.source.running
        cut = time.monotonic()
        assert await asyncio.to_thread(terminate, db_url, "a") == 1
        stopped = await until(lambda: not a.source.running, 2)
        taken = await until(lambda: b.source.running, 3 * RETRY + 2)
        print(f"holder stopped {stopped * 1000:.0f} ms after its connection was cut; standby "
              f"took over {(time.monotonic() - cut) * 1000:.0f} ms after")  # fmt: skip
        assert stopped < RETRY + 0.5, "the holder noticed late"
        assert taken < 2 * RETRY + 1.0
        # never both at once: a's source stopped before b's started
        assert a.source.events[-1][1] <= b.source.events[0][1]
        # a reconnects as a standby and names the new holder
        await until(lambda: a.keeper.holders()[NAME] == {"holder": "b", "mine": False}, 5)
        assert b.keeper.holders()[NAME] == {"holder": "b", "mine": True}
        await asyncio.sleep(3 * RETRY)
        assert not a.source.running and b.source.running


async def test_closing_the_holder_hands_over(db_url: str) -> None:
    async with instances(db_url, "a", "b") as inst:
        await inst["a"].keeper.close()
        assert not inst["a"].source.running
        await until(lambda: inst["b"].source.running, 2 * RETRY + 1.0)
        assert await asyncio.to_thread(server_holder, db_url) == "transfer-bridge b"


async def test_a_database_restart_stops_the_source_until_the_lease_is_held_again(
    pg_cluster: Cluster, db_url: str
) -> None:
    async with instances(db_url, "a", "b") as inst:
        await asyncio.to_thread(pg_cluster.stop, "fast")
        try:
            await until(lambda: not any(i.source.running for i in inst.values()), RETRY + 0.5)
            assert inst["a"].keeper.holders()[NAME] == {"holder": None, "mine": False}
            assert inst["a"].keeper.error
            await asyncio.sleep(3 * RETRY)
            assert not any(i.source.running for i in inst.values())
        finally:
            await asyncio.to_thread(pg_cluster.start)
        await until(lambda: sum(i.source.running for i in inst.values()) == 1, 10)
        await asyncio.sleep(3 * RETRY)
        assert sum(i.source.running for i in inst.values()) == 1
        holder = next(n for n, i in inst.items() if i.holds)
        await until(lambda: all(i.keeper.holders()[NAME]["holder"] == holder
                                for i in inst.values()), 5)  # fmt: skip


async def test_the_password_is_never_logged(pg_cluster: Cluster, db_url: str) -> None:
    wrong = db_url.replace(pg_cluster.password, "not-the-" + pg_cluster.password)
    with structlog.testing.capture_logs() as logs:
        keeper = LeaseKeeper(wrong, "x", RETRY, connect_timeout=2)
        source = FakeSource()
        keeper.add(NAME, source.start, source.stop)
        keeper.start()
        await asyncio.sleep(4 * RETRY)
        assert keeper.error and "password" in keeper.error.lower()  # authentication failed
        assert not source.running
        await keeper.close()
    text = repr(logs) + repr(keeper.error) + repr(keeper.holders())
    assert pg_cluster.password not in text
    assert any(e["event"] == "lease_connect_failed" for e in logs)


# --- wired into the bridge: the AMI source runs on the instance holding `ami:<name>` ---------


def ami_settings(tmp_path: Path, store_url: str, instance: str, port: int) -> Settings:
    entry = {"name": "pbx-ami", "host": "127.0.0.1", "port": port,
             "username": "bridge", "secret": "ami-secret"}  # fmt: skip
    return replace(
        settings_for(tmp_path),
        store_url=store_url,
        instance=instance,
        lease_retry=RETRY,
        sources={"ami": [entry]},
    )


async def health(http: aiohttp.ClientSession, bridge: RunningBridge) -> dict[str, Any]:
    async with http.get(bridge.url + "/healthz") as r:
        body: dict[str, Any] = await r.json()
        return body


async def lease_metric(http: aiohttp.ClientSession, bridge: RunningBridge) -> str:
    async with http.get(bridge.url + "/metrics") as r:
        text = await r.text()
    return next(line for line in text.splitlines()
                if line.startswith('transfer_bridge_lease_held{lease="ami:pbx-ami"}'))  # fmt: skip


async def wait_health(
    http: aiohttp.ClientSession, bridge: RunningBridge, cond: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        h = await health(http, bridge)
        if cond(h):
            return h
        assert time.monotonic() < deadline, h
        await asyncio.sleep(0.02)


def ami_up(h: dict[str, Any]) -> bool:
    return bool(h["sources"]["pbx-ami"]["status"] == "connected")


async def test_two_bridges_on_one_database_log_in_to_the_ami_once(
    tmp_path: Path, db_url: str
) -> None:
    async with ScriptedPeer(logged_in_then_serve) as pbx, aiohttp.ClientSession() as http:
        a_ctx = running_bridge(ami_settings(tmp_path / "a", db_url, "a", pbx.port))
        a = await a_ctx.__aenter__()
        try:
            await wait_health(http, a, ami_up)
            async with running_bridge(ami_settings(tmp_path / "b", db_url, "b", pbx.port)) as b:
                await asyncio.sleep(3 * RETRY)  # b has tried for the lease several times
                assert pbx.connections == 1, "both instances logged in to the AMI"
                ha, hb = await health(http, a), await health(http, b)
                assert ha["sources"]["pbx-ami"]["lease"] == "held"
                assert hb["sources"]["pbx-ami"] == {
                    "kind": "ami", "status": "standby", "lease": "standby",
                    "address": f"127.0.0.1:{pbx.port}"}  # fmt: skip
                held_by_a = {NAME: {"holder": "a", "mine": True}}
                assert ha["cluster"] | {"feed": None} == {
                    "instance": "a",
                    "store": "postgresql",
                    "leases": held_by_a,
                    "feed": None,
                }
                assert ha["cluster"]["feed"]["listening"] is True  # NOTIFY wakes it
                seen_by_b = {NAME: {"holder": "a", "mine": False}}
                assert hb["cluster"] | {"feed": None} == {
                    "instance": "b",
                    "store": "postgresql",
                    "leases": seen_by_b,
                    "feed": None,
                }
                assert (await lease_metric(http, a)).endswith(" 1.0")
                assert (await lease_metric(http, b)).endswith(" 0.0")

                # a stops: its AMI login ends, b logs in and resyncs
                await a_ctx.__aexit__(None, None, None)
                a_ctx = None
                hb = await wait_health(http, b, ami_up)
                assert hb["sources"]["pbx-ami"]["lease"] == "held"
                assert hb["cluster"]["leases"] == {NAME: {"holder": "b", "mine": True}}
                assert pbx.connections == 2 and pbx.closed == 1
                assert (await lease_metric(http, b)).endswith(" 1.0")
        finally:
            if a_ctx is not None:
                await a_ctx.__aexit__(None, None, None)


async def test_on_sqlite_nothing_is_leased(tmp_path: Path) -> None:
    settings = replace(
        ami_settings(tmp_path, "", "solo", 0), store_url=settings_for(tmp_path).store_url
    )
    async with ScriptedPeer(logged_in_then_serve) as pbx, aiohttp.ClientSession() as http:
        settings = replace(
            settings, sources={"ami": [{**settings.sources["ami"][0], "port": pbx.port}]}
        )
        async with running_bridge(settings) as bridge:
            h = await wait_health(http, bridge, ami_up)
            assert "lease" not in h["sources"]["pbx-ami"]
            assert h["cluster"] == {
                "instance": "solo",
                "store": "sqlite",
                "leases": {},
                "feed": {"listening": False, "changes_read": 0},
            }


class UdpPbx:
    """A PBX that only listens: who sent a SUBSCRIBE (and with which Expires)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.subscribes: list[tuple[tuple[str, int], str]] = []  # (from, Expires)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, addr = self.sock.recvfrom(65535)
                text = data.decode(errors="replace")
                if text.startswith("SUBSCRIBE "):
                    expires = re.search(r"^Expires:\s*(\d+)", text, re.M | re.I)
                    self.subscribes.append((addr, expires.group(1) if expires else "?"))

    def senders(self) -> set[tuple[str, int]]:
        return {addr for addr, _ in self.subscribes}

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


def dialog_settings(tmp_path: Path, store_url: str, instance: str, port: int) -> Settings:
    entry = {"name": "pbx-dialog", "pbx": f"127.0.0.1:{port}", "listen": "127.0.0.1:0",
             "username": "watcher", "password": "dialog-pw", "extensions": ["1001"]}  # fmt: skip
    return replace(ami_settings(tmp_path, store_url, instance, 0), sources={"dialog": [entry]})


async def test_a_leased_dialog_source_subscribes_from_one_instance_at_a_time(
    tmp_path: Path, db_url: str
) -> None:
    pbx = UdpPbx()
    try:
        async with aiohttp.ClientSession() as http:
            a_ctx = running_bridge(dialog_settings(tmp_path / "a", db_url, "a", pbx.port))
            a = await a_ctx.__aenter__()
            try:
                await until(lambda: len(pbx.subscribes) >= 1, 5)
                (from_a,) = pbx.senders()
                async with running_bridge(
                    dialog_settings(tmp_path / "b", db_url, "b", pbx.port)
                ) as b:
                    await asyncio.sleep(3 * RETRY)
                    assert pbx.senders() == {from_a}, "the standby subscribed too"
                    hb = await health(http, b)
                    assert hb["sources"]["pbx-dialog"]["lease"] == "standby"
                    assert hb["sources"]["pbx-dialog"]["status"] == "standby"
                    assert hb["cluster"]["leases"] == {
                        "dialog:pbx-dialog": {"holder": "a", "mine": False}
                    }
                    ha = await health(http, a)
                    assert ha["sources"]["pbx-dialog"]["lease"] == "held"

                    await a_ctx.__aexit__(None, None, None)  # a stops its subscriber, lets go
                    a_ctx = None
                    await until(lambda: len(pbx.senders()) == 2, 2 * RETRY + 1)
                    hb = await health(http, b)
                    assert hb["sources"]["pbx-dialog"]["lease"] == "held"
                    assert hb["cluster"]["leases"]["dialog:pbx-dialog"]["holder"] == "b"
            finally:
                if a_ctx is not None:
                    await a_ctx.__aexit__(None, None, None)
    finally:
        pbx.close()


class FreezingProxy:
    """A TCP relay to the database that can go silent (a network cut: nothing passes, no
    connection is closed) and later drop its connections (what the server does once its
    keepalive probes go unanswered)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.frozen = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def drop(self) -> None:
        for w in self._writers:
            w.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if self.frozen.is_set():
                        await asyncio.Event().wait()  # swallowed, and nothing more passes
                    dst.write(data)
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_a_holder_cut_off_from_the_database_stops_its_source_before_the_lock_is_freed(
    pg_cluster: Cluster, db_url: str
) -> None:
    async with FreezingProxy(pg_cluster.port) as proxy:
        via_proxy = db_url.replace(f":{pg_cluster.port}/", f":{proxy.port}/")
        a_source, b_source = FakeSource(), FakeSource()
        a = LeaseKeeper(via_proxy, "a", RETRY)
        a.add(NAME, a_source.start, a_source.stop)
        b = LeaseKeeper(db_url, "b", RETRY)
        b.add(NAME, b_source.start, b_source.stop)
        try:
            a.start()
            await until(lambda: a_source.running, 5)
            b.start()
            await until(lambda: b.connected, 5)
            cut = time.monotonic()
            proxy.frozen.set()
            # a hears nothing back: it stops its source within about two checks ...
            stopped = await until(lambda: not a_source.running, 2 * RETRY + 2)
            assert a.error and "no answer" in a.error, a.error
            # ... while the server still holds a's lock (its end of the connection is alive):
            # nobody runs the source, rather than two at once
            await asyncio.sleep(3 * RETRY)
            assert not b_source.running
            assert await asyncio.to_thread(server_holder, db_url) == "transfer-bridge a"
            # the server gives up on the connection (here: the relay drops it): b takes over
            proxy.drop()
            await until(lambda: b_source.running, 2 * RETRY + 1)
            print(f"cut off: the holder stopped its source {stopped * 1000:.0f} ms after the cut"
                  f" ({time.monotonic() - cut:.1f} s to b's takeover)")  # fmt: skip
        finally:
            await a.close()
            await b.close()
