"""Fallback HTTP/1.1 load generator for when `wrk` is not installed (one process's share).

    BENCH_TOKEN=tb_... python bench/py_loadgen.py --port 8080 --ids ids.txt \
        --connections 32 --duration 3 --start-at <unix time>

Keeps N keep-alive connections busy with `GET /v1/sessions/{random id}` (one request in flight
per connection, like wrk) on raw asyncio protocols, not an HTTP client library: aiohttp's client
tops out below the server's rate on one core. `http_get_session.py` starts several of these and
merges their JSON output (`requests`, `non2xx`, `bytes`, `seconds`, `lat_us`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import time
from pathlib import Path

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class Load:
    """Shared state of one process: the request pool and the counters."""

    def __init__(self, requests: list[bytes], end: float) -> None:
        self.requests = requests
        self.end = end
        self.count = 0
        self.non2xx = 0
        self.bytes = 0
        self.lat_us: list[int] = []
        self.done = asyncio.get_running_loop().create_future()
        self.open = 0


class Conn(asyncio.Protocol):
    """One connection: send, read one full response, record, send again."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.buf = bytearray()
        self.need = -1
        self.status = 0
        self.t0 = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.load.open += 1
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.open -= 1
        if self.load.open == 0 and not self.load.done.done():
            self.load.done.set_result(None)

    def send(self) -> None:
        self.t0 = time.perf_counter()
        if self.t0 >= self.load.end:
            self.transport.close()
            return
        self.transport.write(random.choice(self.load.requests))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            self.status = int(head[9:12])
            match = CONTENT_LENGTH.search(head)
            self.need = end + 4 + (int(match.group(1)) if match else 0)
        if len(buf) < self.need:
            return
        load = self.load
        load.count += 1
        load.bytes += self.need
        load.lat_us.append(int((time.perf_counter() - self.t0) * 1e6))
        if not 200 <= self.status < 400:
            load.non2xx += 1
        del buf[: self.need]
        self.need = -1
        self.send()


async def run(args: argparse.Namespace, token: str) -> dict[str, object]:
    """Connect, wait for the common start, load for `duration` seconds."""
    ids = args.ids.read_text().split()
    requests = [
        (
            f"GET /v1/sessions/{i} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        for i in ids
    ]
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    load = Load(requests, started + args.duration)
    for _ in range(args.connections):
        await loop.create_connection(lambda: Conn(load), args.host, args.port)
    await asyncio.wait_for(load.done, args.duration + 10)
    seconds = time.perf_counter() - started
    return {
        "requests": load.count,
        "non2xx": load.non2xx,
        "bytes": load.bytes,
        "seconds": seconds,
        "lat_us": load.lat_us,
    }


def main() -> None:
    """Parse arguments, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ids", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args, os.environ.get("BENCH_TOKEN", "")))))


if __name__ == "__main__":
    main()
