"""Hold one long-poll open on each of many sessions, re-issuing each as soon as it returns.

    BENCH_TOKEN=tb_... python bench/longpoll_holder.py --base http://127.0.0.1:8080 \
        --ids ids.txt [--wait 60]

Reads the sessions' current versions with a plain GET, then keeps
`GET /v1/sessions/{id}?wait=W&version=V` open on every one, one connection each. On SIGTERM
or SIGINT it prints one JSON line (`{"sessions", "reissued", "errors"}`) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

import aiohttp


async def hold(
    http: aiohttp.ClientSession, base: str, session_id: str, wait: int, stats: dict[str, int]
) -> None:
    """Keep one long-poll on `session_id` open forever."""
    url = f"{base}/v1/sessions/{session_id}"
    async with http.get(url) as resp:
        version = (await resp.json())["version"]
    while True:
        try:
            params = {"wait": str(wait), "version": str(version)}
            async with http.get(url, params=params) as resp:
                body = await resp.json()
            if resp.status == 200:
                version = body["version"]
                stats["reissued"] += 1
            else:
                stats["errors"] += 1
                await asyncio.sleep(1)
        except (aiohttp.ClientError, TimeoutError):
            stats["errors"] += 1
            await asyncio.sleep(1)


async def amain(base: str, ids: list[str], wait: int, token: str) -> dict[str, int]:
    """Run until a stop signal; return the counters."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = {"sessions": len(ids), "reissued": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=wait + 30)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as http:
        tasks = [asyncio.create_task(hold(http, base, i, wait, stats)) for i in ids]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def main() -> None:
    """Parse arguments, hold the long-polls, print the counters on exit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--ids", type=Path, required=True, help="one session id per line")
    parser.add_argument("--wait", type=int, default=60)
    args = parser.parse_args()
    ids = args.ids.read_text().split()
    stats = asyncio.run(amain(args.base, ids, args.wait, os.environ["BENCH_TOKEN"]))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
