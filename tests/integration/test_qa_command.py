"""`transfer-bridge qa` as QA runs it: the real command (a separate process) plays SIPp phones
against the session's real Asterisk 22, whose HEP mirror feeds a real `transfer-bridge serve`
process; the command's exit code and report are what is checked.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from desktop_api.testing import ApiClient, RunningBridge
from tests.integration.bridge_process import ADMIN, BridgeProcess, running_bridge_process
from tests.rig.asterisk import RunningAsterisk


@dataclass
class Desk:
    """A bridge process listening for Asterisk's HEP, an account token and agent ana (1001)."""

    bridge: BridgeProcess
    api: ApiClient
    token: str


@pytest.fixture
async def desk(pbx: RunningAsterisk, tmp_path: Path) -> AsyncIterator[Desk]:
    async with (
        running_bridge_process(tmp_path, pbx, hep=True, ami=False) as bridge,
        aiohttp.ClientSession() as http,
    ):
        admin = ApiClient(http, bridge.url, ADMIN)
        r = await admin.post("/v1/accounts", {"id": "qa", "name": "QA", "transfer_enabled": True})
        assert r.status == 201, r.body
        token = (await admin.post("/v1/accounts/qa/tokens")).body["token"]
        api = admin.with_token(token)
        for agent, ext in (("ana", "1001"), ("ben", "1002"), ("cy", "1003")):
            body = {"name": agent.title(), "phone": {"sip_uri": f"sip:{ext}@127.0.0.1"}}
            r = await api.put(f"/v1/agents/{agent}", body)
            assert r.status == 201, r.body
        yield Desk(bridge, api, token)


async def run_qa(*args: str, within: float = 60.0) -> tuple[int, str, str]:
    """`transfer-bridge qa ARGS...` in its own process: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "desktop_api.cli", "qa", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def qa_args(pbx: RunningAsterisk, desk: Desk, workdir: Path, agent: str = "ana") -> list[str]:
    ports = pbx.phone_ports
    return [
        "--pbx", f"{pbx.sip[0]}:{pbx.sip[1]}",
        "--bridge", desk.bridge.url,
        "--token", desk.token,
        "--agent", agent,
        "--agent-port", str(ports["1001"]),
        "--target-port", str(ports["1002"]),
        "--customer-port", str(ports["2000"]),
        "--workdir", str(workdir),
        "--json",
    ]  # fmt: skip


async def play(pbx: RunningAsterisk, desk: Desk, scenario: str, workdir: Path) -> tuple[int, Any]:
    code, out, err = await run_qa(scenario, *qa_args(pbx, desk, workdir))
    try:
        report = json.loads(out)
    except ValueError:
        raise AssertionError(f"qa printed no JSON report (exit {code}):\n{out}\n{err}") from None
    return code, report


def roles(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["role"]: r for r in report["sipp"]}


async def agent_free(desk: Desk, agent: str = "ana") -> bool:
    r = await desk.api.get(f"/v1/agents/{agent}")
    assert r.status == 200, r.body
    return bool(r.body["can_take_requests"])


@pytest.mark.asterisk
@pytest.mark.timeout(90)
async def test_blind_transfer_passes_with_the_bridge_confirming_it(
    pbx: RunningAsterisk, desk: Desk, tmp_path: Path
) -> None:
    code, report = await play(pbx, desk, "blind", tmp_path / "qa")
    assert code == 0, json.dumps(report, indent=2)
    assert report["passed"] and report["sipp_agrees"] and report["bridge_agrees"]
    assert {r["role"]: r["exit_code"] for r in report["sipp"]} == {
        "target": 0,
        "agent": 0,
        "customer": 0,
    }
    agent = roles(report)["agent"]
    assert (agent["outcome"], agent["final_sipfrag"]) == ("success", "SIP/2.0 200 OK")
    b = report["bridge_verdict"]
    assert (b["transfer_state"], b["kind"], b["target"], b["confirmed_by"]) == (
        "transferred",
        "blind",
        "1002",
        "phone",
    )
    assert (b["phone_refer"], b["status"]) == ("succeeded", "call_transferred")
    assert b["last_sipfrag"].startswith("SIP/2.0 200")
    assert b["proof"] == "target_answered"
    # The QA session is ended afterwards, so the agent is not left blocked (rule 5).
    session = (await desk.api.get(f"/v1/sessions/{report['session_id']}")).body
    assert session["status"] == "ended" and session["result"].startswith("qa blind")
    assert await agent_free(desk)


@pytest.mark.asterisk
@pytest.mark.timeout(90)
async def test_blind_transfer_to_a_busy_target_is_a_failure_on_both_sides(
    pbx: RunningAsterisk, desk: Desk, tmp_path: Path
) -> None:
    code, report = await play(pbx, desk, "blind-busy", tmp_path / "qa")
    # The expected outcome of this scenario is a failed transfer: both show it, so exit 0.
    assert code == 0, json.dumps(report, indent=2)
    agent = roles(report)["agent"]
    # Asterisk reports the busy target (486) to the transferor as 503 Service Unavailable.
    assert agent["outcome"] == "failure"
    assert agent["final_sipfrag"].startswith("SIP/2.0 5")
    b = report["bridge_verdict"]
    assert (b["transfer_state"], b["phone_refer"], b["status"]) == ("failed", "failed", "active")
    # The bridge saw the target's own answer on the PBX's leg to it, before the PBX's NOTIFY:
    # its 486 names the cause, where the phone only hears 503.
    assert b["last_sipfrag"] == "SIP/2.0 486 Busy Here"
    assert b["failure"] == "target_busy"
    assert b["confirmed_by"] is None


@pytest.mark.asterisk
@pytest.mark.timeout(90)
async def test_attended_transfer_passes_with_the_bridge_confirming_it(
    pbx: RunningAsterisk, desk: Desk, tmp_path: Path
) -> None:
    code, report = await play(pbx, desk, "attended", tmp_path / "qa")
    assert code == 0, json.dumps(report, indent=2)
    assert all(r["exit_code"] == 0 for r in report["sipp"])
    assert roles(report)["agent"]["outcome"] == "success"
    b = report["bridge_verdict"]
    assert (b["transfer_state"], b["kind"], b["confirmed_by"], b["status"]) == (
        "transferred",
        "attended",
        "phone",
        "call_transferred",
    )
    assert await agent_free(desk)


@pytest.mark.asterisk
@pytest.mark.timeout(90)
async def test_a_transfer_the_bridge_does_not_see_fails_the_run(
    pbx: RunningAsterisk, desk: Desk, tmp_path: Path
) -> None:
    # cy's phone is 1003, but the SIPp agent answers as 1001: the calls are not cy's.
    args = qa_args(pbx, desk, tmp_path / "qa", agent="cy")
    code, out, err = await run_qa("blind", *args, "--settle", "2")
    report = json.loads(out)
    assert code == 1, out + err
    assert report["sipp_agrees"] and not report["bridge_agrees"] and not report["passed"]
    assert report["bridge_verdict"]["transfer_state"] == "none"
    assert any("1003" in w for w in report["warnings"])


async def test_a_refused_token_is_a_clear_setup_error(
    bridge: RunningBridge, tmp_path: Path
) -> None:
    code, out, err = await run_qa(
        "blind", "--bridge", bridge.url, "--token", "not-a-token", "--agent", "ana",
        "--workdir", str(tmp_path / "qa"),
    )  # fmt: skip
    assert code == 2, out + err
    assert "refused the token (401 unauthorized)" in err
    assert out == ""
    assert not list((tmp_path / "qa").glob("*.log"))  # no phone was started


async def test_an_unreachable_bridge_is_a_clear_setup_error(tmp_path: Path) -> None:
    code, out, err = await run_qa(
        "attended", "--bridge", "http://127.0.0.1:9", "--token", "t", "--agent", "ana",
        "--workdir", str(tmp_path / "qa"), "--json",
    )  # fmt: skip
    assert code == 2, out + err
    assert "bridge unreachable at http://127.0.0.1:9" in err
    assert json.loads(out)["error"].startswith("bridge unreachable")
