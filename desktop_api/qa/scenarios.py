"""What `transfer-bridge qa` can play: scenarios, roles, options, results."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

EXIT_PASSED, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
FINAL_STATES = ("transferred", "failed")
REPO_SCENARIOS = Path(__file__).resolve().parents[2] / "sipp_scenarios" / "asterisk"
SCENARIOS_ENV = "TRANSFER_BRIDGE_SIPP_SCENARIOS"
OUTCOME_RE = re.compile(r"outcome=(\S+) final_sipfrag=(.*?) expect=(\S*)\s*$", re.M)


class QaError(Exception):
    """The run could not start or could not reach a component: exit code 2, this message."""


@dataclass(frozen=True)
class Role:
    """One SIPp phone of a scenario: which phone it plays and with which scenario file."""

    name: str  # "agent", "target" or "customer": the phone it uses
    scenario: str
    uac: bool = False


@dataclass(frozen=True)
class Scenario:
    """What QA can run, and the outcome both SIPp and the bridge must show."""

    name: str
    description: str
    roles: tuple[Role, ...]
    expected_state: str  # the session's transfer.state
    agent_expect: str  # the agent scenario's own verdict: success or failure


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "blind",
            "the agent transfers blind to the target, who answers",
            (
                Role("target", "target_answers.xml"),
                Role("agent", "agent_blind.xml"),
                Role("customer", "customer_calls.xml", uac=True),
            ),
            "transferred",
            "success",
        ),
        Scenario(
            "blind-busy",
            "the agent transfers blind to the target, who is busy (486)",
            (
                Role("target", "target_busy.xml"),
                Role("agent", "agent_blind.xml"),
                Role("customer", "customer_calls.xml", uac=True),
            ),
            "failed",
            "failure",
        ),
        Scenario(
            "attended",
            "the agent holds the customer, consults the target, then transfers (Replaces)",
            (
                Role("target", "target_answers.xml"),
                Role("agent", "agent_attended.xml"),
                Role("customer", "customer_calls.xml", uac=True),
            ),
            "transferred",
            "success",
        ),
    )
}


@dataclass(frozen=True)
class Phone:
    """A phone's extension on the PBX and the UDP port its SIPp listens on."""

    ext: str
    port: int


@dataclass(frozen=True)
class QaOptions:
    """Everything one run needs (see `add_parser` for the command line)."""

    scenario: Scenario
    pbx: tuple[str, int]
    bridge: str
    token: str
    agent_id: str
    phones: dict[str, Phone]
    timeout: float = 30.0
    local_ip: str = "127.0.0.1"
    sipp: str = "sipp"
    scenarios_dir: Path = REPO_SCENARIOS
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    keep_session: bool = False
    settle: float = 10.0  # seconds to wait for the bridge's verdict once SIPp is done


@dataclass
class RoleResult:
    """How one SIPp phone ended."""

    role: str
    ext: str
    port: int
    scenario: str
    exit_code: int | None
    outcome: str | None = None
    final_sipfrag: str | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.exit_code == 0
