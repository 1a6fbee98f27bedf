"""HTTP digest authentication for SIP (RFC 2617, RFC 7616): answer a 401/407 challenge.

MD5 and SHA-256 (and their `-sess` variants), `qop=auth` or no qop (RFC 2069 style). `auth-int`
is not offered by PBXs for SUBSCRIBE and is refused. The password never leaves this module
except hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from bridge.dialog.errors import DigestError
from bridge.sip.syntax import split_top_level

__all__ = ["Challenge", "DigestCredentials", "DigestSession", "authorization", "parse_challenge"]

_HASHES = {"md5": hashlib.md5, "sha-256": hashlib.sha256}


@dataclass(frozen=True, slots=True)
class Challenge:
    """A `WWW-Authenticate` / `Proxy-Authenticate: Digest ...` challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A digest login; `repr` never shows the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"DigestCredentials(username={self.username!r})"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_challenge(value: str) -> Challenge:
    """Decode a Digest challenge header value."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme!r}")
    params: dict[str, str] = {}
    for part in split_top_level(rest, ",", angle=False):
        name, eq, raw = part.partition("=")
        if eq:
            params[name.strip().lower()] = _unquote(raw)
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or not nonce:
        raise DigestError("challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    base = algorithm.lower().removesuffix("-sess")
    if base not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and "auth" not in qop:
        raise DigestError(f"unsupported qop {params['qop']!r} (only auth)")
    stale = params.get("stale", "").lower() == "true"
    return Challenge(realm, nonce, algorithm, qop, params.get("opaque"), stale)


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm.lower().removesuffix("-sess")](text.encode("utf-8")).hexdigest()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def response(
    challenge: Challenge,
    creds: DigestCredentials,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    cnonce: str = "",
) -> str:
    """The `response` value (hex) for a request."""
    alg = challenge.algorithm
    ha1 = _h(alg, f"{creds.username}:{challenge.realm}:{creds.password}")
    if alg.lower().endswith("-sess"):
        ha1 = _h(alg, f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = _h(alg, f"{method}:{uri}")
    if "auth" in challenge.qop:
        return _h(alg, f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return _h(alg, f"{ha1}:{challenge.nonce}:{ha2}")


def authorization(
    challenge: Challenge,
    creds: DigestCredentials,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    cnonce: str,
) -> str:
    """The `Authorization` (or `Proxy-Authorization`) header value answering `challenge`."""
    digest = response(challenge, creds, method, uri, nc=nc, cnonce=cnonce)
    parts = [
        f"username={_quote(creds.username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(digest)}",
        f"algorithm={challenge.algorithm}",
    ]
    if "auth" in challenge.qop:
        parts += ["qop=auth", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


@dataclass(slots=True)
class DigestSession:
    """One dialog's answers to challenges: each nonce answered once (again only when `stale`)."""

    challenge: Challenge | None = None  # the challenge every request answers from now on
    header: str = "Authorization"  # or "Proxy-Authorization" (a 407)
    answered_nonce: str | None = None
    nc: int = 0

    def reset(self) -> None:
        """A new dialog: no challenge yet."""
        self.challenge = None
        self.answered_nonce = None
        self.nc = 0

    def take(self, code: int, value: str | None) -> str | None:
        """Take a 401/407's challenge header: None to send again with an answer, else why not.

        A second challenge without `stale=true` means a wrong password (`auth_failed`).
        """
        try:
            challenge = parse_challenge(value or "")
        except DigestError as exc:
            return f"auth_unsupported: {exc}"
        if challenge.nonce == self.answered_nonce or (
            self.answered_nonce is not None and not challenge.stale
        ):
            return "auth_failed"
        self.challenge = challenge
        self.header = "Authorization" if code == 401 else "Proxy-Authorization"
        self.answered_nonce = challenge.nonce
        self.nc = 0
        return None

    def header_line(
        self, creds: DigestCredentials, method: str, uri: str, cnonce: Callable[[], str]
    ) -> str | None:
        """The next request's `Authorization:` line (counting `nc`); None before a challenge."""
        if self.challenge is None:
            return None
        self.nc += 1
        value = authorization(self.challenge, creds, method, uri, nc=self.nc, cnonce=cnonce())
        return f"{self.header}: {value}"
