"""The AMI client: against a real Asterisk 22 (login, events, actions, a refused secret) and
against a scripted TCP peer for what a real Asterisk never sends (garbage, oversized messages,
silence, a close mid-message), every time with short back-off so nothing sleeps long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import structlog

from bridge.ami import AmiEvent
from phone_drivers.ami import (
    AmiClient,
    AmiNotConnected,
    AmiTimeouts,
    Backoff,
)
from tests.rig.procs import wait_until

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
SECRET = "s3cret-never-logged"
FAST = Backoff(initial=0.02, factor=2.0, cap=0.2, jitter=0.0, stable_after=60, auth_failed_min=0.05)
QUICK = AmiTimeouts(connect=2, banner=0.3, login=0.3, action=1, ping_interval=30, ping_timeout=1)

Got = list[tuple[str, Any]]


# --- a scripted peer ------------------------------------------------------------------------


class Peer:
    """The far end of one accepted connection: plain non-blocking socket calls, no transports,
    so the test owns (and closes) every socket it opens."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    async def recv(self) -> bytes:
        return await asyncio.get_running_loop().sock_recv(self.sock, 65536)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def read_action(self) -> dict[str, str]:
        """One action the client sent, as a dict (first value of each key)."""
        while b"\r\n\r\n" not in self.buf:
            data = await self.recv()
            if not data:
                raise ConnectionError("the client closed the connection")
            self.buf += data
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        fields: dict[str, str] = {}
        for line in raw.decode().split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep:
                fields.setdefault(key, value)
        return fields

    async def reply(self, action: dict[str, str], *lines: str) -> None:
        body = "".join(f"{line}\r\n" for line in lines)
        head = f"Response: Success\r\nActionID: {action['ActionID']}\r\n"
        await self.send(f"{head}{body}\r\n".encode())

    async def log_in(self) -> dict[str, str]:
        await self.send(BANNER)
        login = await self.read_action()
        assert login["Action"] == "Login"
        await self.reply(login, "Message: Authentication accepted")
        return login

    async def serve_actions(self) -> None:
        """Answer every action with Success (Ping with Pong) until the client goes away."""
        while True:
            action = await self.read_action()
            pong = action["Action"] == "Ping"
            await self.reply(action, "Ping: Pong" if pong else "Message: ok")

    async def until_closed(self) -> None:
        """Read (and ignore) until the client closes the connection."""
        while await self.recv():
            pass

    def close(self) -> None:
        self.sock.close()


Script = Callable[[Peer], Awaitable[None]]


async def logged_in_then_serve(p: Peer) -> None:
    await p.log_in()
    await p.serve_actions()


class ScriptedPeer:
    """A TCP server on 127.0.0.1; connection n runs ``scripts[n]`` (the last one repeats)."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = scripts
        self.connections = 0
        self.connected_at: list[float] = []
        self.closed = 0  # connections that ended (the client closed, or the script did)
        self.port = 0
        self._listener = socket.socket()
        self._socks: set[socket.socket] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedPeer:
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        # A reader callback, not sock_accept: an accepted socket is registered at once, so a
        # cancellation can never drop one unclosed.
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)
        return self

    async def __aexit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self._listener.fileno())
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        for sock in (*self._socks, self._listener):
            sock.close()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self._socks.add(sock)
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        self.connected_at.append(time.monotonic())
        task = asyncio.create_task(self._handle(Peer(sock), script))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, peer: Peer, script: Script) -> None:
        try:
            await script(peer)
            if peer.sock.fileno() >= 0:
                await peer.until_closed()  # hold the connection until the client closes it
        except OSError:
            pass
        finally:
            self.closed += 1
            peer.close()
            self._socks.discard(peer.sock)


def make_client(
    port: int,
    got: Got | None = None,
    *,
    secret: str = SECRET,
    backoff: Backoff = FAST,
    timeouts: AmiTimeouts = QUICK,
    **kw: Any,
) -> AmiClient:
    events = got if got is not None else []
    return AmiClient(
        "pbx-test",
        "127.0.0.1",
        port,
        "bridge",
        secret,
        lambda event, at: events.append((event.name, at)),
        backoff=backoff,
        timeouts=timeouts,
        **kw,
    )


@contextlib.asynccontextmanager
async def started(client: AmiClient) -> AsyncIterator[AmiClient]:
    client.start()
    try:
        yield client
    finally:
        await client.close()


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def retry_delays(logs: list[dict[str, Any]]) -> list[float]:
    return [e["retry_in"] for e in logs if e["event"] in ("ami_connect_failed", "ami_disconnected")]


def assert_no_ami_tasks() -> None:
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("ami-")]
    assert left == []


# --- scripted peer: the happy path ----------------------------------------------------------


async def test_events_reach_the_sink_in_order_after_on_connected() -> None:
    sent_login: dict[str, str] = {}

    async def script(p: Peer) -> None:
        sent_login.update(await p.log_in())
        await p.send(
            b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n"
            b"Event: Newchannel\r\nChannel: PJSIP/1001-00000001\r\n\r\n"
            b"Event: Bad\r\nthis line has no colon\r\n\r\n"  # malformed: dropped, counted
            b"Event: Boom\r\n\r\n"  # the sink raises on this one
            b"Event: Hangup\r\nChannel: PJSIP/1001-00000001\r\n\r\n"
        )
        await asyncio.sleep(0.05)
        await p.send(b"Event: Later\r\n\r\n")
        await p.serve_actions()

    got: Got = []
    ticks = iter(range(1000, 2000))

    def sink(event: AmiEvent, at: float) -> None:
        if event.name == "Boom":
            raise RuntimeError("a bug downstream")
        got.append((event.name, at))

    async with ScriptedPeer(script) as peer:
        client = AmiClient(
            "pbx-test",
            "127.0.0.1",
            peer.port,
            "bridge",
            SECRET,
            sink,
            clock=lambda: float(next(ticks)),
            backoff=FAST,
            timeouts=QUICK,
            on_connected=lambda: got.append(("connected", None)),
        )
        with structlog.testing.capture_logs() as logs:
            async with started(client):
                await wait_until(lambda: len(got) >= 5, 5, what="events")
                assert [name for name, _ in got] == [
                    "connected",
                    "FullyBooted",
                    "Newchannel",
                    "Hangup",
                    "Later",
                ]
                first_batch = {at for name, at in got[1:4]}
                assert len(first_batch) == 1  # one read, one receive time
                assert got[4][1] > got[3][1]
                health = client.health
                assert health["status"] == "connected" and health["error"] is None
                assert health["address"] == f"127.0.0.1:{peer.port}"
                assert client.banner == "Asterisk Call Manager/11.0.0"
                st = client.stats
                assert (st.events, st.malformed, st.sink_errors) == (5, 1, 1)
                assert (st.connects, st.reconnects, st.disconnects) == (1, 0, 0)
            assert_no_ami_tasks()
    assert sent_login["Username"] == "bridge" and sent_login["Secret"] == SECRET
    assert sent_login["Events"] == "on" and sent_login["ActionID"]
    assert any(e["event"] == "ami_event_failed" for e in logs)
    assert any(e["event"] == "ami_message_malformed" for e in logs)
    assert SECRET not in repr(logs)


async def test_action_round_trip_timeout_and_late_answer() -> None:
    async def script(p: Peer) -> None:
        await p.log_in()
        while True:
            action = await p.read_action()
            if action["Action"] == "Slow":
                await asyncio.sleep(0.3)  # answered after the client gave up
            await p.reply(action, f"Echo: {action.get('Channel', '-')}")

    async with ScriptedPeer(script) as peer:
        client = make_client(peer.port)
        with pytest.raises(AmiNotConnected):
            await client.action("Ping")
        async with started(client):
            assert await client.wait_connected(2)
            response = await client.action("Status", Channel="PJSIP/1001-00000001")
            assert response.ok, response
            assert response.get("Echo") == "PJSIP/1001-00000001"
            assert response.action_id is not None
            with pytest.raises(TimeoutError):
                await client.action("Slow", response_timeout=0.1)
            assert client.stats.action_timeouts == 1
            await wait_until(lambda: client.stats.unexpected == 1, 2, what="late answer")
            # the connection is still fine after that
            again = await client.action("Status", [("Channel", "x"), ("Variable", "A=1")])
            assert again.get("Echo") == "x"
            assert client.stats.connects == 1


async def test_a_waiting_action_fails_when_the_connection_drops() -> None:
    async def drops_on_hangup(p: Peer) -> None:
        await p.log_in()
        await p.read_action()
        p.close()

    async with ScriptedPeer(drops_on_hangup, logged_in_then_serve) as peer:
        client = make_client(peer.port)
        async with started(client):
            assert await client.wait_connected(2)
            start = time.monotonic()
            with pytest.raises(AmiNotConnected):
                await client.action("Hangup", Channel="x", response_timeout=5)
            assert time.monotonic() - start < 1
            await wait_until(lambda: client.stats.reconnects == 1, 3, what="reconnect")
            assert client.connected and client.stats.disconnects == 1
            assert (await client.action("Ping")).get("Ping") == "Pong"


async def test_async_on_connected_hook_runs_after_every_login_and_may_send_actions() -> None:
    async def short_lived(p: Peer) -> None:
        await p.log_in()
        await p.reply(await p.read_action(), "Message: resync 1")
        await asyncio.sleep(0.05)
        p.close()

    answers: list[str | None] = []
    async with ScriptedPeer(short_lived, logged_in_then_serve) as peer:
        client: AmiClient | None = None

        async def resync() -> None:
            assert client is not None
            answers.append((await client.action("CoreShowChannels")).get("Message"))

        client = make_client(peer.port, on_connected=resync)
        async with started(client):
            await wait_until(lambda: len(answers) == 2, 3, what="two resyncs")
    assert answers == ["resync 1", "ok"]
    assert client.stats.hook_errors == 0 and client.stats.connects == 2


# --- scripted peer: failures are counted, shown in health, and retried ----------------------


async def garbage_banner(p: Peer) -> None:
    await p.send(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")  # sources.ami pointed at the wrong port


async def silent(p: Peer) -> None:
    await p.until_closed()  # reads, never says a word


async def no_login_reply(p: Peer) -> None:
    await p.send(BANNER)
    await p.read_action()
    await p.until_closed()


async def refuses_login(p: Peer) -> None:
    await p.send(BANNER)
    login = await p.read_action()
    await p.send(
        f"Response: Error\r\nActionID: {login['ActionID']}\r\n"
        "Message: Authentication failed\r\n\r\n".encode()
    )
    p.close()  # Asterisk hangs up after a refused login


async def permission_denied(p: Peer) -> None:
    await p.send(BANNER)
    login = await p.read_action()
    answer = f"Response: Error\r\nActionID: {login['ActionID']}\r\nMessage: Permission denied"
    await p.send(answer.encode() + b"\r\n\r\n")
    p.close()


async def oversized(p: Peer) -> None:
    await p.log_in()
    await p.send(b"Event: Huge\r\nData: " + b"x" * 5000 + b"\r\n\r\n")


async def closes_mid_message(p: Peer) -> None:
    await p.log_in()
    await p.send(b"Event: Newchannel\r\nChannel: PJSIP/10")
    p.close()


async def closes_after_banner(p: Peer) -> None:
    await p.send(BANNER)
    p.close()


FAILURES = {
    # script: (reason, words of the error, the counter that must grow)
    "garbage_banner": (garbage_banner, "protocol_error", "not an AMI banner", "protocol_errors"),
    "no_banner": (silent, "no_banner", "no AMI banner within 0.3 s", "timeouts"),
    "no_login_reply": (no_login_reply, "no_login_reply", "no answer to Login", "timeouts"),
    "auth_failed": (refuses_login, "auth_failed", "Authentication failed", "auth_failures"),
    "login_failed": (permission_denied, "login_failed", "Permission denied", "attempts"),
    "oversized": (oversized, "message_too_large", "exceeds limit 4096", "oversized"),
    "closed_mid_message": (
        closes_mid_message,
        "disconnected",
        "closed in the middle of a message",
        "disconnects",
    ),
    "closed_after_banner": (
        closes_after_banner,
        "disconnected",
        "closed before answering Login",
        "attempts",
    ),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
async def test_a_failing_peer_is_counted_shown_and_retried_with_growing_backoff(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    script, reason, words, counter = FAILURES[case]
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        async with ScriptedPeer(script) as peer:
            client = make_client(peer.port, max_message_size=4096)
            async with started(client):
                await wait_until(
                    lambda: client.stats.attempts >= 4 and not client.connected,
                    10,
                    what="4 attempts",
                )
                health = client.health  # read at once: a peer that lets it log in flips it
                assert health["status"] == "failing", health
                assert health["reason"] == reason
                assert health["error"].startswith(f"{reason}: ") and words in health["error"]
                assert health["retry_in"] > 0
                assert getattr(client.stats, counter) >= 3
                assert client.stats.events == 0
            assert_no_ami_tasks()
    delays = retry_delays(logs)
    if reason == "auth_failed":
        assert all(d >= FAST.auth_failed_min for d in delays)
    assert delays[:3] == sorted(delays[:3]) and delays[0] < delays[2], delays
    assert SECRET not in repr(logs) and SECRET not in caplog.text


async def test_connection_refused_backs_off_exponentially_up_to_the_cap() -> None:
    client = make_client(free_tcp_port())
    with structlog.testing.capture_logs() as logs:
        async with started(client):
            assert client.health["status"] == "connecting"
            await wait_until(lambda: client.stats.attempts >= 7, 10, what="7 attempts")
            health = client.health
    assert health["status"] == "failing" and health["reason"] == "unreachable"
    assert health["error"] == "unreachable: Connection refused"
    assert client.stats.connect_failures >= 6 and client.stats.connects == 0
    assert retry_delays(logs)[:6] == [0.02, 0.04, 0.08, 0.16, 0.2, 0.2]


async def test_backoff_restarts_after_a_stable_connection() -> None:
    async def short_session(p: Peer) -> None:
        await p.log_in()
        await asyncio.sleep(0.05)
        p.close()

    for stable_after, expected in ((60.0, [0.02, 0.04, 0.08]), (0.01, [0.02, 0.02, 0.02])):
        backoff = Backoff(initial=0.02, cap=1, jitter=0, stable_after=stable_after)
        with structlog.testing.capture_logs() as logs:
            async with ScriptedPeer(short_session) as peer:
                client = make_client(peer.port, backoff=backoff)
                stats = client.stats
                async with started(client):
                    await wait_until(lambda s=stats: s.disconnects >= 3, 5, what="3 drops")
        assert retry_delays(logs)[:3] == expected, stable_after
        assert client.stats.reconnects >= 2


async def test_a_peer_that_stops_answering_ping_is_dropped_and_replaced() -> None:
    async def deaf(p: Peer) -> None:
        await p.log_in()
        await p.until_closed()  # reads the Pings, never answers

    timeouts = AmiTimeouts(
        connect=1, banner=0.3, login=0.3, action=1, ping_interval=0.05, ping_timeout=0.1
    )
    async with ScriptedPeer(deaf, logged_in_then_serve) as peer:
        client = make_client(peer.port, timeouts=timeouts)
        async with started(client):
            await wait_until(lambda: client.stats.reconnects == 1, 5, what="a reconnect")
            assert client.stats.timeouts == 1 and client.stats.action_timeouts == 1
            pings = client.stats.actions
            await asyncio.sleep(0.3)  # the second peer answers: pings go on, no drop
            assert client.stats.actions >= pings + 3
            assert client.connected and client.stats.disconnects == 1
        assert peer.closed == 2


async def test_auth_failure_waits_longer_then_recovers_when_the_secret_is_accepted() -> None:
    slow = Backoff(initial=0.02, cap=0.2, jitter=0, auth_failed_min=0.4)
    async with ScriptedPeer(refuses_login, logged_in_then_serve) as peer:
        client = make_client(peer.port, backoff=slow)
        async with started(client):
            await wait_until(lambda: client.stats.auth_failures == 1, 3, what="refusal")
            health = client.health
            assert health["status"] == "failing" and health["reason"] == "auth_failed"
            assert health["error"] == "auth_failed: Authentication failed"
            assert health["retry_in"] == 0.4
            assert await client.wait_connected(3)
            assert client.health["status"] == "connected"
        gap = peer.connected_at[1] - peer.connected_at[0]
        assert gap >= 0.4, gap


# --- close() is prompt wherever the client is -----------------------------------------------


async def test_close_is_prompt_during_backoff_handshake_and_connection() -> None:
    # in back-off (30 s to wait)
    client = make_client(free_tcp_port(), backoff=Backoff(initial=30, cap=30))
    client.start()
    await wait_until(lambda: client.health["status"] == "failing", 3, what="first failure")
    start = time.monotonic()
    await client.close()
    assert time.monotonic() - start < 0.5
    assert_no_ami_tasks()

    slow = AmiTimeouts(connect=30, banner=30, login=30, ping_interval=30)
    async with ScriptedPeer(silent, no_login_reply, logged_in_then_serve) as peer:
        for stage in ("banner", "login", "connected"):
            client = make_client(peer.port, timeouts=slow)
            opened = peer.connections
            client.start()
            if stage == "connected":
                assert await client.wait_connected(3)
            else:
                await wait_until(lambda n=opened: peer.connections > n, 3, what=stage)
                await asyncio.sleep(0.05)  # the client now waits for the banner / login reply
            closed_before = peer.closed
            start = time.monotonic()
            await client.close()
            assert time.monotonic() - start < 0.5, stage
            # the peer sees the socket go away: nothing is left open
            await wait_until(lambda c=closed_before: peer.closed > c, 2, what="peer sees close")
            assert_no_ami_tasks()
            await client.close()  # twice is fine


def test_bad_credentials_are_refused_without_quoting_them() -> None:
    for secret in ("line\r\nAction: Originate", "nul\x00", ""):
        with pytest.raises(ValueError) as info:
            make_client(5038, secret=secret)
        assert "secret" in str(info.value)
        if secret:
            assert secret not in str(info.value)
    with pytest.raises(ValueError, match="username"):
        AmiClient("x", "h", 1, "a\nb", SECRET, lambda e, at: None)
    client = make_client(5038)
    assert SECRET not in repr(client) and SECRET not in repr(client.health)


def test_backoff_delays_grow_jitter_and_respect_the_auth_minimum() -> None:
    backoff = Backoff(initial=0.5, factor=2, cap=30, jitter=0.2, auth_failed_min=15)
    rng = random.Random(7)
    for failures in range(1, 12):
        base = min(30.0, 0.5 * 2 ** (failures - 1))
        for _ in range(20):
            assert base * 0.8 <= backoff.delay(failures, rng) <= base * 1.2
    assert backoff.delay(1, rng, auth_failed=True) >= 15
    assert backoff.delay(10_000, rng) <= 36
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        AmiTimeouts(ping_timeout=0)


# --- the real Asterisk ----------------------------------------------------------------------


# The session's one Asterisk: fixture `pbx` (tests/pbx.py, via tests/conftest.py).


def real_client(pbx: Any, got: Got, *, secret: str | None = None, **kw: Any) -> AmiClient:
    host, port = pbx.ami
    return AmiClient(
        "pbx-1",
        host,
        port,
        pbx.ami_username,
        pbx.ami_secret if secret is None else secret,
        lambda event, at: got.append((event.name, (event, at))),
        backoff=kw.pop("backoff", FAST),
        timeouts=AmiTimeouts(connect=2, banner=3, login=3, action=5),
        **kw,
    )


@pytest.mark.asterisk
async def test_asterisk_login_events_and_actions(
    pbx: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    got: Got = []
    connected: list[int] = []
    start = time.time()
    with structlog.testing.capture_logs() as logs:
        client = real_client(pbx, got, on_connected=lambda: connected.append(len(got)))
        async with started(client):
            assert await client.wait_connected(5), client.health
            assert client.banner == "Asterisk Call Manager/11.0.0"
            assert connected == [0]  # before any event of the connection
            await wait_until(lambda: any(n == "FullyBooted" for n, _ in got), 5, what="booted")

            pong = await client.action("Ping")
            assert pong.ok and pong.get("Ping") == "Pong"
            denied = await client.action("UserEvent", UserEvent="Probe")  # write=user not granted
            assert not denied.ok and denied.get("Message") == "Permission denied"

            # A real call attempt: a Local channel dialling 1001 (nobody answers); it gives up
            # after 1 s and reports the failure with our ActionID.
            queued = await client.action(
                "Originate",
                Channel="Local/1001@phones",
                Application="Wait",
                Data="1",
                Timeout="1000",
                Async="true",
            )
            assert queued.ok, queued.fields

            def originate_done() -> bool:
                return any(
                    n == "OriginateResponse" and e.get("ActionID") == queued.action_id
                    for n, (e, _) in got
                )

            await wait_until(originate_done, 10, what="OriginateResponse")
            await wait_until(
                lambda: sum(n == "Hangup" for n, _ in got) >= 2, 10, what="both Local legs hung up"
            )
            channels = [e.get("Channel") or "" for n, (e, _) in got if n == "Newchannel"]
            legs = sorted(c[-2:] for c in channels if c.startswith("Local/1001@phones-"))
            assert legs == [";1", ";2"], channels
            assert all(start <= at <= time.time() for _, (_, at) in got)
            assert client.health["status"] == "connected"
            assert client.stats.malformed == 0 and client.stats.protocol_errors == 0

            # Logoff: Asterisk answers Goodbye and hangs up; the client logs in again.
            bye = await client.action("Logoff")
            assert bye.response == "Goodbye"
            await wait_until(lambda: client.stats.reconnects == 1, 5, what="re-login")
            assert len(connected) == 2 and client.stats.disconnects == 1
            assert (await client.action("Ping")).ok
    assert any(e["event"] == "ami_connected" for e in logs)
    out, err = capfd.readouterr()
    for text in (repr(logs), caplog.text, out, err):
        assert pbx.ami_secret not in text


@pytest.mark.asterisk
async def test_asterisk_refuses_a_wrong_secret_and_the_client_keeps_retrying(
    pbx: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + pbx.ami_secret[::-1]
    got: Got = []
    backoff = Backoff(initial=0.02, cap=0.2, jitter=0, auth_failed_min=0.2)
    with structlog.testing.capture_logs() as logs:
        client = real_client(pbx, got, secret=wrong, backoff=backoff)
        async with started(client):
            await wait_until(lambda: client.stats.auth_failures >= 3, 10, what="3 refusals")
            health = client.health
            assert health["status"] == "failing" and health["reason"] == "auth_failed"
            assert health["error"] == "auth_failed: Authentication failed"
            assert health["retry_in"] >= 0.2
            assert client.stats.connects == 0 and got == []
    delays = retry_delays(logs)
    assert len(delays) >= 3 and all(d >= 0.2 for d in delays)
    out, err = capfd.readouterr()
    for text in (repr(logs), caplog.text, out, err):
        assert wrong not in text and pbx.ami_secret not in text


async def test_closed_it_says_stopped_and_started_again_it_logs_in_again() -> None:
    """What a lease lost and taken back does to an AMI source (desktop_api/cluster/lease.py)."""
    async with ScriptedPeer(logged_in_then_serve) as pbx:
        client = make_client(pbx.port)
        async with started(client):
            await wait_until(lambda: client.connected, 5, what="logged in")
        assert client.health["status"] == "stopped" and not client.connected
        async with started(client):
            assert client.health["status"] == "connecting"
            await wait_until(lambda: client.connected, 5, what="logged in again")
        assert pbx.connections == 2 and client.stats.connects == 2
        assert_no_ami_tasks()
