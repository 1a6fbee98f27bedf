"""Issue 14 item 7 over the wire: hostile but well-formed HEP through a running bridge's socket.

A real `transfer-bridge serve` process with one `[[sources.hep]]`; the test sends, with the
right HEP password: one watched phone's INVITE storm (none answered, each stamped in 2106),
INVITEs with 29 KB Call-IDs (about the phone and about no one), then the same storm again as
fast as the sender can go, so that the socket's queue overflows. While it runs, a desktop
request (`GET /v1/sessions/{id}`) and `/healthz` are timed. It checks what an operator and a
desktop would notice: the process's memory stays bounded, the normal request stays quick,
every datagram is either received or counted as dropped by the kernel, and the tables show
their caps and evictions.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from bridge.hep.encode import encode_hep
from desktop_api.testing import ApiClient
from tests.conftest import make_tenant, open_session
from tests.integration.bridge_process import ADMIN, BridgeProcess, free_tcp_port

pytestmark = pytest.mark.slow

PASSWORD = "flood-password"
YEAR_2106 = 4_294_967_295.0
STORM = int(os.environ.get("HEP_FLOOD_INVITES", "20000"))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def invite(call_id: str, user: str = "1001", to: str = "2001", n: int = 0) -> bytes:
    sip = (
        f"INVITE sip:{to}@pbx.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.11:5060;branch=z9hG4bK{n}\r\n"
        f"From: <sip:{user}@pbx.example>;tag=t{n}\r\n"
        f"To: <sip:{to}@pbx.example>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:{user}@10.0.0.11:5060>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return encode_hep(
        sip,
        src_ip="10.0.0.11",
        src_port=5060,
        dst_ip="10.0.0.2",
        dst_port=5060,
        timestamp=YEAR_2106,
        auth_key=PASSWORD,
    )


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1 : line.index("}")].split(",")))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in /metrics")


async def timed_requests(
    api: ApiClient, http: aiohttp.ClientSession, url: str, stop: asyncio.Event
) -> list[float]:
    """Latency of a desktop read and /healthz, one after the other, until `stop`."""
    worst: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        r = await api.get("/v1/sessions/s-1")
        assert r.status == 200
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200
        worst.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return worst


async def test_hep_flood_keeps_memory_latency_and_counts_bounded(tmp_path: Path) -> None:
    http_port, hep_port = free_tcp_port(), free_udp_port()
    config = "\n".join(
        [
            f'[http]\nlisten = "127.0.0.1:{http_port}"\n',
            '[store]\nurl = "sqlite:///var/bridge.db"\n',
            f'[auth]\nadmin_token = "{ADMIN}"\n',
            '[log]\nformat = "json"\nlevel = "warning"\n',
            f'[[sources.hep]]\nname = "flood"\nlisten = "127.0.0.1:{hep_port}"\n'
            f'password = "{PASSWORD}"\n',
        ]
    )
    bridge = BridgeProcess(tmp_path, config, http_port)
    await bridge.start(sources=("flood",))
    try:
        async with aiohttp.ClientSession() as http:
            admin = ApiClient(http, bridge.url, ADMIN)
            tenant = await make_tenant(admin)
            await open_session(tenant.api, state="connected", number="+34900000001")
            assert bridge.proc is not None
            pid = bridge.proc.pid
            storm = [invite(f"storm-{n}", to=f"{3000 + n % 100}", n=n) for n in range(STORM)]
            huge = [invite("x" * 29_000 + str(n), n=n) for n in range(500)]
            huge += [invite("y" * 29_000 + str(n), user="7777", n=n) for n in range(500)]
            before = rss_mb(pid)

            stop = asyncio.Event()
            probe = asyncio.create_task(timed_requests(tenant.api, http, bridge.url, stop))
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sent = 0
            try:
                # Paced: 4,000 datagrams/s, as a capture host under a dialler would send.
                for i in range(0, len(storm), 200):
                    for data in storm[i : i + 200]:
                        sock.sendto(data, ("127.0.0.1", hep_port))
                    sent += len(storm[i : i + 200])
                    await asyncio.sleep(0.05)
                for i in range(0, len(huge), 20):
                    for data in huge[i : i + 20]:
                        sock.sendto(data, ("127.0.0.1", hep_port))
                    sent += len(huge[i : i + 20])
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.5)
                paced = await (await http.get(bridge.url + "/metrics")).text()
                # Then as fast as the sender can go: the socket's queue overflows.
                for data in storm:
                    sock.sendto(data, ("127.0.0.1", hep_port))
                    sent += 1
                await asyncio.sleep(2.0)
            finally:
                sock.close()
                stop.set()
            latencies = await probe
            after = rss_mb(pid)

            metrics = await (await http.get(bridge.url + "/metrics")).text()
            health = await (await http.get(bridge.url + "/healthz")).json()
    finally:
        await bridge.stop()

    packets = "transfer_bridge_hep_packets_total"
    received = sum(
        metric(metrics, packets, source="flood", outcome=o)
        for o in ("sip", "malformed", "unauthorized", "not_sip", "failed")
    )
    kernel = metric(metrics, packets, source="flood", outcome="kernel_dropped")
    # Every datagram is accounted for: handled, or counted as dropped by the kernel.
    assert received + kernel == sent, (received, kernel, sent)
    assert health["sources"]["flood"]["kernel_drops"] == kernel
    # The 29 KB Call-IDs were all dropped before anything of them was kept (or never arrived).
    paced_drops = metric(paced, packets, source="flood", outcome="kernel_dropped")
    oversized = metric(
        paced, "transfer_bridge_sip_messages_total", source="flood", outcome="oversized"
    )
    assert oversized + paced_drops >= len(huge) and oversized > 0, (oversized, paced_drops)
    assert health["sources"]["flood"]["oversized"] == oversized
    assert (
        metric(metrics, "transfer_bridge_sip_messages_total", source="flood", outcome="oversized")
        >= 1000
    )
    tables = "transfer_bridge_hep_table_entries"
    assert metric(metrics, tables, source="flood", table="legs") <= 64 + 1
    assert (
        metric(metrics, "transfer_bridge_hep_table_evictions_total", source="flood", table="legs")
        >= STORM - 64
    )
    assert metric(metrics, "transfer_bridge_sip_dialogs", source="flood") <= 64 + 1
    # Bounded memory (was +369 MB and climbing) and a desktop that stays responsive (was 6.7 s).
    assert after - before < 80, (before, after)
    assert latencies and max(latencies) < 1.0, max(latencies)
    print(
        f"\nflood: sent {sent}, received {received:.0f}, kernel drops {kernel:.0f} "
        f"({paced_drops:.0f} while paced), oversized {oversized:.0f}; "
        f"RSS {before:.0f} -> {after:.0f} MB; desktop+healthz worst {max(latencies) * 1000:.0f} ms"
        f" over {len(latencies)} probes"
    )
