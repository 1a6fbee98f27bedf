"""Settings from a TOML file and `TRANSFER_BRIDGE_<SECTION>_<KEY>` environment overrides."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "http": {"listen": "127.0.0.1:8080", "max_body_bytes": 65536},
    "store": {"url": "sqlite:///var/transfer-bridge.db"},
    "auth": {"admin_token": ""},
    "log": {"format": "json", "level": "info"},
}
SOURCE_KINDS: dict[str, dict[str, type]] = {
    "hep": {"listen": str, "password": str, "name": str, "match_user": bool},
    "ami": {"host": str, "port": int, "username": str, "secret": str, "name": str},
}
LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad key or value; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Validated configuration."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 65536
    store_url: str = "sqlite:///var/transfer-bridge.db"
    admin_token: str = ""
    log_format: str = "json"
    log_level: str = "info"
    sources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print secrets
        return f"Settings(listen={self.host}:{self.port}, store={self.store_url!r})"


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:8080`)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def _coerce(value: Any, default: Any, key: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
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
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"store.url: only sqlite:///PATH is supported so far, got {url!r}")
    if merged["http"]["max_body_bytes"] < 1024:
        raise ConfigError("http.max_body_bytes: must be at least 1024")
    return Settings(
        host=host,
        port=port,
        max_body_bytes=merged["http"]["max_body_bytes"],
        store_url=url,
        admin_token=merged["auth"]["admin_token"],
        log_format=merged["log"]["format"],
        log_level=merged["log"]["level"],
        sources=_sources(raw.get("sources", {})),
    )


def _sources(raw: Any) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(raw, dict):
        raise ConfigError("[sources] must hold [[sources.hep]] / [[sources.ami]] tables")
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
        out[kind] = [dict(e) for e in entries]
    return out
