"""A steady stream of real transfers through the real Asterisk, judged one by one (issue 14).

Used by `tests/integration/test_soak.py` (a few rounds) and `bench/transfer_soak.py` (minutes).
Each round: the customer (2000) calls the agent (1001), who answers; the desktop opens a
session and clicks to "dial on your phone"; the agent blind-transfers on the phone to 1002,
which in turn answers after ringing, is busy, or rings and declines (603). The verdict the
desktop then sees must be the right one (`transferred` with proof from the target's side, or
`failed` with `target_busy`/`target_rejected`). Between rounds the bridge process's memory
(RSS) and its event-loop lag are sampled.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.desk import (
    Rig,
    click,
    customer_reaches_agent,
    failed,
    hang_up_everything,
    session_until,
    transferred,
)

# (target behaviour, the verdict a person would give)
MODES = (
    ("answer", "transferred", None),
    ("busy", "failed", "target_busy"),
    ("decline", "failed", "target_rejected"),
)


@dataclass
class Soak:
    rounds: list[dict[str, Any]] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    lag_worst_ms: float = 0.0
    lag_late: int = 0
    lag_samples: int = 0

    @property
    def wrong(self) -> list[dict[str, Any]]:
        return [r for r in self.rounds if not r["right"]]


def rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


async def one_round(rig: Rig, n: int, ring_ms: int) -> dict[str, Any]:
    mode, want, cause = MODES[n % len(MODES)]
    phones = rig.phones
    if mode == "answer":
        await phones.behaviour("1002", "auto", delay_ms=ring_ms)
    elif mode == "busy":
        await phones.behaviour("1002", "busy")
    else:
        await phones.behaviour("1002", "auto", delay_ms=ring_ms, code=603)
    sid = f"soak-{n}"
    started = time.monotonic()
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", sid)
    # The agent clicks once the desktop shows the call connected (as a person would).
    await session_until(rig, sid, lambda s: s["call"]["state"] == "connected")
    await click(rig, sid, "open", "internal", "next")
    await asyncio.sleep(1.0)  # a person, not a script (Asterisk refuses an instant REFER)
    await phones.blind_transfer("1001", agent_ref, "1002")
    done = transferred if want == "transferred" else failed
    session = await session_until(rig, sid, lambda s: transferred(s) or failed(s), within=15)
    phone = session["transfer"]["phone"]
    right = done(session) and (
        phone["proof"] == "target_answered" if cause is None else phone["failure"] == cause
    )
    await rig.api.post(f"/v1/sessions/{sid}/end", {"result": "soak"})
    await hang_up_everything(phones, "2000", "1001", "1002")
    return {
        "round": n,
        "mode": mode,
        "state": session["transfer"]["state"],
        "proof": phone["proof"],
        "failure": phone["failure"],
        "proved_by": phone["proved_by"],
        "right": right,
        "seconds": time.monotonic() - started,
    }


async def soak(rig: Rig, *, transfers: int, every: float, ring_ms: int, report: Any = None) -> Soak:
    """`transfers` rounds, one every `every` seconds (or back to back when they take longer)."""
    assert rig.bridge.proc is not None
    pid = rig.bridge.proc.pid
    out = Soak()
    out.rss_mb.append(rss_mb(pid))
    for n in range(transfers):
        began = time.monotonic()
        row = await one_round(rig, n, ring_ms)
        out.rounds.append(row)
        out.rss_mb.append(rss_mb(pid))
        if report is not None:
            report(row, out.rss_mb[-1])
        await asyncio.sleep(max(0.3, every - (time.monotonic() - began)))
    async with rig.http.get(rig.bridge.url + "/metrics") as r:
        metrics = await r.text()
    values = {}
    for line in metrics.splitlines():
        if line.startswith("transfer_bridge_event_loop_lag"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    out.lag_worst_ms = values["transfer_bridge_event_loop_lag_worst_seconds"] * 1000
    out.lag_samples = int(values["transfer_bridge_event_loop_lag_seconds_count"])
    within = values['transfer_bridge_event_loop_lag_seconds_bucket{le="0.01"}']
    out.lag_late = int(out.lag_samples - within)
    return out
