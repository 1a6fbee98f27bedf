"""Hostile HTTP clients against a real `transfer-bridge serve` process (issue 14, items 5, 6, 8).

Forged requests, slow and silent clients, a crowd beyond the descriptor limit, abandoned
long-polls, many event streams, refused devices: each case checks what the bridge answers, what
it logs (no key, no token, no flood), its memory, and the latency of a normal request measured
while the abuse runs (printed; asserted only against a generous bound, the figures belong to
the report). Each case is kept to a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.deskphone.events import derive_secret
from desktop_api.testing import ApiClient
from tests.desktop_api import bridge_proc
from tests.desktop_api.bridge_proc import BridgeProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DEVICE_KEY = "hostile-device-key"
MAC = "001565abcdef"


def rss_kib(bridge: BridgeProc) -> int:
    for line in Path(f"/proc/{bridge.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(bridge: BridgeProc) -> int:
    return len(list(Path(f"/proc/{bridge.proc.pid}/fd").iterdir()))


def log_records(bridge: BridgeProc) -> list[dict[str, Any]]:
    out = []
    for line in bridge.log_text().splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line is one JSON object
    return out


async def setup_tenant(bridge: BridgeProc) -> tuple[str, str]:
    """acme with agent a-7 (a Yealink desk phone) and an open session s-1; (token, device key)."""
    async with aiohttp.ClientSession() as http:
        admin = ApiClient(http, bridge.url, bridge_proc.ADMIN)
        r = await admin.post("/v1/accounts", {"id": "acme", "name": "A", "transfer_enabled": True})
        assert r.status == 201
        token = (await admin.post("/v1/accounts/acme/tokens")).body["token"]
        api = admin.with_token(token)
        device = {"vendor": "yealink", "mac": MAC}
        r = await api.put(
            "/v1/agents/a-7",
            {"name": "Ana", "phone": {"sip_uri": "sip:1001@pbx", "device": device}},
        )
        assert r.status == 201, r.body
        r = await api.post(
            "/v1/sessions", {"id": "s-1", "agent_id": "a-7", "customer": {"number": "+3491"}}
        )
        assert r.status == 201
    return token, derive_secret(DEVICE_KEY, "acme", MAC)


class Latency:
    """A normal request (`GET /v1/sessions/s-1` with the account token) every 20 ms, timed."""

    def __init__(self, bridge: BridgeProc, token: str) -> None:
        self.url = bridge.url + "/v1/sessions/s-1"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.times: list[float] = []
        self.failures = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                started = time.perf_counter()
                try:
                    async with http.get(self.url, headers=self.headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    self.times.append(time.perf_counter() - started)
                else:
                    self.failures += 1
                await asyncio.sleep(0.02)

    def summary(self) -> dict[str, float]:
        t = sorted(self.times)
        return {
            "n": len(t),
            "failed": self.failures,
            "p50_ms": round(statistics.median(t) * 1000, 1),
            "p99_ms": round(t[int(len(t) * 0.99) - 1] * 1000, 1),
            "max_ms": round(t[-1] * 1000, 1),
        }


@contextlib.asynccontextmanager
async def measured(bridge: BridgeProc, token: str, case: str) -> AsyncIterator[Latency]:
    latency = Latency(bridge, token)
    before = rss_kib(bridge)
    task = asyncio.create_task(latency.run())
    try:
        yield latency
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    figures = latency.summary()
    print(f"{case}: normal request {figures}, RSS {before} -> {rss_kib(bridge)} KiB")
    assert figures["n"] > 0, f"{case}: no normal request succeeded"
    assert figures["max_ms"] < 3000, f"{case}: {figures}"


async def raw_exchange(port: int, data: bytes, within: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[BridgeProc]:
    settings = {
        "TRANSFER_BRIDGE_DESKPHONES_DEVICE_KEY": DEVICE_KEY,
        "TRANSFER_BRIDGE_HTTP_IDLE_TIMEOUT": "2",
        "TRANSFER_BRIDGE_HTTP_BODY_TIMEOUT": "2",
    }
    async with bridge_proc.running(tmp_path / "bridge", settings) as running:
        yield running


async def test_forged_requests_answer_json_and_nothing_secret_reaches_the_log(
    bridge: BridgeProc,
) -> None:
    token, key = await setup_tenant(bridge)
    device = f"/v1/devices/acme/yealink/incoming_call?mac={MAC}&call_id=1&key={key}"
    forged = [
        # a control character in a header next to a valid bearer token
        f"GET /v1/sessions/s-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\x01\r\n\r\n",
        # a broken request line holding a valid device key
        f"GET {device} HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
        f"GET {device}\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"G\x7fT {device} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET {device} HTTP/9.9\r\nHost: x\r\n\r\n",
        # headers aiohttp refuses, with the token in them
        f"GET /v1/sessions/s-1 HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
        f" Folded: {token}\r\n\r\n",
        f"POST /v1/sessions HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        f"POST /v1/sessions HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        f"GET {device}&x={'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v1/sessions/s-1 HTTP/1.1\r\nX-Big: {'b' * 9000}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n",
    ]
    for request in forged:
        raw = await raw_exchange(bridge.port, request.encode("latin-1"))
        status, headers, body = split_response(raw)
        assert 400 <= status < 500, (request[:60], raw[:300])
        assert headers["content-type"].startswith("application/json"), raw[:300]
        error = json.loads(body)["error"]
        assert set(error) == {"code", "message", "field"}, body
        assert key not in raw.decode("latin-1") and token not in raw.decode("latin-1")
    # 200 refused device requests from one client: a few log lines, not 200
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            async with http.get(bridge.url + device.replace(key, "A" * 26)) as r:
                assert r.status == 403
    await asyncio.sleep(0.3)
    text = bridge.log_text()
    assert key not in text and token not in text, "a secret reached the log"
    records = log_records(bridge)
    refused = [r for r in records if r["event"] == "deskphone_refused"]
    assert 1 <= len(refused) <= 2, len(refused)
    assert not [r for r in records if r.get("level") == "error"], records[-5:]
    print(f"forged: {len(forged)} requests, {len(records)} log lines, {len(refused)} refusal lines")


async def test_slow_and_silent_clients_are_cut_and_normal_requests_go_on(
    bridge: BridgeProc,
) -> None:
    token, _ = await setup_tenant(bridge)
    fds_before = open_fds(bridge)
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    async with measured(bridge, token, "slow clients (300: silent, half a head, dribbled body)"):
        for i in range(300):
            reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
            if i % 3 == 1:
                writer.write(b"GET /v1/sessions/s-1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            elif i % 3 == 2:
                writer.write(
                    f"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
                )
            readers.append(reader)
            writers.append(writer)
        await asyncio.sleep(0.5)
        assert open_fds(bridge) >= fds_before + 200  # they are connected
        started = time.monotonic()
        # the bridge closes every one of them: heads after idle_timeout, bodies with a 408
        answers = await asyncio.wait_for(asyncio.gather(*(r.read() for r in readers)), 10)
        took = time.monotonic() - started
    statuses = sorted({a.split(b" ")[1] for a in answers if a})
    assert statuses in ([b"408"], []), statuses
    assert sum(1 for a in answers if a.startswith(b"HTTP/1.1 408")) == 100
    assert took < 6, took
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.3)
    assert open_fds(bridge) <= fds_before + 5
    print(f"slow clients cut after {took:.1f} s")


async def test_abandoned_long_polls_are_released_at_once(bridge: BridgeProc) -> None:
    token, _ = await setup_tenant(bridge)
    poll = (
        "GET /v1/sessions/s-1?wait=60&version=1 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    async with (
        aiohttp.ClientSession() as http,
        measured(bridge, token, "1000 abandoned long-polls"),
    ):
        for _round in range(2):
            writers = []
            for _ in range(500):
                _reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
                writer.write(poll.encode())
                writers.append(writer)
            await asyncio.sleep(0.5)
            assert await long_polls(http, bridge) == 500
            for writer in writers:
                writer.transport.abort()
            await asyncio.sleep(0.5)
            assert await long_polls(http, bridge) == 0  # not after their 60 s


async def long_polls(http: aiohttp.ClientSession, bridge: BridgeProc) -> int:
    async with http.get(bridge.url + "/metrics") as r:
        text = await r.text()
    [line] = [ln for ln in text.splitlines() if ln.startswith("transfer_bridge_long_polls ")]
    return int(float(line.split()[1]))


async def test_many_event_streams_at_once_leave_other_requests_fast(bridge: BridgeProc) -> None:
    token, _ = await setup_tenant(bridge)
    async with aiohttp.ClientSession() as http:
        api = ApiClient(http, bridge.url, token)
        for i in range(30):
            r = await api.post(
                "/v1/sessions", {"id": f"s-x{i}", "agent_id": "a-7", "customer": {"number": "9"}}
            )
            assert r.status == 201
    request = f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    writers = []
    async with measured(bridge, token, "500 event streams opened at once, 31 open sessions"):
        opened = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", bridge.port) for _ in range(500))
        )
        for _reader, writer in opened:
            writer.write(request.encode())
            writers.append(writer)
        # every stream gets the 31 open sessions
        first = await asyncio.wait_for(opened[-1][0].readuntil(b"id: "), 10)
        assert first.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1.0)
    for writer in writers:
        writer.transport.abort()


async def test_a_crowd_beyond_the_descriptor_limit_is_refused_quietly(tmp_path: Path) -> None:
    """With `ulimit -n 256` and 600 clients: connections beyond the cap are closed at once, no
    accept error floods the log, and once the crowd leaves normal requests work."""
    settings = {"TRANSFER_BRIDGE_HTTP_IDLE_TIMEOUT": "3"}
    async with bridge_proc.running(tmp_path / "b", settings, nofile=256) as bridge:
        token, _ = await setup_tenant(bridge)
        writers = []
        refused = 0
        async with measured(bridge, token, "600 idle connections, 256 descriptors"):
            for _ in range(600):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
                except OSError:
                    refused += 1
                    continue
                writers.append((reader, writer))
            await asyncio.sleep(4)  # idle_timeout: the crowd is cut
        closed = sum(1 for reader, _ in writers if reader.at_eof())
        for _, writer in writers:
            writer.transport.abort()
        assert closed == len(writers)
        lines = bridge.log_text().splitlines()
        print(f"crowd: {len(writers)} connected, {refused} refused, {len(lines)} log lines")
        assert len(lines) < 60, lines[-10:]
        assert not any("out of system resource" in line for line in lines)
        async with aiohttp.ClientSession() as http:
            api = ApiClient(http, bridge.url, token)
            assert (await api.get("/v1/sessions/s-1")).status == 200
            async with http.get(bridge.url + "/metrics") as r:
                metrics = await r.text()
        [line] = [
            ln
            for ln in metrics.splitlines()
            if ln.startswith("transfer_bridge_http_connections_refused")
        ]
        assert float(line.split()[1]) > 0, "the cap was never reached: the case tests nothing"


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random byte edits: flip, insert (often a control byte), delete, duplicate."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(4)
        if kind == 0 and at < len(out):
            out[at] = rng.randrange(256)
        elif kind == 1:
            out[at:at] = bytes([rng.choice((0, 1, 10, 13, 32, 58, 127, 255, rng.randrange(256)))])
        elif kind == 2 and at < len(out):
            del out[at]
        else:
            out[at:at] = out[at : at + rng.randint(1, 40)]
    return bytes(out)


async def test_mutated_requests_never_get_a_5xx_and_never_leak(bridge: BridgeProc) -> None:
    """Thousands of byte-mutated copies of real requests (a device's with its key, the
    desktop's with its token): each answer is JSON when it is an error, never a 5xx, and no
    key or token reaches the log. FUZZ_REQUESTS sets how many (default 2000)."""
    token, key = await setup_tenant(bridge)
    seeds = [
        f"GET /v1/devices/acme/yealink/incoming_call?mac={MAC}&call_id=1&remote=9&key={key} "
        "HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v1/sessions/s-1?wait=0&version=1 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\n\r\n",
        f"POST /v1/sessions/s-1/transfer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        'Content-Type: application/json\r\nContent-Length: 18\r\n\r\n{"action": "open"}',
        f"POST /v1/devices/acme/poly?key={key} HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n"
        "<PolycomIPPhone><IncomingCallEvent/></PolycomIPPhone>      ",
    ]
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "14")))
    total = int(os.environ.get("FUZZ_REQUESTS", "2000"))
    statuses: Counter[int] = Counter()
    semaphore = asyncio.Semaphore(50)

    async def one(data: bytes) -> None:
        async with semaphore:
            try:
                raw = await raw_exchange(bridge.port, data, within=5)
            except (ConnectionError, TimeoutError):
                statuses[0] += 1
                return
        if not raw:
            statuses[0] += 1  # closed without an answer (an idle head, cut after idle_timeout)
            return
        status, headers, body = split_response(raw)
        statuses[status] += 1
        assert status < 500, (data, raw[:400])
        if status >= 400:
            assert headers.get("content-type", "").startswith("application/json"), raw[:400]
            assert set(json.loads(body)["error"]) == {"code", "message", "field"}

    started = rss_kib(bridge)
    async with measured(bridge, token, f"{total} mutated requests"):
        await asyncio.gather(*(one(mutate(rng, rng.choice(seeds).encode())) for _ in range(total)))
    text = bridge.log_text()
    assert key not in text and token not in text, "a secret reached the log"
    lines = len(text.splitlines())
    grown = rss_kib(bridge) - started
    print(f"mutated: {dict(sorted(statuses.items()))}, {lines} log lines, RSS +{grown} KiB")
    assert lines < total / 4, "the log grows with every refused request"
