#!/usr/bin/env python3
"""Record real HEP captures for replay: run transfer cases through the rig (Kamailio + SIPp
phones + a UDP HEP collector) and write each capture to tests/fixtures/hep/<case>.hep.

    python scripts/rig/record.py                   # every case
    python scripts/rig/record.py blind_success     # some cases
    python scripts/rig/record.py --list

File format: per packet, a 4-byte big-endian length then the raw HEP packet, in arrival order
(tests/rig/hepfile.py reads it). Needs kamailio and sipp: scripts/rig/install.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.rig.cases import CASES  # noqa: E402
from tests.rig.hepfile import FIXTURES, write_hep_file  # noqa: E402
from tests.rig.rig import RigFailure, fresh_workdir, missing_binaries, run_case  # noqa: E402
from tests.rig.wire import decode_capture, summary  # noqa: E402

AUTH_KEY = "rig-hep-secret"
CAPTURE_ID = 2001


async def record(cases: list[str], out: Path, logs: Path, verbose: bool) -> int:
    failed = 0
    for name in cases:
        workdir = fresh_workdir(logs, name)
        try:
            run = await run_case(
                name, workdir, auth_key=AUTH_KEY, capture_id=CAPTURE_ID, time_limit=60
            )
        except RigFailure as exc:
            failed += 1
            print(f"FAIL {name}: {exc}", file=sys.stderr)
            continue
        raw = [p.data for p in run.packets]
        wire = decode_capture(raw)  # refuse to write anything the bridge cannot read
        path = out / f"{name}.hep"
        count = write_hep_file(path, raw)
        print(f"ok   {name}: {count} packets, {run.duration:.1f} s -> {path}")
        if verbose:
            print(summary(wire, run.ports["kamailio"]))
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--out", type=Path, default=FIXTURES, help="output folder")
    parser.add_argument("--logs", type=Path, help="keep process logs here (default: temp)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each capture")
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES.values():
            print(f"{case.name:26s} {case.description}")
        return 0
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}; see --list")
    missing = missing_binaries()
    if missing:
        print(f"missing: {', '.join(missing)} (run scripts/rig/install.sh)", file=sys.stderr)
        return 2
    cases = args.cases or list(CASES)
    if args.logs:
        return 1 if asyncio.run(record(cases, args.out, args.logs, args.verbose)) else 0
    with tempfile.TemporaryDirectory(prefix="rig-record-") as tmp:
        return 1 if asyncio.run(record(cases, args.out, Path(tmp), args.verbose)) else 0


if __name__ == "__main__":
    sys.exit(main())
