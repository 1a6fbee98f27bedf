"""The bridge side of `transfer-bridge qa`: its client, the verdicts and the printed report."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from desktop_api.qa.scenarios import FINAL_STATES, QaError, RoleResult, Scenario


def bridge_view(session: dict[str, Any]) -> dict[str, Any]:
    """The parts of a session that make the bridge's verdict."""
    transfer = session.get("transfer") or {}
    phone = transfer.get("phone") or {}
    return {
        "status": session.get("status"),
        "transfer_state": transfer.get("state"),
        "kind": transfer.get("kind"),
        "target": transfer.get("target"),
        "confirmed_by": transfer.get("confirmed_by"),
        "phone_refer": phone.get("refer"),
        "last_sipfrag": phone.get("last_sipfrag"),
        "proof": phone.get("proof"),
        "failure": phone.get("failure"),
        "binding": (session.get("call") or {}).get("binding"),
        "conflict": transfer.get("conflict"),
    }


def judge(scenario: Scenario, roles: list[RoleResult], bridge: dict[str, Any]) -> dict[str, bool]:
    """Whether SIPp and the bridge each show the scenario's expected outcome."""
    agent = next((r for r in roles if r.role == "agent"), None)
    sipp_ok = bool(roles) and all(r.passed for r in roles)
    sipp_ok = sipp_ok and agent is not None and agent.outcome == scenario.agent_expect
    bridge_ok = bridge.get("transfer_state") == scenario.expected_state
    return {"sipp": sipp_ok, "bridge": bridge_ok, "passed": sipp_ok and bridge_ok}


def render_text(report: dict[str, Any]) -> str:
    """The report for a person."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [
        f"transfer-bridge qa {report['scenario']}: {verdict} "
        f"(expected transfer {report['expected']['transfer_state']})",
        f"  SIPp against {report['pbx']}: {_agrees(report['sipp_agrees'])}",
    ]
    for r in report["sipp"]:
        extra = ""
        if r["outcome"]:
            extra = f"  outcome={r['outcome']} final_sipfrag={r['final_sipfrag']!r}"
        error = f"  error: {r['error']}" if r["error"] else ""
        lines.append(
            f"    {r['role']:<8} {r['ext']:>5} port {r['port']:<5} {r['scenario']:<20} "
            f"exit {r['exit_code']}  {r['verdict']}{extra}{error}"
        )
    b = report["bridge_verdict"]
    lines += [
        f"  bridge {report['bridge']} session {report['session_id']}: "
        f"{_agrees(report['bridge_agrees'])}",
        f"    transfer.state={b['transfer_state']} kind={b['kind']} target={b['target']} "
        f"confirmed_by={b['confirmed_by']} proof={b['proof']} failure={b['failure']}",
        f"    phone.refer={b['phone_refer']} last_sipfrag={b['last_sipfrag']!r} "
        f"status={b['status']} binding={b['binding']}",
    ]
    lines += [f"  warning: {w}" for w in report["warnings"]]
    lines.append(f"  SIPp logs: {report['workdir']}")
    return "\n".join(lines)


def _agrees(ok: bool) -> str:
    return "as expected" if ok else "NOT as expected"


# --- I/O: the bridge, the PBX, SIPp -------------------------------------------------------------


class BridgeClient:
    """The few desktop API calls the QA run makes, with errors turned into `QaError`."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            async with self.http.request(
                method, self.base + path, json=body, headers=self.headers
            ) as resp:
                try:
                    return resp.status, await resp.json(content_type=None)
                except ValueError:
                    return resp.status, None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise QaError(f"bridge unreachable at {self.base}: {reason}") from None

    async def agent(self, agent_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/v1/agents/{agent_id}")
        if status == 401:
            raise QaError(f"the bridge at {self.base} refused the token (401 unauthorized)")
        if status == 404:
            raise QaError(f"agent {agent_id!r} is unknown to the bridge (404): PUT it first")
        if status != 200:
            raise QaError(f"GET /v1/agents/{agent_id} answered {status}: {_error(body)}")
        return body  # type: ignore[no-any-return]

    async def open_session(self, session_id: str, agent_id: str, number: str) -> dict[str, Any]:
        body = {"id": session_id, "agent_id": agent_id, "customer": {"number": number}}
        status, reply = await self.call("POST", "/v1/sessions", body)
        if status != 201:
            raise QaError(f"cannot open a session for {agent_id!r} ({status}): {_error(reply)}")
        return reply  # type: ignore[no-any-return]

    async def settled(self, session_id: str, version: int, deadline: float) -> dict[str, Any]:
        """Long-poll the session until its transfer is final or ``deadline`` (monotonic)."""
        session: dict[str, Any] = {}
        while True:
            left = int(deadline - time.monotonic())
            path = f"/v1/sessions/{session_id}"
            if left >= 1:
                path += f"?wait={min(left, 60)}&version={version}"
            status, body = await self.call("GET", path)
            if status != 200:
                raise QaError(f"GET /v1/sessions/{session_id} answered {status}: {_error(body)}")
            session, version = body, body["version"]
            if (body.get("transfer") or {}).get("state") in FINAL_STATES or left < 1:
                return session

    async def end(self, session_id: str, result: str) -> None:
        await self.call("POST", f"/v1/sessions/{session_id}/end", {"result": result})


def _error(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{body['error'].get('code')}: {body['error'].get('message')}"
    return repr(body)
