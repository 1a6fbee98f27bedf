"""Several `transfer-bridge serve` processes on ONE PostgreSQL database, as a deployment behind a
load balancer runs them: each its own HTTP port, `[cluster] instance` name and HEP listener (its
own UDP port, the recordings' auth key), the feed catch-up at its default interval.

Every instance's HEP source has the same name (`capture`): one capture point whose stream may
be sent to one instance or duplicated to several, so evidence names the same source whichever
instance applied it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bridge.hep.decode import decode_hep
from bridge.sip import parse_message
from desktop_api.keys import SOURCES
from desktop_api.testing import ApiClient, EventStream, running_bridge, settings_for
from tests.desktop_api import bridge_proc
from tests.desktop_api.bridge_proc import BridgeProc
from tests.rig.hepfile import FIXTURES, read_hep_file

ADMIN = bridge_proc.ADMIN
HEP_KEY = "rig-hep-secret"  # the auth key of the recordings in tests/fixtures/hep/
HEP_SOURCE = "capture"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(hep_port: int) -> str:
    """The instance's file: only its HEP source (sources are configured in a file only)."""
    return (
        "[[sources.hep]]\n"
        f'name = "{HEP_SOURCE}"\n'
        f'listen = "127.0.0.1:{hep_port}"\n'
        f'password = "{HEP_KEY}"\n'
        "match_user = true\n"
    )


def send_hep(port: int, packets: Iterable[bytes]) -> None:
    """Send HEP datagrams to a listener on 127.0.0.1, as a capture point does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet in packets:
            sock.sendto(packet, ("127.0.0.1", port))


@dataclass
class Instance:
    """One running instance and a client pool to reach it."""

    name: str
    proc: BridgeProc
    hep_port: int
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.proc.url

    def log_text(self) -> str:
        return self.proc.log_text()

    def admin(self) -> ApiClient:
        return ApiClient(self.http, self.url, ADMIN)

    def api(self, token: str) -> ApiClient:
        return ApiClient(self.http, self.url, token)

    def send_hep(self, packets: Iterable[bytes]) -> None:
        """Send HEP datagrams to this instance's listener, as a capture point does."""
        send_hep(self.hep_port, packets)

    async def metric(self, name: str) -> float:
        """One unlabelled value of /metrics."""
        async with self.http.get(self.url + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics of {self.name}")

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        async with self.http.get(self.url + "/healthz") as r:
            return r.status, await r.json()

    @contextlib.asynccontextmanager
    async def events(
        self, token: str, *, last_event_id: str | None = None, query: str = ""
    ) -> AsyncIterator[EventStream]:
        """An SSE stream of the token's account on this instance (its own connection); the
        stream is subscribed once this yields (the bridge subscribes before it answers)."""
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{self.url}/v1/events{query}", headers=headers) as resp,
        ):
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            yield EventStream(resp)

    async def stop(self) -> int:
        """SIGTERM, and wait (SIGKILL after 10 s)."""
        return await bridge_proc.stop(self.proc)

    async def kill(self) -> int:
        """SIGKILL: the instance dies without a word."""
        return await bridge_proc.stop(self.proc, signal.SIGKILL)


async def start_instance(
    directory: Path,
    database_url: str,
    name: str,
    http: aiohttp.ClientSession,
    env: dict[str, str] | None = None,
) -> Instance:
    """One instance in `directory/name` on the database, up once /healthz answers 200."""
    hep_port = free_udp_port()
    settings = {
        "TRANSFER_BRIDGE_STORE_URL": database_url,
        "TRANSFER_BRIDGE_CLUSTER_INSTANCE": name,
        "TRANSFER_BRIDGE_LOG_LEVEL": "info",
        **(env or {}),
    }
    proc = await bridge_proc.start(directory / name, settings, config=config(hep_port))
    return Instance(name, proc, hep_port, http)


@contextlib.asynccontextmanager
async def running_instances(
    directory: Path,
    database_url: str,
    names: Sequence[str] = ("A", "B", "C"),
    env: dict[str, str] | None = None,
) -> AsyncIterator[list[Instance]]:
    """The instances, started at once (schema migrations are serialised by the store), each
    stopped (killed if it must be) at the end; a test's failure shows their logs' tails."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        started = await asyncio.gather(
            *(start_instance(directory, database_url, n, http, env) for n in names),
            return_exceptions=True,
        )
        instances = [i for i in started if isinstance(i, Instance)]
        try:
            for outcome in started:
                if isinstance(outcome, BaseException):
                    raise outcome
            yield instances
        finally:
            await asyncio.gather(*(i.stop() for i in instances), return_exceptions=True)


@dataclass
class Tenant:
    """An account with transfer on, its token, and agents a-7 (1001) and a-8 (1002)."""

    account_id: str
    token: str


async def make_tenant(instance: Instance, account_id: str = "acme") -> Tenant:
    """The admin's set-up through one instance: account, token, the agents and their phones."""
    admin = instance.admin()
    body = {"id": account_id, "name": account_id.title(), "transfer_enabled": True}
    r = await admin.post("/v1/accounts", body)
    assert r.status == 201, r.body
    r = await admin.post(f"/v1/accounts/{account_id}/tokens")
    assert r.status == 201, r.body
    token = r.body["token"]
    api = instance.api(token)
    for agent, ext in (("a-7", "1001"), ("a-8", "1002")):
        r = await api.put(
            f"/v1/agents/{agent}", {"name": agent, "phone": {"sip_uri": f"sip:{ext}@pbx.example"}}
        )
        assert r.status == 201, r.body
    return Tenant(account_id, token)


async def until(
    check: Any, what: str, within: float = 5.0, interval: float = 0.02
) -> Any:  # check: () -> Awaitable[value or None/False]
    """Poll `check()` until it gives a true value; that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        assert loop.time() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(interval)


class Capture:
    """A recorded real transfer (tests/fixtures/hep/), sent in parts as a capture point sends it."""

    def __init__(self, case: str) -> None:
        self.packets = read_hep_file(FIXTURES / f"{case}.hep")
        self.sent = 0

    def index(self, predicate: str) -> int:
        """The first packet not yet sent whose SIP text is the REFER (`refer`) or the target's
        200 OK to the PBX's INVITE (`target answers`)."""
        for n in range(self.sent, len(self.packets)):
            payload = decode_hep(self.packets[n]).payload
            if predicate == "refer" and payload.startswith(b"REFER "):
                return n
            if predicate == "target answers" and payload.startswith(b"SIP/2.0 200 OK"):
                msg = parse_message(payload)
                if msg.cseq.method == "INVITE" and b"To: <sip:1002@" in payload:
                    return n
        raise AssertionError(f"no {predicate!r} in the capture")

    def send_until(self, port: int, end: int | None = None) -> None:
        """Send the packets up to (not including) `end` to one HEP listener."""
        end = len(self.packets) if end is None else end
        send_hep(port, self.packets[self.sent : end])
        self.sent = end


async def settled(
    instance: Instance, token: str, sid: str, quiet: float = 1.0, within: float = 10.0
) -> dict[str, Any]:
    """The session once it stopped changing for `quiet` seconds (the phone's last packets,
    such as the hang-ups after a transfer, may still add versions)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: dict[str, Any] | None = None
    since = loop.time()
    while True:
        r = await instance.api(token).get(f"/v1/sessions/{sid}")
        assert r.status == 200, r.body
        if last is None or r.body["version"] != last["version"]:
            last, since = r.body, loop.time()
        elif loop.time() - since >= quiet:
            return last
        assert loop.time() < deadline, f"{sid} still changing after {within} s"
        await asyncio.sleep(0.05)


async def one_bridge(
    directory: Path, case: str, session: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference for a capture: one bridge (in this process, on SQLite, its HEP source
    named as the instances' are), the agents of `make_tenant`, `session` opened, the capture
    received once; the session and its audit trail as it then answers them."""
    source = {"name": HEP_SOURCE, "listen": "127.0.0.1:0", "password": HEP_KEY}
    settings = dataclasses.replace(
        settings_for(directory, ADMIN), sources={"hep": [{**source, "match_user": True}]}
    )
    capture = Capture(case)
    async with running_bridge(settings) as bridge, aiohttp.ClientSession() as http:
        admin = ApiClient(http, bridge.url, ADMIN)
        body = {"id": "acme", "name": "Acme", "transfer_enabled": True}
        assert (await admin.post("/v1/accounts", body)).status == 201
        api = admin.with_token((await admin.post("/v1/accounts/acme/tokens")).body["token"])
        for agent, ext in (("a-7", "1001"), ("a-8", "1002")):
            phone = {"sip_uri": f"sip:{ext}@pbx.example"}
            assert (
                await api.put(f"/v1/agents/{agent}", {"name": agent, "phone": phone})
            ).status == 201
        assert (await api.post("/v1/sessions", session)).status == 201
        listener = bridge.app[SOURCES].hep[0].listener
        capture.send_until(listener.address[1])

        async def received() -> bool:
            return bool(listener.stats.received >= len(capture.packets))

        await until(received, "the reference bridge read the capture")
        await bridge.evidence.drain()
        await asyncio.sleep(0.2)
        await bridge.evidence.drain()
        sid = session["id"]
        got = (await api.get(f"/v1/sessions/{sid}")).body
        return got, (await api.get(f"/v1/sessions/{sid}/audit")).body
