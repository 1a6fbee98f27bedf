"""The Docker set-ups, checked without a Docker engine (there is none where CI runs).

Each compose file must parse, name Dockerfiles and mounted files that exist, and hand every
bridge container a configuration the bridge's own loader accepts with that container's
environment. The several-instances file must give each instance its own name on one shared
PostgreSQL database, and its load balancer must reach every instance and let long-polls and
Server-Sent Events through (unbuffered, with a read timeout longer than a long-poll).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from desktop_api.config import Settings, load_settings, parse_listen

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE_FILES = sorted(DOCKER.glob("compose*.yaml"))
LONG_POLL_MAX = 60  # seconds: the longest `wait` a long-poll may ask for (docs/api.md)
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path
    return data


def _interpolate(value: str) -> str:
    """What compose makes of `${VAR:-default}` with nothing set in the shell: the default."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


def _dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    return (DOCKER / build["context"] / build["dockerfile"]).resolve()


def _files_in_container(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> the repository file it is: the Dockerfile's COPYs, then bind mounts."""
    files: dict[str, Path] = {}
    context = (DOCKER / service["build"]["context"]).resolve()
    for line in _dockerfile(service).read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "COPY" and not parts[1].startswith("--"):
            files[parts[2]] = context / parts[1]
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if source.startswith("."):
            files[rest.split(":")[0]] = (DOCKER / source).resolve()
    return files


def _config_path(service: dict[str, Any]) -> str:
    command = service.get("command")
    if command is None:
        cmd_lines = [
            line for line in _dockerfile(service).read_text().splitlines() if line.startswith("CMD")
        ]
        command = yaml.safe_load(cmd_lines[-1][len("CMD") :])
    if isinstance(command, str):
        command = shlex.split(command)
    assert command[:2] == ["transfer-bridge", "serve"], command
    return str(command[command.index("--config") + 1])


def _bridges(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service and service["build"]["dockerfile"] == "docker/bridge/Dockerfile"
    }


def _settings(service: dict[str, Any]) -> Settings:
    config = _files_in_container(service)[_config_path(service)]
    assert config.is_file(), config
    return load_settings(config, _environment(service))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_name_what_exists(path: Path) -> None:
    compose = _compose(path)
    for name, service in compose["services"].items():
        if "build" in service:
            assert _dockerfile(service).is_file(), f"{name}: no Dockerfile"
            for inside, outside in _files_in_container(service).items():
                found = outside.exists() or any(outside.parent.glob(outside.name))  # COPY *.conf
                assert found, f"{name}: {inside} comes from {outside}, which is missing"
        else:
            assert "image" in service, f"{name}: neither build nor image"
    assert _bridges(compose), "no bridge service"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_bridge_container_starts_with_a_valid_configuration(path: Path) -> None:
    compose = _compose(path)
    for name, service in _bridges(compose).items():
        settings = _settings(service)  # raises ConfigError naming the bad key or variable
        assert settings.host == "0.0.0.0", f"{name}: the API must listen beyond the container"
        published_udp = {
            int(port.split(":")[-1].removesuffix("/udp"))
            for port in service.get("ports", [])
            if port.endswith("/udp")
        }
        for hep in settings.sources.get("hep", []):
            _, hep_port = parse_listen(hep["listen"], f"{name} sources.hep")
            if published_udp:
                assert hep_port in published_udp, f"{name}: HEP port {hep_port} not published"


def test_several_instances_share_one_database_under_their_own_names() -> None:
    compose = _compose(DOCKER / "compose.cluster.yaml")
    bridges = _bridges(compose)
    assert len(bridges) >= 2
    settings = {name: _settings(service) for name, service in bridges.items()}
    instances = [s.instance for s in settings.values()]
    assert len(set(instances)) == len(instances), instances
    assert all(name in instances for name in bridges), "instance names should say which container"
    urls = {s.store_url for s in settings.values()}
    assert len(urls) == 1, "every instance on one database"
    url = urls.pop()
    db = _environment(compose["services"]["postgres"])
    assert url == (
        f"postgresql://{db['POSTGRES_USER']}:{db['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{db['POSTGRES_DB']}"
    )
    names = {tuple(sorted(s.sources)) for s in settings.values()}
    assert len(names) == 1, "the same sources, under the same names, on every instance"
    for name, service in bridges.items():
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name


def _nginx_blocks(text: str) -> tuple[dict[str, list[str]], dict[str, str], str]:
    """(upstream -> its servers, location -> the upstream it proxies to, text without comments)."""
    text = re.sub(r"#[^\n]*", "", text)
    upstreams = {
        m.group(1): re.findall(r"^\s*server\s+(\S+?)[\s;]", m.group(2), re.M)
        for m in re.finditer(r"upstream\s+(\w+)\s*\{([^}]*)\}", text)
    }
    locations = {
        m.group(1): m.group(2)
        for m in re.finditer(r"location\s+(\S+)\s*\{[^}]*?proxy_pass\s+http://(\w+);", text)
    }
    return upstreams, locations, text


def test_the_load_balancer_reaches_every_instance_and_lets_streams_through() -> None:
    compose = _compose(DOCKER / "compose.cluster.yaml")
    bridges = _bridges(compose)
    lb = compose["services"]["lb"]
    mounts = dict(reversed(v.split(":")[:2]) for v in lb["volumes"])
    conf = (DOCKER / mounts["/etc/nginx/nginx.conf"]).resolve()
    upstreams, locations, text = _nginx_blocks(conf.read_text())
    assert "/" in locations
    want = {f"{name}:{_settings(s).port}" for name, s in bridges.items()}
    for location, upstream in locations.items():
        assert set(upstreams[upstream]) == want, f"location {location}"
    assert re.search(r"\bproxy_buffering\s+off;", text), "SSE must not be buffered"
    assert re.search(r"\bproxy_http_version\s+1\.1;", text)
    timeout = re.search(r"\bproxy_read_timeout\s+(\d+)s?;", text)
    assert timeout and int(timeout.group(1)) > LONG_POLL_MAX
    assert "$request " not in text and "$request_uri" not in text, (
        "the access log must not hold URL queries: desk-phone URLs carry their device key"
    )
