"""The transfer cases the rig can play, each as a set of SIPp roles.

Phones (user part -> role): 2000 customer (transferee, always the caller), 1001 agent
(transferor), 1002 target. All traffic goes through the Kamailio proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.rig.sipp import Role

CUSTOMER, AGENT, TARGET = "2000", "1001", "1002"


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    roles: tuple[Role, ...]


def _customer(scenario: str) -> Role:
    return Role("customer", CUSTOMER, scenario, uac=True, service=AGENT)


def _agent(scenario: str) -> Role:
    return Role("agent", AGENT, scenario)


def _target(scenario: str) -> Role:
    return Role("target", TARGET, scenario)


CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case(
            "blind_success",
            "agent REFERs the customer to 1002, customer INVITEs 1002, answered: NOTIFY 100 "
            "then 200; agent BYEs the customer, later the customer BYEs the target",
            (
                _agent("agent_blind.xml"),
                _target("target_answer.xml"),
                _customer("customer_blind.xml"),
            ),
        ),
        Case(
            "blind_busy",
            "as blind_success but the target answers 486: NOTIFY 100 then 486; the agent "
            "talks on and hangs up",
            (
                _agent("agent_blind.xml"),
                _target("target_busy.xml"),
                _customer("customer_blind.xml"),
            ),
        ),
        Case(
            "refer_rejected",
            "the customer's phone answers the REFER with 603 Decline; no NOTIFY, no new call; "
            "the agent talks on and hangs up",
            (_agent("agent_blind.xml"), _customer("customer_refer_reject.xml")),
        ),
        Case(
            "attended_success",
            "agent holds the customer (re-INVITE sendonly), consults 1002 (new dialog), REFERs "
            "with Replaces; the customer INVITEs 1002 with Replaces, the target BYEs the "
            "consult dialog; NOTIFY 100 then 200; agent BYEs the customer",
            (
                _agent("agent_attended.xml"),
                _target("target_attended.xml"),
                _customer("customer_attended.xml"),
            ),
        ),
        Case(
            "consult_customer_hangup",
            "agent holds the customer and consults 1002; the customer hangs up (BYE) during "
            "the consult; the agent ends the consult: no REFER",
            (
                _agent("agent_consult_customer_hangup.xml"),
                _target("target_answer.xml"),
                _customer("customer_hold_hangup.xml"),
            ),
        ),
        Case(
            "consult_abandoned",
            "agent holds the customer, consults 1002, hangs up the consult and resumes the "
            "customer (re-INVITE sendrecv), then hangs up: no REFER",
            (
                _agent("agent_consult_abandon.xml"),
                _target("target_answer.xml"),
                _customer("customer_hold_resume.xml"),
            ),
        ),
    )
}
