"""`transfer-bridge serve [--config PATH]`: the TOML file, environment overrides, and refusals.

A bad key or value stops start-up quickly with a message that names it (docs/configuration.md);
the command line is run as a real process, `load_settings` is also checked on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from desktop_api.config import ConfigError, load_settings

CLI = [sys.executable, "-m", "desktop_api.cli", "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFER_BRIDGE_")}
    env.update(extra)
    return env


def run_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; it must not take long to refuse."""
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=15
    )


def spawn(args: list[str], cwd: Path, env: dict[str, str], stderr: Any) -> subprocess.Popen[bytes]:
    """Start the CLI in the background (stdout discarded)."""
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- a full configuration file, with the environment on top ----------------------------------


async def test_a_file_with_every_section_runs_and_the_environment_wins(tmp_path: Path) -> None:
    file_port, env_port, hep_port = free_port(), free_port(), free_port()
    ami_port = free_port()  # nothing listens there: the AMI source retries, the API serves
    config = write(
        tmp_path / "bridge.toml",
        f"""
[http]
listen = "127.0.0.1:{file_port}"
max_body_bytes = 2048

[store]
url = "sqlite:///data/bridge.db"

[auth]
admin_token = "file-admin-token"

[log]
format = "json"
level = "warning"

[[sources.hep]]
name = "pbx-hep"
listen = "127.0.0.1:{hep_port}"
password = "hep-secret"

[[sources.ami]]
host = "127.0.0.1"
port = {ami_port}
username = "bridge"
secret = "ami-secret"
""",
    )
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        env = clean_env(TRANSFER_BRIDGE_HTTP_LISTEN=f"127.0.0.1:{env_port}")
        proc = spawn([*CLI, "--config", str(config)], tmp_path, env, err)
    try:
        base = f"http://127.0.0.1:{env_port}"
        headers = {"Authorization": "Bearer file-admin-token"}
        async with aiohttp.ClientSession() as http:
            health: dict[str, Any] = {}
            for _ in range(300):
                assert proc.poll() is None, stderr.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/healthz") as r:
                        health = await r.json()
                        break
                await asyncio.sleep(0.05)
            assert health["status"] == "ok", health
            assert health["sources"]["pbx-hep"] == {
                "kind": "hep",
                "status": "listening",
                "listen": f"127.0.0.1:{hep_port}",
                # what the HEP pipeline holds and dropped (nothing yet)
                "kernel_drops": 0,
                "dialogs": 0,
                "evicted": 0,
                "oversized": 0,
            }
            ami = health["sources"]["ami-0"]
            for _ in range(100):  # the first attempt fails at once: connection refused
                if ami["status"] == "failing":
                    break
                await asyncio.sleep(0.05)
                async with http.get(base + "/healthz") as r:
                    ami = (await r.json())["sources"]["ami-0"]
            assert ami["status"] == "failing" and ami["reason"] == "unreachable", ami
            assert ami["address"] == f"127.0.0.1:{ami_port}"
            # [auth] admin_token from the file
            body = {"id": "acme", "name": "Acme", "transfer_enabled": True}
            async with http.post(base + "/v1/accounts", json=body, headers=headers) as r:
                assert r.status == 201
            # [http] max_body_bytes from the file
            big = {"id": "big", "name": "x" * 3000, "transfer_enabled": True}
            async with http.post(base + "/v1/accounts", json=big, headers=headers) as r:
                assert r.status == 413
                assert (await r.json())["error"]["code"] == "body_too_large"
            # the file's listen address is not used: the environment won
            with pytest.raises(aiohttp.ClientConnectionError):
                async with http.get(f"http://127.0.0.1:{file_port}/healthz") as r:
                    pass
        # [store] url, relative to the working directory
        assert (tmp_path / "data" / "bridge.db").exists()
        assert not (tmp_path / "var").exists()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stderr.read_text()
    for secret in ("file-admin-token", "hep-secret", "ami-secret"):
        assert secret not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    # [log] format json and level warning: the unreachable AMI's warnings, no info lines
    assert {r["event"] for r in records} == {"ami_connect_failed"}
    assert {r["level"] for r in records} == {"warning"}
    assert all(r["address"] == f"127.0.0.1:{ami_port}" for r in records)


def test_json_logs_stay_json_for_every_logger_at_debug_level(tmp_path: Path) -> None:
    """aiohttp's and asyncio's own log records must be JSON lines too, not text tracebacks."""
    port = free_port()
    env = clean_env(
        TRANSFER_BRIDGE_HTTP_LISTEN=f"127.0.0.1:{port}",
        TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN="t",
        TRANSFER_BRIDGE_LOG_FORMAT="json",
        TRANSFER_BRIDGE_LOG_LEVEL="debug",
    )
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = spawn(CLI, tmp_path, env, err)
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"NOT-HTTP\r\n\r\n")  # a client speaking garbage
                c.recv(1000)
                break
            assert proc.poll() is None, stderr.read_text()
            subprocess.run(["sleep", "0.05"], check=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    assert any('"bridge_started"' in line for line in lines)
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == [], "\n".join(not_json[:5])


# --- refusals -------------------------------------------------------------------------------

BAD_FILES = [
    ("unknown-key", '[http]\nlisen = "127.0.0.1:8080"\n', ["http.lisen"]),
    ("bad-listen", '[http]\nlisten = "nonsense"\n', ["http.listen", "nonsense"]),
    ("listen-no-port", '[http]\nlisten = "127.0.0.1:"\n', ["http.listen"]),
    ("listen-port-range", '[http]\nlisten = "127.0.0.1:70000"\n', ["http.listen"]),
    ("listen-number", "[http]\nlisten = 8080\n", ["http.listen"]),
    ("max-body-text", '[http]\nmax_body_bytes = "big"\n', ["http.max_body_bytes"]),
    ("max-body-small", "[http]\nmax_body_bytes = 10\n", ["http.max_body_bytes"]),
    ("keep-changes-small", "[store]\nkeep_changes = 5\n", ["store.keep_changes"]),
    ("log-format", '[log]\nformat = "xml"\n', ["log.format", "xml"]),
    ("log-level", '[log]\nlevel = "loud"\n', ["log.level"]),
    ("store-url", '[store]\nurl = "mysql://db/bridge"\n', ["store.url"]),
    ("auth-key", '[auth]\ntoken = "x"\n', ["auth.token"]),
    ("unknown-section", '[server]\nlisten = "127.0.0.1:8080"\n', ["[server]"]),
    ("section-not-table", 'http = "127.0.0.1:8080"\n', ["[http]"]),
    ("source-kind", '[[sources.sip]]\nlisten = "127.0.0.1:5060"\n', ["sources.sip"]),
    ("source-key", '[[sources.hep]]\nlisen = "127.0.0.1:9060"\n', ["sources.hep[0].lisen"]),
    ("source-type", '[[sources.ami]]\nhost = "pbx"\nport = "5038"\n', ["sources.ami[0].port"]),
    ("source-not-array", '[sources.hep]\nlisten = "127.0.0.1:9060"\n', ["sources.hep"]),
    ("malformed-toml", '[http\nlisten = "127.0.0.1:8080"\n', ["not valid TOML", "line 1"]),
    ("malformed-value", "[http]\nlisten = 127.0.0.1:8080\n", ["not valid TOML", "line 2"]),
]


def assert_refused(result: subprocess.CompletedProcess[str], cwd: Path, names: list[str]) -> None:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for name in names:
        assert name in result.stderr, (name, result.stderr)
    assert result.stdout == ""
    assert not (cwd / "var").exists(), "nothing is created when the configuration is refused"


@pytest.mark.parametrize(("name", "toml", "names"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_stops_start_up_naming_the_key(
    tmp_path: Path, name: str, toml: str, names: list[str]
) -> None:
    config = write(tmp_path / "bridge.toml", toml)
    result = run_cli(tmp_path, "--config", str(config), TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN="t")
    assert_refused(result, tmp_path, names)
    assert result.stderr.startswith("transfer-bridge: configuration error:")


def test_a_missing_file_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "bridge.toml"
    result = run_cli(tmp_path, "--config", str(missing))
    assert_refused(result, tmp_path, [str(missing)])
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"TRANSFER_BRIDGE_LOG_FORMAT": "xml"}, ["log.format"]),
        ({"TRANSFER_BRIDGE_HTTP_LISTEN": "nonsense"}, ["http.listen"]),
        ({"TRANSFER_BRIDGE_HTTP_LISEN": "127.0.0.1:1"}, ["TRANSFER_BRIDGE_HTTP_LISEN"]),
        ({"TRANSFER_BRIDGE_HTTP_MAX_BODY_BYTES": "lots"}, ["TRANSFER_BRIDGE_HTTP_MAX_BODY_BYTES"]),
        ({"TRANSFER_BRIDGE_STORE_URL": "mysql://u:pw@x/db"}, ["store.url"]),
        ({"TRANSFER_BRIDGE_SERVER_PORT": "1"}, ["TRANSFER_BRIDGE_SERVER_PORT"]),
    ],
    ids=["log-format", "listen", "unknown-key", "max-body", "store-url", "unknown-section"],
)
def test_a_bad_environment_variable_stops_start_up_naming_it(
    tmp_path: Path, env: dict[str, str], names: list[str]
) -> None:
    assert_refused(run_cli(tmp_path, **env), tmp_path, names)


def test_an_unreachable_postgresql_store_stops_start_up_without_its_password(
    tmp_path: Path,
) -> None:
    url = "postgresql://bridge:s3cret-pw@127.0.0.1:1/transfer_bridge"
    result = run_cli(tmp_path, TRANSFER_BRIDGE_STORE_URL=url, TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN="t")
    assert_refused(result, tmp_path, ["store.url", "postgresql://bridge@127.0.0.1:1/"])
    assert result.returncode == 3
    assert "s3cret-pw" not in result.stderr


def test_a_config_file_that_is_not_utf8_is_refused_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_bytes(b'[http]\nlisten = "127.0.0.1:8080" # caf\xe9\n')
    result = run_cli(tmp_path, "--config", str(config))
    assert_refused(result, tmp_path, [str(config)])
    assert result.stderr.startswith("transfer-bridge: configuration error:")


def test_a_config_path_that_is_a_directory_is_refused_with_a_message(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    result = run_cli(tmp_path, "--config", str(folder))
    assert_refused(result, tmp_path, [str(folder)])
    assert result.stderr.startswith("transfer-bridge: configuration error:")


def test_a_listen_address_in_use_stops_start_up_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_cli(
            tmp_path, TRANSFER_BRIDGE_HTTP_LISTEN=address, TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN="t"
        )
    assert result.returncode != 0
    assert address in result.stderr or "http.listen" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_no_admin_token_warns_but_serves(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        CLI,
        cwd=tmp_path,
        env=clean_env(TRANSFER_BRIDGE_HTTP_LISTEN=f"127.0.0.1:{port}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            assert proc.poll() is None
            subprocess.run(["sleep", "0.05"], check=True)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "no_admin_token" in err.decode()
    assert (tmp_path / "var" / "transfer-bridge.db").exists()  # the default store


# --- load_settings on its own ------------------------------------------------------------------


def test_defaults_without_file_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFER_BRIDGE_HTTP_LISTEN", "0.0.0.0:1")  # not read: env is given
    s = load_settings(None, {})
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.store_url == "sqlite:///var/transfer-bridge.db"
    assert (s.log_format, s.log_level) == ("json", "info")
    assert s.admin_token == "" and s.max_body_bytes == 65536 and s.sources == {}


def test_environment_overrides_the_file_key_by_key(tmp_path: Path) -> None:
    config = write(
        tmp_path / "bridge.toml",
        '[http]\nlisten = "127.0.0.1:7000"\nmax_body_bytes = 4096\n'
        '[log]\nformat = "console"\nlevel = "debug"\n[auth]\nadmin_token = "from-file"\n',
    )
    s = load_settings(config, {})
    assert (s.host, s.port, s.max_body_bytes) == ("127.0.0.1", 7000, 4096)
    assert (s.log_format, s.log_level, s.admin_token) == ("console", "debug", "from-file")
    s = load_settings(
        config,
        {
            "TRANSFER_BRIDGE_HTTP_LISTEN": "[::1]:9001",
            "TRANSFER_BRIDGE_HTTP_MAX_BODY_BYTES": "131072",
            "TRANSFER_BRIDGE_LOG_FORMAT": "json",
            "TRANSFER_BRIDGE_STORE_URL": "sqlite:////srv/bridge.db",
            "UNRELATED": "ignored",
        },
    )
    assert (s.host, s.port, s.max_body_bytes) == ("::1", 9001, 131072)
    assert s.log_format == "json" and s.log_level == "debug"  # untouched keys keep the file's
    assert s.store_url == "sqlite:////srv/bridge.db"
    assert s.admin_token == "from-file"


def test_admin_token_from_either_environment_variable(tmp_path: Path) -> None:
    config = write(tmp_path / "bridge.toml", '[auth]\nadmin_token = "from-file"\n')
    assert load_settings(config, {"TRANSFER_BRIDGE_ADMIN_TOKEN": "short"}).admin_token == "short"
    both = {"TRANSFER_BRIDGE_ADMIN_TOKEN": "short", "TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN": "long"}
    assert load_settings(config, both).admin_token == "long"
    assert load_settings(None, {"TRANSFER_BRIDGE_ADMIN_TOKEN": "x"}).admin_token == "x"


def test_settings_never_show_the_admin_token() -> None:
    s = load_settings(None, {"TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN": "very-secret-admin"})
    assert "very-secret-admin" not in repr(s) and "very-secret-admin" not in str(s)


def test_sources_are_kept_as_given(tmp_path: Path) -> None:
    config = write(
        tmp_path / "bridge.toml",
        '[[sources.hep]]\nlisten = "127.0.0.1:9060"\npassword = "p"\n'
        '[[sources.hep]]\nname = "second"\nlisten = "127.0.0.1:9061"\n'
        '[[sources.ami]]\nhost = "pbx"\nport = 5038\nusername = "u"\nsecret = "s"\n',
    )
    s = load_settings(config, {})
    assert s.sources == {
        "hep": [
            {"listen": "127.0.0.1:9060", "password": "p"},
            {"name": "second", "listen": "127.0.0.1:9061"},
        ],
        "ami": [{"host": "pbx", "port": 5038, "username": "u", "secret": "s"}],
    }


@pytest.mark.parametrize(
    ("toml", "env", "names"),
    [
        ('[log]\nformat = "json"\n', {"TRANSFER_BRIDGE_LOG_FORMAT": "xml"}, ["log.format"]),
        ("", {"TRANSFER_BRIDGE_HTTP_LISTEN": "localhost"}, ["http.listen"]),
        (
            "",
            {"TRANSFER_BRIDGE_HTTP_MAX_BODY_BYTES": "1k"},
            ["TRANSFER_BRIDGE_HTTP_MAX_BODY_BYTES"],
        ),
        ("", {"TRANSFER_BRIDGE_LOG_COLOUR": "yes"}, ["TRANSFER_BRIDGE_LOG_COLOUR"]),
        ("[http]\nmax_body_bytes = true\n", {}, ["http.max_body_bytes"]),
        # A fraction is not a whole number of bytes; it must not be cut silently.
        ("[http]\nmax_body_bytes = 65536.5\n", {}, ["http.max_body_bytes"]),
        # `[[sources.hep]]` entries must be tables, not numbers or strings.
        ("[sources]\nhep = [1]\n", {}, ["sources.hep"]),
        ('[sources]\nami = ["pbx"]\n', {}, ["sources.ami"]),
        ('sources = "hep"\n', {}, ["sources"]),
        # [cluster]: a name PostgreSQL would cut in application_name, or not ASCII; intervals
        ('[cluster]\ninstance = "%s"\n' % ("x" * 41), {}, ["cluster.instance"]),
        ('[cluster]\ninstance = "brücke"\n', {}, ["cluster.instance"]),
        (
            "",
            {"TRANSFER_BRIDGE_CLUSTER_POLL_INTERVAL": "soon"},
            ["TRANSFER_BRIDGE_CLUSTER_POLL_INTERVAL"],
        ),
        ("[cluster]\nlease_retry = 0\n", {}, ["cluster.lease_retry"]),
        ("[cluster]\npoll_interval = true\n", {}, ["cluster.poll_interval"]),
    ],
    ids=[
        "env-log-format",
        "env-listen",
        "env-int",
        "env-unknown",
        "bool-for-int",
        "float-for-int",
        "source-entry-number",
        "source-entry-string",
        "sources-string",
        "cluster-instance-long",
        "cluster-instance-non-ascii",
        "env-cluster-poll",
        "cluster-lease-retry-zero",
        "cluster-bool-for-seconds",
    ],
)
def test_load_settings_refusals_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], names: list[str]
) -> None:
    config = write(tmp_path / "bridge.toml", toml)
    with pytest.raises(ConfigError) as raised:
        load_settings(config, env)
    for name in names:
        assert name in str(raised.value)


def test_settings_type_is_frozen() -> None:
    s = load_settings(None, {})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]
