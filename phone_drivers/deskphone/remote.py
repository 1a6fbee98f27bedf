"""Remote control of desk phones, for QA and admins only: the agent flow never calls this.

The bridge never dials for an agent (seed rule 1): there is no "call" or "dial" command here,
only key presses on a call the phone already has. Each vendor's request is the one its
documentation gives:

- Yealink Action URI: `GET http://<phone>/servlet?key=<KEY>` with the web login as HTTP Basic
  (`http(s)://username:password@<phone>/servlet?key=...`), answered only from addresses listed in
  `features.action_uri_limit_ip`.
- Snom: `GET http://<phone>/command.htm?key=<KEY>` with the web login (`http_user`/`http_pass`)
  as HTTP Basic.
- Poly push: `POST http://<phone>/push`, `Content-Type: application/x-com-polycom-spipx`,
  `<PolycomIPPhone><Data priority="Critical">Key:...</Data></PolycomIPPhone>`, challenged with
  HTTP Digest (`apps.push.username`/`apps.push.password`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import aiohttp
from yarl import URL

# command -> the vendor's key name; a command a vendor lacks is refused, never approximated.
KEYS: dict[str, dict[str, str]] = {
    "yealink": {
        "answer": "ASW",
        "hangup": "CALLEND",
        "hold": "F_HOLD",
        "transfer": "F_TRANSFER",
        "ok": "OK",
    },
    "snom": {
        "answer": "ENTER",
        "hangup": "CANCEL",
        "hold": "F_HOLD",
        "transfer": "TRANSFER",
        "ok": "ENTER",
    },
    "poly": {
        "answer": "Key:Handsfree",
        "hold": "Key:Hold",
        "transfer": "Key:Transfer",
    },
}
COMMANDS = ("answer", "hangup", "hold", "transfer", "ok")
POLY_CONTENT_TYPE = "application/x-com-polycom-spipx"
TIMEOUT = aiohttp.ClientTimeout(total=5.0)


class RemoteError(Exception):
    """The phone could not be reached or refused the command."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The phone's web (or push) login."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(username={self.username!r})"


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """The exact request a phone expects for one command."""

    method: str
    url: URL
    body: bytes | None
    content_type: str | None
    key: str


def phone_url(address: str, path: str, scheme: str = "https") -> URL:
    """`<scheme>://<address><path>`; `address` is an IP or host, with an optional port."""
    url = URL(f"{scheme}://{address}")
    if not url.host or url.path not in ("", "/") or url.query_string or url.user:
        raise ValueError(f"not a phone address: {address!r}")
    return url.with_path(path)


def build_request(vendor: str, address: str, command: str, scheme: str = "https") -> CommandRequest:
    """The request for `command` on a phone of `vendor` at `address`; KeyError if unsupported.

    `scheme` is `https` unless the operator chose `http` for phones without TLS
    (`[deskphones] remote_scheme`): with `http` a Basic login travels in clear text.
    """
    key = KEYS[vendor][command]
    if vendor == "yealink":
        url = phone_url(address, "/servlet", scheme).with_query(key=key)
        return CommandRequest("GET", url, None, None, key)
    if vendor == "snom":
        url = phone_url(address, "/command.htm", scheme).with_query(key=key)
        return CommandRequest("GET", url, None, None, key)
    body = f'<PolycomIPPhone><Data priority="Critical">{key}</Data></PolycomIPPhone>'.encode()
    url = phone_url(address, "/push", scheme)
    return CommandRequest("POST", url, body, POLY_CONTENT_TYPE, key)


def address_allowed(url: URL, allow: tuple[str, ...]) -> bool:
    """Whether the phone's host is an IP address inside one of the `allow` networks (CIDR).

    A host name is never allowed: what it resolves to is not the operator's choice.
    """
    try:
        address = ipaddress.ip_address((url.host or "").strip("[]"))
    except ValueError:
        return False
    for cidr in allow:
        network = ipaddress.ip_network(cidr, strict=False)
        if address.version == network.version and address in network:
            return True
    return False


async def send(request: CommandRequest, vendor: str, credentials: Credentials | None) -> int:
    """Send one command; returns the phone's status, raises `RemoteError` if it failed."""
    middlewares: tuple[aiohttp.DigestAuthMiddleware, ...] = ()
    headers = {"Content-Type": request.content_type} if request.content_type else {}
    if credentials is not None:
        if vendor == "poly":
            middlewares = (
                aiohttp.DigestAuthMiddleware(credentials.username, credentials.password),
            )
        else:
            headers["Authorization"] = aiohttp.encode_basic_auth(
                credentials.username, credentials.password
            )
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT, middlewares=middlewares) as http,
            http.request(
                request.method,
                request.url,
                data=request.body,
                headers=headers,
                allow_redirects=False,
            ) as resp,
        ):
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RemoteError(f"the phone did not answer: {type(exc).__name__}") from None
    # Snom answers some commands with a redirect to its index page; that is success too.
    if not 200 <= status < 400:
        raise RemoteError(f"the phone answered HTTP {status}")
    return status
