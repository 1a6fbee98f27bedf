"""Desk phones: event receivers (no bearer token), the URLs an admin pastes, QA remote control.

Phones cannot send a bearer token, so the receivers under `/v1/devices/{account_id}/` take a
per-device secret in the URL (`key=`, derived from `[deskphones] device_key`, compared in
constant time) and answer only addresses in `[deskphones] allow`. An unknown device, a wrong
secret or an address not allowed changes nothing: it gets a JSON error, a counter and a log line
(never the secret).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from aiohttp import web

from bridge.deskphone import poly, snom, yealink
from bridge.deskphone.events import (
    DeskPhoneEvent,
    DeviceCalls,
    clean,
    derive_secret,
    device_identity,
    normalise_mac,
    secret_matches,
)
from bridge.errors import InvalidInput
from bridge.model import Agent
from desktop_api import validation as v
from desktop_api.clock import utc_now
from desktop_api.config import DeskphoneSettings
from desktop_api.keys import DEVICE_HUB, EVIDENCE, SERVICE, SETTINGS
from desktop_api.middleware import error_response, require_admin
from phone_drivers.deskphone import remote

log = structlog.get_logger("transfer_bridge.deskphones")
routes = web.RouteTableDef()
VENDORS = ("yealink", "poly", "snom")


REFUSED_DEVICE = "invalid_device_key"
REFUSED_MESSAGE = "unknown device or wrong key"
# One warning per client address and reason every this many seconds; the rest are counted.
REFUSAL_LOG_EVERY = 10.0


def _refuse(
    request: web.Request, vendor: str, status: int, code: str, message: str, reason: str = ""
) -> web.Response:
    """A refusal: counted by `code`, logged at most once per client and reason per
    `REFUSAL_LOG_EVERY` seconds (with how many were held back), answered with `code`."""
    request.app[DEVICE_HUB].counts[(vendor, code)] += 1
    reason = reason or code
    held_back = request.app[DEVICE_HUB].refusal_log.allow((request.remote, reason))
    if held_back is not None:
        log.warning(
            "deskphone_refused",
            vendor=vendor,
            code=code,
            reason=reason,
            account_id=request.match_info.get("account_id"),
            peer=request.remote,
            held_back=held_back,
        )
    return error_response(status, code, message)


def _refuse_device(request: web.Request, vendor: str, reason: str) -> web.Response:
    """An unknown device, another account's, a wrong or missing key: one answer for all, so a
    caller learns nothing about which devices or accounts exist (the log keeps the reason)."""
    return _refuse(request, vendor, 403, REFUSED_DEVICE, REFUSED_MESSAGE, reason)


def _address_allowed(settings: DeskphoneSettings, peer: str | None) -> bool:
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for cidr in settings.allow:
        network = ipaddress.ip_network(cidr, strict=False)
        if address.version == network.version and address in network:
            return True
    return False


def _devices(request: web.Request, account_id: str, vendor: str) -> Iterator[tuple[Agent, str]]:
    """The account's agents whose `phone.device` is of `vendor`, with each device's identity."""
    service = request.app[SERVICE]
    if account_id not in service.accounts:
        return
    for agent in service.agents.values():
        device = agent.phone.device
        if agent.account_id != account_id or device is None or device.vendor != vendor:
            continue
        try:
            mac = normalise_mac(device.mac) if device.mac else None
        except InvalidInput:
            continue  # a stored MAC that is not one matches no request
        if mac is None and not device.ip:
            continue
        yield agent, device_identity(mac, device.ip)


def _named_device(
    request: web.Request, account_id: str, vendor: str, mac: str | None, ip: str | None
) -> tuple[Agent, str] | None:
    """The agent whose device the request names (by MAC, or by IP for a device without one)."""
    for agent, identity in _devices(request, account_id, vendor):
        device = agent.phone.device
        assert device is not None
        if device.mac:
            if identity == mac:
                return agent, identity
        elif ip and identity == ip.lower():
            return agent, identity
    return None


def _keyed_device(
    request: web.Request, account_id: str, vendor: str, key: str | None
) -> tuple[Agent, str] | None:
    """The agent whose device this key belongs to (Poly: known before the body is read)."""
    if not key:
        return None
    device_key = request.app[SETTINGS].deskphones.device_key
    found = None
    for agent, identity in _devices(request, account_id, vendor):
        if secret_matches(derive_secret(device_key, account_id, identity), key):
            found = agent, identity
    return found


def _query_key(request: web.Request) -> str | None:
    """The `key=` of the URL; a key is printable ASCII, anything else is no key."""
    key = request.query.get("key")
    return key if key and key.isascii() and key.isprintable() else None


def _key_fits(request: web.Request, account_id: str, identity: str, key: str | None) -> bool:
    secret = derive_secret(request.app[SETTINGS].deskphones.device_key, account_id, identity)
    return bool(key) and secret_matches(secret, key or "")


async def _receive(
    request: web.Request,
    vendor: str,
    agent: Agent,
    identity: str,
    events: list[DeskPhoneEvent | None],
) -> web.Response:
    """Apply each event of an authenticated device; the answer says what became of each."""
    account_id = agent.account_id
    hub = request.app[DEVICE_HUB]
    calls = hub.devices.setdefault((account_id, identity), DeviceCalls())
    outcomes = []
    for event in events:
        if event is None:
            outcomes.append("ignored")
            hub.counts[(vendor, "ignored")] += 1
            continue
        outcome, phone_events = calls.accept(
            event, phone=agent.phone.sip_uri, source=vendor, at=utc_now()
        )
        # The device's account owns this evidence: it reaches that account's agents only.
        await request.app[EVIDENCE].submit(phone_events, account_id)
        hub.counts[(vendor, outcome.value)] += 1
        outcomes.append(outcome.value)
        log.info(
            "deskphone_event",
            vendor=vendor,
            account_id=account_id,
            agent_id=agent.id,
            kind=event.kind.value,
            call_id=event.call_id,
            outcome=outcome.value,
        )
    return web.json_response({"outcomes": outcomes})


def _gate(request: web.Request, vendor: str) -> web.Response | None:
    settings = request.app[SETTINGS].deskphones
    if not settings.device_key:
        return _refuse(
            request, vendor, 403, "forbidden", "desk phones are off: set [deskphones] device_key"
        )
    if not _address_allowed(settings, request.remote):
        return _refuse(
            request, vendor, 403, "address_not_allowed", "this address may not post phone events"
        )
    return None


def _query_device(request: web.Request) -> tuple[str | None, str | None]:
    mac = normalise_mac(request.query.get("mac"))
    ip = clean(request.query.get("ip"))
    if mac is None and ip is None:
        raise InvalidInput("invalid_parameter", "mac (or ip) is required", field="/query/mac")
    return mac, ip


def _unknown_event(request: web.Request, vendor: str) -> web.Response:
    event = request.match_info.get("event", "")
    return _refuse(request, vendor, 404, "unknown_event", f"{vendor} has no event {event!r}")


async def _action_url(
    request: web.Request,
    vendor: str,
    parse: Callable[[str, Mapping[str, str]], DeskPhoneEvent | None],
) -> web.Response:
    """An action-URL GET (Yealink, Snom): one event, named in the path, fields in the query."""
    refused = _gate(request, vendor)
    if refused is not None:
        return refused
    try:
        event = parse(request.match_info["event"], request.query)
    except KeyError:
        return _unknown_event(request, vendor)
    mac, ip = _query_device(request)
    account_id = request.match_info["account_id"]
    key = _query_key(request)
    found = _named_device(request, account_id, vendor, mac, ip)
    # The key is checked whether or not the device is known, so both take the same time.
    fits = _key_fits(request, account_id, found[1] if found else mac or ip or "", key)
    if found is None:
        return _refuse_device(request, vendor, "unknown_device")
    if not fits:
        return _refuse_device(request, vendor, "wrong_key")
    return await _receive(request, vendor, found[0], found[1], [event])


@routes.get("/v1/devices/{account_id}/yealink/{event}")
async def yealink_event(request: web.Request) -> web.Response:
    """A Yealink Action URL request."""
    return await _action_url(request, yealink.VENDOR, yealink.parse)


@routes.get("/v1/devices/{account_id}/snom/{event}")
async def snom_event(request: web.Request) -> web.Response:
    """A Snom Action URL request."""
    return await _action_url(request, snom.VENDOR, snom.parse)


@routes.post("/v1/devices/{account_id}/poly")
async def poly_event(request: web.Request) -> web.Response:
    """A Poly telephony event notification (XML)."""
    refused = _gate(request, poly.VENDOR)
    if refused is not None:
        return refused
    # Account, device and key first: the body is parsed only for a device that proved itself.
    account_id = request.match_info["account_id"]
    found = _keyed_device(request, account_id, poly.VENDOR, _query_key(request))
    if found is None:
        return _refuse_device(request, poly.VENDOR, "unknown_device_or_wrong_key")
    agent, identity = found
    notification = poly.parse(await request.read())
    device = agent.phone.device
    assert device is not None
    named = notification.mac if device.mac else (notification.ip or "").lower()
    if named != identity:
        return _refuse_device(request, poly.VENDOR, "another_device")
    return await _receive(request, poly.VENDOR, agent, identity, notification.events)


# --- admin: what to paste, and QA remote control ---------------------------------------------


async def _agent_device(request: web.Request) -> tuple[Agent, str]:
    require_admin(request)
    account_id = request.match_info["account_id"]
    agent_id = request.match_info["agent_id"]
    service = request.app[SERVICE]
    await service.known_account(account_id)
    agent = await service.known_agent(account_id, agent_id)
    device = agent.phone.device
    if device is None or device.vendor not in VENDORS:
        raise _Conflict("no_device", "the agent's phone has no Yealink, Poly or Snom device")
    return agent, device.vendor


class _Conflict(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@routes.get("/v1/accounts/{account_id}/agents/{agent_id}/device-urls")
async def device_urls(request: web.Request) -> web.Response:
    """The exact lines an admin pastes into the agent's phone (admin)."""
    try:
        agent, vendor = await _agent_device(request)
    except _Conflict as exc:
        return error_response(409, exc.code, exc.message)
    settings = request.app[SETTINGS].deskphones
    if not settings.device_key:
        return error_response(409, "deskphones_disabled", "set [deskphones] device_key first")
    device = agent.phone.device
    assert device is not None
    mac = normalise_mac(device.mac, "/phone/device/mac") if device.mac else None
    if mac is None and not device.ip:
        return error_response(409, "no_device", "the device needs a mac (or an ip)")
    identity = device_identity(mac, device.ip)
    secret = derive_secret(settings.device_key, agent.account_id, identity)
    origin = settings.public_url or str(request.url.origin())
    base = f"{origin}/v1/devices/{agent.account_id}"
    module: Any = {"yealink": yealink, "snom": snom, "poly": poly}[vendor]
    return web.json_response(
        {
            "account_id": agent.account_id,
            "agent_id": agent.id,
            "vendor": vendor,
            "device": identity,
            "key": secret,
            "templates": module.templates(base, secret),
        }
    )


@routes.post("/v1/accounts/{account_id}/agents/{agent_id}/device-commands")
async def device_command(request: web.Request) -> web.Response:
    """Press a key on the agent's phone (admin, QA only; never part of the agent flow)."""
    try:
        agent, vendor = await _agent_device(request)
    except _Conflict as exc:
        return error_response(409, exc.code, exc.message)
    body = v.parse_json_object(await request.read())
    v.check_keys(body, "", ["command"])
    command = v.choice(body, "command", "", remote.COMMANDS)
    device = agent.phone.device
    assert device is not None
    if command not in remote.KEYS[vendor]:
        return error_response(
            409, "unsupported_command", f"{vendor} phones have no documented key for {command}"
        )
    if not device.ip:
        return error_response(409, "no_device", "the device has no ip to send the command to")
    settings = request.app[SETTINGS].deskphones
    try:
        req = remote.build_request(vendor, device.ip, command, settings.remote_scheme)
    except ValueError as exc:
        return error_response(409, "no_device", str(exc))
    # The address is the tenant's to write; the phones' login is the operator's. It goes only
    # to addresses the operator allowed, and by default only over HTTPS.
    if not remote.address_allowed(req.url, settings.remote_allow):
        log.warning("device_command_refused", agent_id=agent.id, reason="address_not_allowed")
        return error_response(
            409,
            "address_not_allowed",
            "the phone's address is not an IP inside [deskphones] remote_allow",
        )
    creds = None
    if settings.remote_username:
        creds = remote.Credentials(settings.remote_username, settings.remote_password)
    log.info(
        "device_command",
        account_id=agent.account_id,
        agent_id=agent.id,
        vendor=vendor,
        command=command,
    )
    try:
        status = await remote.send(req, vendor, creds)
    except remote.RemoteError as exc:
        log.warning("device_command_failed", agent_id=agent.id, vendor=vendor, error=str(exc))
        return error_response(502, "device_error", str(exc))
    return web.json_response(
        {
            "vendor": vendor,
            "command": command,
            "key": req.key,
            "method": req.method,
            "url": str(req.url),
            "phone_status": status,
        }
    )
