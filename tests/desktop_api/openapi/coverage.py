"""Which test proves which responses of the desktop API.

Each test of this package owns some operations: at its end it asserts it saw every status
the document lists for them (`assert_covers`). `test_document.py` checks that the table
owns every operation of the desktop API and every response kind, so no route or refusal
goes unvalidated when a test is added, split or removed.
"""

from __future__ import annotations

from tests.desktop_api.openapi.checker import Cover, Kind

# The desk-phone and desktop-page routes have their own walks (test_devices_openapi.py,
# tests/browser/test_static.py); this package covers the desktop API proper.
ELSEWHERE = ("/v1/devices/", "/device-urls", "/device-commands", "/desktop")

REQUIRED_KINDS: frozenset[Kind] = frozenset(
    {
        (304, None),
        (400, "invalid_json"),
        (400, "invalid_body"),
        (400, "unknown_field"),
        (400, "missing_field"),
        (400, "invalid_field"),
        (400, "unknown_action"),
        (400, "invalid_parameter"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (403, "transfer_disabled"),
        (404, "not_found"),
        (409, "invalid_step"),
        (409, "not_on_call"),
        (409, "already_transferred"),
        (409, "agent_blocked"),
        (409, "already_exists"),
        (409, "phone_in_use"),
        (409, "call_in_use"),
        (412, "version_mismatch"),
        (413, "body_too_large"),
        (422, "unknown_agent"),
        (500, "internal_error"),
    }
)

ACCOUNT = "/v1/accounts/{account_id}"
AGENT = "/v1/agents/{agent_id}"
SESSION = "/v1/sessions/{session_id}"

COVERS: dict[str, Cover] = {
    "health": Cover(ops=(("/healthz", "get"),)),
    "metrics": Cover(ops=(("/metrics", "get"),)),
    "document": Cover(ops=(("/openapi.json", "get"),)),
    "internal_error": Cover(kinds=frozenset({(500, "internal_error")})),
    "accounts": Cover(
        ops=(("/v1/accounts", "post"), (ACCOUNT, "get"), (ACCOUNT, "patch")),
        kinds=frozenset(
            {
                (400, "invalid_json"),
                (400, "invalid_body"),
                (400, "unknown_field"),
                (400, "missing_field"),
                (400, "invalid_field"),
                (401, "unauthorized"),
                (403, "forbidden"),
                (404, "not_found"),
                (409, "already_exists"),
                (413, "body_too_large"),
            }
        ),
    ),
    "tokens": Cover(
        ops=(
            (ACCOUNT + "/tokens", "post"),
            (ACCOUNT + "/tokens", "get"),
            (ACCOUNT + "/tokens/{token_id}", "delete"),
        ),
        kinds=frozenset(
            {
                (400, "unknown_field"),
                (400, "invalid_field"),
                (403, "forbidden"),
                (404, "not_found"),
                (422, "already_expired"),
            }
        ),
    ),
    "agents": Cover(
        ops=((AGENT, "put"), (AGENT, "get")),
        kinds=frozenset(
            {
                (400, "invalid_field"),
                (400, "unknown_field"),
                (400, "missing_field"),
                (403, "forbidden"),
                (409, "phone_in_use"),
            }
        ),
    ),
    "open_session": Cover(
        ops=(("/v1/sessions", "post"),),
        kinds=frozenset(
            {
                (400, "invalid_field"),
                (400, "unknown_field"),
                (400, "missing_field"),
                (409, "already_exists"),
                (422, "unknown_agent"),
            }
        ),
    ),
    "read_session": Cover(
        ops=((SESSION, "get"),), kinds=frozenset({(304, None), (400, "invalid_parameter")})
    ),
    "list_sessions": Cover(
        ops=(("/v1/sessions", "get"),), kinds=frozenset({(400, "invalid_parameter")})
    ),
    "transfer_steps": Cover(
        ops=((SESSION + "/transfer", "post"),),
        kinds=frozenset(
            {
                (400, "unknown_action"),
                (400, "missing_field"),
                (400, "unknown_field"),
                (400, "invalid_json"),
                (400, "invalid_body"),
                (403, "forbidden"),
                (409, "invalid_step"),
                (409, "already_transferred"),
                (409, "agent_blocked"),
            }
        ),
    ),
    "end": Cover(
        ops=((SESSION + "/end", "post"),),
        kinds=frozenset({(400, "missing_field"), (400, "invalid_field"), (400, "unknown_field")}),
    ),
    "set_call": Cover(
        ops=((SESSION, "patch"),),
        kinds=frozenset(
            {
                (400, "missing_field"),
                (400, "invalid_field"),
                (400, "unknown_field"),
                (400, "invalid_json"),
                (400, "invalid_body"),
                (409, "invalid_step"),
                (409, "already_transferred"),
                (409, "call_in_use"),
                (412, "version_mismatch"),
            }
        ),
    ),
    "not_on_call": Cover(kinds=frozenset({(409, "not_on_call")})),
    "transfer_disabled": Cover(kinds=frozenset({(403, "transfer_disabled")})),
    "audit": Cover(ops=((SESSION + "/audit", "get"),)),
    "events": Cover(ops=(("/v1/events", "get"),), kinds=frozenset({(400, "invalid_parameter")})),
}
