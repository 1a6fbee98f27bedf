"""Agent phones that are not PJSIP, live: linphone (liblinphone, Contact without a user part)
and baresip (libre, Contact user ``1001-0x55...``) as agent 1001 on the real Asterisk, with
**HEP alone** feeding a real `transfer-bridge serve`; the session read through the API gives the
verdict a pjsua2 agent gets (`test_asterisk_transfers.py`).

pjsua2 customer 2000 and target 1002 (auto-answer after 0.5 s, or busy); the cases are
`tests/rig/client_cases.py`, the same the fixtures `tests/fixtures/hep/<client>-<case>.hep`
were recorded with: every case each client can do (baresip 1.0 has no attended transfer),
5-7 s each.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.bridge_process import running_bridge_process
from tests.integration.desk import Rig, session_until, tenant_with_agents
from tests.pbx import rig_required
from tests.rig.asterisk import RunningAsterisk
from tests.rig.baresip import have_baresip
from tests.rig.client_cases import AGENT, CASES, CLIENTS, CUSTOMER, TARGET, Ctx, cases_for
from tests.rig.linphone import have_linphone
from tests.rig.phones import running_phones

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(90)]

Check = Callable[[dict[str, Any]], bool]


def verdict(state: str, **phone: str) -> Check:
    def done(s: dict[str, Any]) -> bool:
        t = s["transfer"]
        return t["state"] == state and all(t["phone"][k] == v for k, v in phone.items())

    return done


EXPECTED: dict[str, Check] = {
    "blind_answered": verdict("transferred", proof="target_answered", refer="succeeded"),
    "blind_busy": verdict("failed", failure="target_busy"),
    "attended": verdict("transferred", proof="consult_replaced"),
    "consult_abandoned": verdict("none", consult="ended"),
    "customer_hangup_consult": verdict("failed", failure="customer_hung_up"),
}
KIND = {"blind_answered": "blind", "blind_busy": "blind", "attended": "attended"}
RUNS = [(client, case) for client in CLIENTS for case in cases_for(client)]


@pytest.mark.parametrize(("client", "case"), RUNS, ids=[f"{c}-{n}" for c, n in RUNS])
async def test_hep_alone_gives_the_pjsua2_verdict(
    pbx: RunningAsterisk, tmp_path: Path, client: str, case: str
) -> None:
    have = {"linphone": have_linphone, "baresip": have_baresip}[client]
    if not have():
        message = f"{client} is not installed (scripts/rig/install.sh)"
        if rig_required():
            pytest.fail(message)
        pytest.skip(message)
    ports = {ext: pbx.phone_ports[ext] for ext in (CUSTOMER, TARGET)}
    sid = f"s-{client}-{case}"
    async with (
        running_bridge_process(tmp_path, pbx, hep=True, ami=False) as bridge,
        aiohttp.ClientSession() as http,
        running_phones(ports, pbx.sip, tmp_path / "phones") as phones,
        CLIENTS[client](AGENT, pbx.phone_ports[AGENT], pbx.sip, tmp_path) as agent,
    ):
        api = await tenant_with_agents(http, bridge)
        rig = Rig(pbx, bridge, phones, api, http)

        async def open_session() -> None:
            body = {"id": sid, "agent_id": "ana", "customer": {"number": CUSTOMER}}
            body["call"] = {"state": "connected"}
            r = await api.post("/v1/sessions", body)
            assert r.status == 201, r.body
            # The agent's call, seen by HEP alone, binds the session: the phone's leg was found.
            await session_until(rig, sid, lambda s: s["call"]["binding"] == "phone_and_number")

        await CASES[case].run(Ctx(phones, agent, connected=open_session))
        s = await session_until(rig, sid, EXPECTED[case])
    assert s["transfer"]["kind"] == KIND.get(case), s["transfer"]
    if case in ("blind_answered", "attended"):
        assert s["transfer"]["confirmed_by"] == "phone" and s["transfer"]["target"] == TARGET
