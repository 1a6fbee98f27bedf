"""Settings from a TOML file and `TRANSFER_BRIDGE_<SECTION>_<KEY>` environment overrides."""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.model import ID_PATTERN
from desktop_api.storage import redacted_url

INSTANCE_MAX = 40  # characters of [cluster] instance

DEFAULTS: dict[str, dict[str, Any]] = {
    "http": {
        "listen": "127.0.0.1:8080",
        "max_body_bytes": 65536,
        "idle_timeout": 15,
        "body_timeout": 15,
        "max_connections": 10_000,
    },
    "store": {"url": "sqlite:///var/transfer-bridge.db", "keep_changes": 1_000_000},
    "cluster": {"instance": "", "poll_interval": 1.0, "lease_retry": 1.0},
    "auth": {"admin_token": ""},
    "log": {"format": "json", "level": "info"},
    "deskphones": {
        "device_key": "",
        "allow": ["127.0.0.1/32", "::1/128"],
        "public_url": "",
        "remote_username": "",
        "remote_password": "",
        "remote_allow": ["127.0.0.1/32", "::1/128"],
        "remote_scheme": "https",
    },
}
SOURCE_KINDS: dict[str, dict[str, type]] = {
    "hep": {"listen": str, "password": str, "name": str, "match_user": bool, "account": str},
    "ami": {
        "account": str,
        "host": str,
        "port": int,
        "username": str,
        "secret": str,
        "name": str,
        "call_id_variable": str,
    },
    "dialog": {
        "account": str,
        "name": str,
        "pbx": str,
        "listen": str,
        "username": str,
        "password": str,
        "domain": str,
        "expires": int,
        "extensions": list,
    },
}
LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad key or value; the message names it."""


@dataclass(frozen=True)
class DeskphoneSettings:
    """`[deskphones]`: desk phones posting their own events, and QA remote control."""

    device_key: str = ""  # derives each device's URL secret; empty = receivers refuse
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # addresses phones may post from
    public_url: str = ""  # the bridge as phones reach it; empty = the admin request's origin
    remote_username: str = ""  # the phones' web login, for remote control
    remote_password: str = ""
    # addresses (CIDR) remote control may send commands, and so the login, to
    remote_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    remote_scheme: str = "https"  # how commands reach the phones: https, or http (clear text)

    def __repr__(self) -> str:  # never print secrets
        return f"DeskphoneSettings(allow={self.allow!r}, public_url={self.public_url!r})"


@dataclass(frozen=True)
class Settings:
    """Validated configuration."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 65536
    idle_timeout: float = 15.0  # seconds to send a request head (after connecting or a response)
    body_timeout: float = 15.0  # seconds to send a request body
    max_connections: int = 10_000  # open HTTP connections at most (more are closed at once)
    store_url: str = "sqlite:///var/transfer-bridge.db"
    keep_changes: int = 1_000_000  # change-feed entries kept for SSE resume
    admin_token: str = ""
    log_format: str = "json"
    log_level: str = "info"
    sources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deskphones: DeskphoneSettings = field(default_factory=DeskphoneSettings)
    # [cluster]: several instances on one PostgreSQL store (ignored on SQLite)
    instance: str = ""  # this instance's name in /healthz and leases; "" = host:pid
    poll_interval: float = 1.0  # seconds between catch-ups of the shared feed (LISTEN missed)
    lease_retry: float = 1.0  # seconds between a standby's attempts to take a source's lease

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(listen={self.host}:{self.port}, store={redacted_url(self.store_url)!r})"


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:8080`)."""
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536 or not host:
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def _coerce(value: Any, default: Any, key: str) -> Any:
    if isinstance(default, list):
        if isinstance(value, str):  # from the environment: comma-separated
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return value
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if isinstance(default, int):
        if isinstance(value, bool | float):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def load_settings(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, override and validate; raises `ConfigError` naming the bad key."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    merged: dict[str, dict[str, Any]] = {s: dict(v) for s, v in DEFAULTS.items()}
    for section, values in raw.items():
        if section == "sources":
            continue
        if section not in DEFAULTS:
            raise ConfigError(f"unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"unknown key {section}.{key}")
            merged[section][key] = _coerce(value, DEFAULTS[section][key], f"{section}.{key}")
    prefix = "TRANSFER_BRIDGE_"
    for name, value in env.items():
        if not name.startswith(prefix) or name == "TRANSFER_BRIDGE_ADMIN_TOKEN":
            continue
        rest = name[len(prefix) :].lower()
        section, _, key = rest.partition("_")
        if section not in DEFAULTS or key not in DEFAULTS[section]:
            raise ConfigError(f"unknown setting in environment variable {name}")
        merged[section][key] = _coerce(value, DEFAULTS[section][key], name)
    if "TRANSFER_BRIDGE_ADMIN_TOKEN" in env and "TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN" not in env:
        merged["auth"]["admin_token"] = env["TRANSFER_BRIDGE_ADMIN_TOKEN"]
    host, port = parse_listen(merged["http"]["listen"], "http.listen")
    if merged["log"]["format"] not in ("json", "console"):
        raise ConfigError(f"log.format: expected json or console, got {merged['log']['format']!r}")
    if merged["log"]["level"] not in LEVELS:
        raise ConfigError(f"log.level: expected one of {', '.join(LEVELS)}")
    url = merged["store"]["url"]
    if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        # not echoed: a mistyped PostgreSQL URL holds a password
        raise ConfigError("store.url: expected sqlite:///PATH or postgresql://USER:PASS@HOST/DB")
    if merged["http"]["max_body_bytes"] < 1024:
        raise ConfigError("http.max_body_bytes: must be at least 1024")
    for key in ("idle_timeout", "body_timeout"):
        if not 1 <= merged["http"][key] <= 3600:
            raise ConfigError(f"http.{key}: expected 1-3600 seconds")
    if not 16 <= merged["http"]["max_connections"] <= 1_000_000:
        raise ConfigError("http.max_connections: expected 16-1000000")
    if merged["store"]["keep_changes"] < 1000:
        raise ConfigError("store.keep_changes: must be at least 1000")
    deskphones = _deskphones(merged["deskphones"])
    cluster = merged["cluster"]
    instance = str(cluster["instance"]).strip() or default_instance()
    # PostgreSQL keeps 63 bytes of a connection's application_name, which names the instance
    # ("transfer-bridge <instance> feed") to the others: ASCII, short enough to fit whole.
    if len(instance) > INSTANCE_MAX or not (instance.isascii() and instance.isprintable()):
        raise ConfigError(f"cluster.instance: at most {INSTANCE_MAX} printable ASCII characters")
    for key in ("poll_interval", "lease_retry"):
        if not 0.05 <= float(cluster[key]) <= 60:
            raise ConfigError(f"cluster.{key}: expected 0.05-60 seconds")
    return Settings(
        host=host,
        port=port,
        max_body_bytes=merged["http"]["max_body_bytes"],
        idle_timeout=float(merged["http"]["idle_timeout"]),
        body_timeout=float(merged["http"]["body_timeout"]),
        max_connections=merged["http"]["max_connections"],
        store_url=url,
        keep_changes=merged["store"]["keep_changes"],
        admin_token=merged["auth"]["admin_token"],
        log_format=merged["log"]["format"],
        log_level=merged["log"]["level"],
        sources=_sources(raw.get("sources", {})),
        deskphones=deskphones,
        instance=instance,
        poll_interval=float(cluster["poll_interval"]),
        lease_retry=float(cluster["lease_retry"]),
    )


def default_instance() -> str:
    """`host:pid`: unique among the instances of one database unless set."""
    host = socket.gethostname().encode("ascii", "replace").decode()[: INSTANCE_MAX - 8]
    return f"{host}:{os.getpid()}"


def _deskphones(values: dict[str, Any]) -> DeskphoneSettings:
    for key in ("allow", "remote_allow"):
        for cidr in values[key]:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(
                    f"deskphones.{key}: {cidr!r} is not an address or network (CIDR)"
                ) from None
    if values["remote_scheme"] not in ("https", "http"):
        raise ConfigError("deskphones.remote_scheme: expected https or http")
    public_url = values["public_url"].rstrip("/")
    if public_url and not public_url.startswith(("http://", "https://")):
        raise ConfigError(f"deskphones.public_url: expected http(s)://..., got {public_url!r}")
    return DeskphoneSettings(
        device_key=values["device_key"],
        allow=tuple(values["allow"]),
        public_url=public_url,
        remote_username=values["remote_username"],
        remote_password=values["remote_password"],
        remote_allow=tuple(values["remote_allow"]),
        remote_scheme=values["remote_scheme"],
    )


def _sources(raw: Any) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(raw, dict):
        raise ConfigError(
            "[sources] must hold [[sources.hep]] / [[sources.ami]] / [[sources.dialog]] tables"
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, entries in raw.items():
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"unknown source kind [[sources.{kind}]]")
        if not isinstance(entries, list):
            raise ConfigError(f"sources.{kind} must be an array of tables ([[sources.{kind}]])")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ConfigError(f"sources.{kind}[{i}] must be a table")
            for key, value in entry.items():
                want = SOURCE_KINDS[kind].get(key)
                if want is None:
                    raise ConfigError(f"unknown key sources.{kind}[{i}].{key}")
                if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                    raise ConfigError(f"sources.{kind}[{i}].{key}: expected {want.__name__}")
            account = entry.get("account")
            if account is not None and not ID_PATTERN.fullmatch(account):
                raise ConfigError(f"sources.{kind}[{i}].account: expected an account id")
        out[kind] = [dict(e) for e in entries]
    for i, entry in enumerate(out.get("ami", [])):
        for key in ("username", "secret"):
            value = entry.get(key, "")
            if not value or any(c in value for c in "\r\n\x00"):
                raise ConfigError(f"sources.ami[{i}].{key}: required, one line of text")
        if not 0 < entry.get("port", 5038) < 65536:
            raise ConfigError(f"sources.ami[{i}].port: expected 1-65535")
    for i, entry in enumerate(out.get("dialog", [])):
        _dialog_entry(i, entry)
    names = [
        e.get("name", f"{kind}-{i}") for kind, entries in out.items() for i, e in enumerate(entries)
    ]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"sources: the name {name!r} is used twice (names must be unique)")
    return out


def _dialog_entry(i: int, entry: dict[str, Any]) -> None:
    """`[[sources.dialog]]`: SUBSCRIBE Event: dialog to the PBX (see docs/dialog-source.md)."""
    key = f"sources.dialog[{i}]"
    for name in ("username", "password"):
        value = entry.get(name, "")
        if not value or any(c in value for c in '\r\n\x00"\\'):
            raise ConfigError(f"{key}.{name}: required, one line of text without quotes")
    parse_listen(entry.get("pbx", ""), f"{key}.pbx")
    parse_listen(entry.get("listen", "0.0.0.0:0"), f"{key}.listen")
    if not 60 <= entry.get("expires", 600) <= 86400:
        raise ConfigError(f"{key}.expires: expected 60-86400 seconds")
    domain = entry.get("domain", "")
    if any(c in domain for c in ' <>@;\r\n"\\'):
        raise ConfigError(f"{key}.domain: expected a host name (and port)")
    extensions = entry.get("extensions", [])
    for ext in extensions:
        if not isinstance(ext, str) or not ext or any(c in ext for c in ' <>@;:\r\n"\\'):
            raise ConfigError(f'{key}.extensions: expected a list of extensions like "1001"')
