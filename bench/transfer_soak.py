"""Soak on the real rig: real transfers through a real Asterisk 22 at a steady rate for minutes.

    python bench/transfer_soak.py [--minutes 5] [--every 4] [--ring-ms 500] [--sources both|hep|ami]

Starts a real Asterisk 22 (scripts/asterisk, chroot), a real `transfer-bridge serve` with HEP
(res_hep) and/or AMI sources, and pjsua2 phones, then runs `tests/integration/soak.py` rounds,
one every `--every` seconds: the customer calls the agent, who blind-transfers on the phone to
a target that answers, is busy, or declines, in turn. It prints each round (the verdict the
desktop saw and whether it is the right one) with the bridge's RSS, then the memory samples,
how many verdicts were wrong, and the bridge's event-loop lag over the run. Exit status 0 when
every verdict was right and memory stayed flat (the last sample within 8 MB of the one after
the third round), 1 otherwise. Needs root (chroot) and scripts/rig/install.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.bridge_process import running_bridge_process
from tests.integration.desk import Rig, tenant_with_agents
from tests.integration.soak import soak
from tests.rig.asterisk import AsteriskSettings, running_asterisk
from tests.rig.phones import running_phones


def show(row: dict[str, Any], rss: float) -> None:
    verdict = row["state"] + (f" ({row['failure']})" if row["failure"] else f" ({row['proof']})")
    mark = "" if row["right"] else "   WRONG"
    print(
        f"  round {row['round'] + 1:4d}  target {row['mode']:<8} -> {verdict:<32} "
        f"by {row['proved_by']!s:<8} {row['seconds']:5.1f} s  RSS {rss:6.1f} MB{mark}",
        flush=True,
    )


async def run(args: argparse.Namespace) -> int:
    hep, ami = args.sources in ("both", "hep"), args.sources in ("both", "ami")
    transfers = max(3, int(args.minutes * 60 / args.every))
    with tempfile.TemporaryDirectory(prefix="tb-soak-") as tmp:
        work = Path(tmp)
        async with (
            running_asterisk(AsteriskSettings.fresh(), work) as pbx,
            running_bridge_process(work, pbx, hep=hep, ami=ami) as bridge,
            aiohttp.ClientSession() as http,
            running_phones(pbx.phone_ports, pbx.sip, work / "phones") as phones,
        ):
            api = await tenant_with_agents(http, bridge)
            rig = Rig(pbx, bridge, phones, api, http)
            result = await soak(
                rig, transfers=transfers, every=args.every, ring_ms=args.ring_ms, report=show
            )
    rss = result.rss_mb
    settled = rss[min(3, len(rss) - 1)]
    print()
    print(f"sources: {args.sources}; {len(result.rounds)} transfers, one every {args.every} s")
    print(f"wrong verdicts: {len(result.wrong)}")
    print(
        f"bridge RSS: start {rss[0]:.1f} MB, after round 3 {settled:.1f} MB, "
        f"end {rss[-1]:.1f} MB, max {max(rss):.1f} MB"
    )
    print(
        f"bridge event-loop lag: worst {result.lag_worst_ms:.1f} ms; {result.lag_late} of "
        f"{result.lag_samples} samples later than 10 ms"
    )
    return 0 if not result.wrong and rss[-1] - settled < 8 else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between transfers")
    parser.add_argument("--ring-ms", type=int, default=500, help="how long the target rings")
    parser.add_argument("--sources", choices=("both", "hep", "ami"), default="both")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
