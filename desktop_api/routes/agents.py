"""`/v1/agents/{id}`: agents, their phones and their availability (rule 5)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bridge.errors import InvalidInput
from bridge.model import Device, Phone
from desktop_api import validation as v
from desktop_api.keys import SERVICE
from desktop_api.middleware import require_account

routes = web.RouteTableDef()
VENDORS = ("yealink", "poly", "snom", "other")
# What `phone.sip_uri` may be; openapi.yaml's `sip_uri` pattern is this same expression.
# Both are used with `search`, as a JSON Schema validator does, so the two agree exactly.
SIP_URI = re.compile(
    r"^[sS][iI][pP][sS]?:[^\s\u0000-\u0020\u007f-\u009f;?@<>:]+@"
    r"(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?(?:[;?][^\s<>]*)?$"
)
# `phone.device.mac`: six hex pairs, optionally separated by `:`, `-` or `.` (openapi.yaml).
MAC = re.compile(r"^[0-9A-Fa-f]{2}(?:[:.-]?[0-9A-Fa-f]{2}){5}$")


def parse_phone(body: dict[str, Any]) -> Phone:
    """`phone`: `{sip_uri, ami_endpoint?, device?: {vendor, mac?, ip?}}`."""
    phone = v.obj_field(body, "phone", "")
    v.check_keys(phone, "/phone", ["sip_uri"], ["ami_endpoint", "device"])
    sip_uri = v.text(phone, "sip_uri", "/phone", max_len=256)
    assert sip_uri is not None
    if not SIP_URI.search(sip_uri):
        raise InvalidInput(
            "invalid_field",
            "sip_uri must look like sip:user@host (optionally :port and ;parameters)",
            field="/phone/sip_uri",
        )
    ami = v.text(phone, "ami_endpoint", "/phone", optional=True)
    device = None
    if phone.get("device") is not None:
        dev = v.obj_field(phone, "device", "/phone")
        v.check_keys(dev, "/phone/device", ["vendor"], ["mac", "ip"])
        vendor = v.choice(dev, "vendor", "/phone/device", VENDORS)
        mac = v.text(dev, "mac", "/phone/device", max_len=32, optional=True)
        if mac is not None and not MAC.search(mac):
            raise InvalidInput(
                "invalid_field", "mac must be a MAC address", field="/phone/device/mac"
            )
        device = Device(vendor, mac, v.text(dev, "ip", "/phone/device", max_len=64, optional=True))
    return Phone(sip_uri=sip_uri, ami_endpoint=ami, device=device)


@routes.put("/v1/agents/{agent_id}")
async def put_agent(request: web.Request) -> web.Response:
    """Create (201) or replace (200) an agent and its phone."""
    account_id = require_account(request)
    agent_id = request.match_info["agent_id"]
    v.check_id(agent_id, "/id")
    body = v.parse_json_object(await request.read())
    v.check_keys(body, "", ["name", "phone"])
    name = v.text(body, "name", "")
    assert name is not None
    phone = parse_phone(body)
    service = request.app[SERVICE]
    agent, created = await service.put_agent(account_id, agent_id, name, phone)
    return web.json_response(service.agent_view(agent), status=201 if created else 200)


@routes.get("/v1/agents/{agent_id}")
async def get_agent(request: web.Request) -> web.Response:
    """The agent, its phone, whether it can take requests and why not."""
    account_id = require_account(request)
    service = request.app[SERVICE]
    agent = await service.known_agent(account_id, request.match_info["agent_id"])
    return web.json_response(service.agent_view(agent))
