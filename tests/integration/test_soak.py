"""A short soak (issue 14): real transfers through the real Asterisk one after another, each
judged right, the bridge's memory and event-loop lag flat. `bench/transfer_soak.py` runs it
for minutes; `SOAK_TRANSFERS` sets the rounds here (default 6: two of each outcome)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from tests.integration.bridge_process import running_bridge_process
from tests.integration.desk import Rig, tenant_with_agents
from tests.integration.soak import soak
from tests.rig.asterisk import RunningAsterisk
from tests.rig.phones import running_phones

ROUNDS = int(os.environ.get("SOAK_TRANSFERS", "6"))
pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(60 + 20 * ROUNDS)]


async def test_a_steady_stream_of_transfers_is_judged_right_with_flat_memory(
    pbx: RunningAsterisk, tmp_path: Path
) -> None:
    async with (
        running_bridge_process(tmp_path, pbx) as bridge,
        aiohttp.ClientSession() as http,
        running_phones(pbx.phone_ports, pbx.sip, tmp_path / "phones") as phones,
    ):
        api = await tenant_with_agents(http, bridge)
        result = await soak(
            Rig(pbx, bridge, phones, api, http), transfers=ROUNDS, every=4.0, ring_ms=500
        )
    assert result.wrong == [], result.wrong
    # Flat: after the first rounds (imports, first calls) memory grows by no more than a few MB.
    settled = result.rss_mb[min(3, len(result.rss_mb) - 1)]
    assert result.rss_mb[-1] - settled < 8, result.rss_mb
    assert result.lag_worst_ms < 250, result.lag_worst_ms
