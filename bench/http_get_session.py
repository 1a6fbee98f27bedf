"""GET-session requests per second on one process: the bridge next to a bare aiohttp handler.

    python bench/http_get_session.py [--duration 3] [--rounds 3] [--connections 64]

Starts, on 127.0.0.1 only and pinned to one core, the real bridge (`transfer-bridge serve`,
SQLite in a temp dir) and a bare aiohttp app serving the same session JSON (bench/baseline_app.py);
fills the bridge over HTTP with 1,000 open sessions (50 agents x 20, call connected, some moved
through transfer steps); then loads `GET /v1/sessions/{random id}` with wrk (64 connections, on
the other cores) and prints a table. See bench/README.md for what each row means.

Runs: A bridge with 1,000 open sessions; B the same while 1,000 long-polls wait (held by
bench/longpoll_holder.py); C the bare baseline (fixed bytes); C2 the baseline encoding the JSON
per request (informative). Best of `--rounds` per row; goal A/C and B/C >= 0.7.
The whole run bounds itself (< 2 minutes) and removes its processes and temp files.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from desktop_api.testing import ApiClient

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
AGENTS = 50
SESSIONS_PER_AGENT = 20
DEADLINE_S = 115
GOAL = 0.7
# Every 25th session is moved through some of the seed's transfer steps.
STEP_PLANS = (
    ["open"],
    ["open", "internal"],
    ["open", "internal", "next"],
    ["open", "internal", "next", "confirm"],
)

WRK_LUA = r"""
local ids = {%(ids)s}
local token = "%(token)s"
local reqs = {}
local n = #ids

function init(args)
  math.randomseed(os.time() * 1000 + (tonumber(args[1]) or 0) + math.floor(os.clock() * 1e6))
  local headers = {["Authorization"] = "Bearer " .. token}
  for i = 1, n do
    reqs[i] = wrk.format("GET", "/v1/sessions/" .. ids[i], headers)
  end
end

function request()
  return reqs[math.random(n)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"us":%%d,"bytes":%%d,"p50":%%d,"p99":%%d,'
    .. '"non2xx":%%d,"sockerr":%%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


class BenchTimeout(Exception):
    """The whole run went past its time bound."""


@dataclass
class Result:
    """One load run."""

    rps: float
    p50_ms: float
    p99_ms: float
    resp_bytes: float
    errors: int
    requests: int = 0
    seconds: float = 0.0
    cpu_us: float = 0.0  # server CPU time (user + system, all threads) per request
    busy: float = 0.0  # server CPU time / wall time: < ~0.95 means it was not saturated


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (closed again before the server binds it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def preexec(cores: set[int] | None) -> Callable[[], None]:
    """Pin the child to `cores` and give it room for a few thousand sockets."""

    def run() -> None:
        if cores:
            os.sched_setaffinity(0, cores)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    return run


class Processes:
    """Children started here, each in its own process group; all stopped on exit."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, cmd: list[str], *, cores: set[int] | None, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        out = (self.tmp / f"{name}.out").open("wb")
        err = (self.tmp / f"{name}.err").open("wb")
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=preexec(cores),
        )
        out.close()
        err.close()
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> str:
        """SIGTERM, then SIGKILL after 10 s; returns what the child printed on stdout."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return ""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        return (self.tmp / f"{name}.out").read_text(errors="replace")

    def check(self, name: str) -> None:
        """Fail loudly, with its stderr, if a child died."""
        proc = self.procs[name]
        if proc.poll() is not None:
            err = (self.tmp / f"{name}.err").read_text(errors="replace")
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{err[-3000:]}")

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """A plain GET to 127.0.0.1 (status, body)."""
    assert url.startswith(f"http://{HOST}:")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(procs: Processes, name: str, url: str, timeout: float = 20.0) -> None:
    """Poll `url` until it answers."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        procs.check(name)
        try:
            http_get(url, 0.5)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def long_polls_waiting(base: str) -> int:
    """The bridge's own count of waiting long-polls (from /metrics)."""
    _, body = http_get(f"{base}/metrics", 5.0)
    m = re.search(rb"^transfer_bridge_long_polls (\S+)$", body, re.MULTILINE)
    return int(float(m.group(1))) if m else -1


def bridge_cmd(uvloop: bool) -> list[str]:
    """`transfer-bridge serve`, optionally with uvloop's policy installed first."""
    if uvloop:
        code = (
            "import asyncio, sys, uvloop\n"
            "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
            "from desktop_api.cli import main\n"
            "sys.exit(main(['serve']))\n"
        )
        return [sys.executable, "-c", code]
    script = Path(sys.executable).parent / "transfer-bridge"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "desktop_api.cli", "serve"]


def bridge_env(port: int, db: Path, admin: str) -> dict[str, str]:
    """The process environment with only our TRANSFER_BRIDGE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFER_BRIDGE_")}
    env.update(
        TRANSFER_BRIDGE_HTTP_LISTEN=f"{HOST}:{port}",
        TRANSFER_BRIDGE_STORE_URL=f"sqlite:///{db}",
        TRANSFER_BRIDGE_AUTH_ADMIN_TOKEN=admin,
        TRANSFER_BRIDGE_LOG_LEVEL="warning",
    )
    return env


# --- setup over HTTP ---------------------------------------------------------------------------


@dataclass
class Population:
    """What the bridge was filled with, and one session's answer as the baseline will serve."""

    token: str
    ids: list[str]
    body: bytes
    content_type: str
    etag: str


async def populate(base: str, admin_token: str) -> Population:
    """Account, token, 50 agents x 20 connected sessions, some transfer steps; one sample."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        admin = ApiClient(http, base, admin_token)
        account = {"id": "bench", "name": "Bench", "transfer_enabled": True}
        r = await admin.post("/v1/accounts", account)
        assert r.status == 201, r.body
        r = await admin.post("/v1/accounts/bench/tokens")
        assert r.status == 201, r.body
        api = admin.with_token(r.body["token"])

        async def agent(a: int) -> list[str]:
            agent_id = f"a-{a:02d}"
            phone = {"sip_uri": f"sip:{1000 + a}@pbx.example"}
            r = await api.put(f"/v1/agents/{agent_id}", {"name": f"Agent {a}", "phone": phone})
            assert r.status == 201, r.body
            ids = []
            for s in range(SESSIONS_PER_AGENT):
                session_id = f"s-{a:02d}-{s:02d}"
                body = {
                    "id": session_id,
                    "agent_id": agent_id,
                    "customer": {"number": f"+3490{a:03d}{s:04d}", "name": f"Customer {s}"},
                    "call": {"state": "connected", "sip_call_id": f"{secrets.token_hex(8)}@pbx"},
                }
                r = await api.post("/v1/sessions", body)
                assert r.status == 201, r.body
                ids.append(session_id)
            return ids

        ids = [i for group in await asyncio.gather(*map(agent, range(AGENTS))) for i in group]

        async def steps(n: int, session_id: str) -> None:
            for action in STEP_PLANS[n % len(STEP_PLANS)]:
                r = await api.step(session_id, action)
                assert r.status == 200, (session_id, action, r.body)

        await asyncio.gather(*(steps(n, i) for n, i in enumerate(ids[::25])))
        # A typical session (untouched by transfer steps) is what the baseline serves.
        sample = await api.get(f"/v1/sessions/{ids[1]}")
        assert sample.status == 200, sample.body
        return Population(
            api.token or "",
            ids,
            sample.raw,
            sample.headers["Content-Type"],
            sample.headers["ETag"],
        )


# --- load ------------------------------------------------------------------------------------


def run_wrk(
    port: int, lua: Path, duration: float, connections: int, cores: set[int] | None
) -> Result:
    """One wrk run against 127.0.0.1:port."""
    threads = max(1, min(len(cores) if cores else 1, 4))
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s"]
    cmd += ["--timeout", "5s", "-s", str(lua), f"http://{HOST}:{port}/"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 15, preexec_fn=preexec(cores)
    )
    m = re.search(r"^BENCH (\{.*\})$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    d = json.loads(m.group(1))
    n = max(1, d["requests"])
    return Result(
        d["requests"] / (d["us"] / 1e6),
        d["p50"] / 1e3,
        d["p99"] / 1e3,
        d["bytes"] / n,
        d["non2xx"] + d["sockerr"],
        d["requests"],
        d["us"] / 1e6,
    )


def run_pyload(
    port: int,
    ids_file: Path,
    token: str,
    duration: float,
    connections: int,
    cores: set[int] | None,
) -> Result:
    """The fallback: several bench/py_loadgen.py processes started at one instant, merged."""
    nproc = max(1, len(cores) if cores else 1)
    start_at = time.time() + 0.5
    env = dict(os.environ, BENCH_TOKEN=token)
    children = []
    for k in range(nproc):
        share = connections // nproc + (1 if k < connections % nproc else 0)
        cmd = [sys.executable, str(HERE / "py_loadgen.py"), "--port", str(port)]
        cmd += ["--ids", str(ids_file), "--connections", str(share)]
        cmd += ["--duration", f"{duration:g}", "--start-at", f"{start_at:.3f}"]
        children.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, env=env, text=True, preexec_fn=preexec(cores)
            )
        )
    parts = []
    for child in children:
        out, _ = child.communicate(timeout=duration + 20)
        parts.append(json.loads(out))
    lat = sorted(x for p in parts for x in p["lat_us"])
    requests = sum(p["requests"] for p in parts)
    seconds = max(p["seconds"] for p in parts)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e3 if lat else 0.0

    return Result(
        requests / seconds,
        pct(0.50),
        pct(0.99),
        sum(p["bytes"] for p in parts) / max(1, requests),
        sum(p["non2xx"] for p in parts),
        requests,
        seconds,
    )


# --- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per row; best is kept")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--uvloop",
        choices=["auto", "no"],
        default="auto",
        help="auto: add uvloop rows when uvloop is importable",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (for debugging)")
    args = parser.parse_args()

    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    if args.loadgen == "wrk" and not shutil.which("wrk"):
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    with_uvloop = args.uvloop == "auto" and importlib.util.find_spec("uvloop") is not None
    cpus = sorted(os.sched_getaffinity(0))
    server_cores = {cpus[0]} if len(cpus) > 1 else None
    client_cores = set(cpus[1:]) if len(cpus) > 1 else None

    def on_alarm(signum: int, frame: Any) -> None:
        raise BenchTimeout(f"stopped after {DEADLINE_S} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE_S)
    started = time.monotonic()
    load_avg = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    procs = Processes(tmp)
    results: dict[str, Result] = {}  # the best run (highest req/s) of each row
    errors: dict[str, int] = {}  # non-2xx and socket errors, all runs of a row
    cpu: dict[str, float] = {}  # lowest server CPU per request, all runs of a row
    notes: list[str] = []
    try:
        admin = "bench-" + secrets.token_hex(16)
        bridge_port = free_port()
        base = f"http://{HOST}:{bridge_port}"
        db = tmp / "b.db"

        def start_bridge(uv: bool) -> None:
            procs.start(
                "bridge",
                bridge_cmd(uv),
                cores=server_cores,
                env=bridge_env(bridge_port, db, admin),
            )
            wait_ready(procs, "bridge", f"{base}/healthz")

        start_bridge(False)
        t0 = time.monotonic()
        pop = asyncio.run(populate(base, admin))
        setup_s = time.monotonic() - t0
        ids_file = tmp / "ids.txt"
        ids_file.write_text("\n".join(pop.ids) + "\n")
        body_file = tmp / "session.json"
        body_file.write_bytes(pop.body)
        lua = tmp / "get_session.lua"
        lua.write_text(WRK_LUA % {"ids": ",".join(f'"{i}"' for i in pop.ids), "token": pop.token})

        base_ports = {"C": free_port(), "C2": free_port()}

        def start_baselines(uv: bool) -> None:
            for name, port in base_ports.items():
                cmd = [sys.executable, str(HERE / "baseline_app.py"), "--port", str(port)]
                cmd += ["--body", str(body_file), "--content-type", pop.content_type]
                cmd += ["--etag", pop.etag]
                cmd += ["--serialize"] if name == "C2" else []
                cmd += ["--uvloop"] if uv else []
                procs.start(name, cmd, cores=server_cores, env=dict(os.environ))
            for name, port in base_ports.items():
                wait_ready(procs, name, f"http://{HOST}:{port}/v1/sessions/x")

        start_baselines(False)
        ports = {"A": bridge_port, "B": bridge_port, **base_ports}

        def load(row: str, duration: float) -> Result:
            key = row.split("-")[0]
            port = ports[key]
            pid = procs.procs["bridge" if key in ("A", "B") else key].pid
            cpu0 = cpu_seconds(pid)
            if use_wrk:
                r = run_wrk(port, lua, duration, args.connections, client_cores)
            else:
                r = run_pyload(port, ids_file, pop.token, duration, args.connections, client_cores)
            cpu = cpu_seconds(pid) - cpu0
            r.cpu_us = cpu / max(1, r.requests) * 1e6
            r.busy = cpu / max(1e-9, r.seconds)
            return r

        def measure(rows: list[str], suffix: str = "") -> None:
            for row in rows:  # warm-up
                load(row, 1.0)
            for _ in range(args.rounds):
                for row in rows:
                    for name in ("bridge", *base_ports):
                        procs.check(name)
                    r = load(row, args.duration)
                    best = results.get(row + suffix)
                    if best is None or r.rps > best.rps:
                        results[row + suffix] = r
                    errors[row + suffix] = errors.get(row + suffix, 0) + r.errors
                    cpu[row + suffix] = min(cpu.get(row + suffix, r.cpu_us), r.cpu_us)

        measure(["A", "C", "C2"])

        env = dict(os.environ, BENCH_TOKEN=pop.token)
        holder = [sys.executable, str(HERE / "longpoll_holder.py"), "--base", base]
        holder += ["--ids", str(ids_file), "--wait", "60"]
        procs.start("holder", holder, cores=client_cores, env=env)
        end = time.monotonic() + 20
        waiting = 0
        while time.monotonic() < end:
            procs.check("holder")
            waiting = long_polls_waiting(base)
            if waiting >= len(pop.ids):
                break
            time.sleep(0.2)
        if waiting < len(pop.ids):
            raise RuntimeError(f"only {waiting} long-polls waiting after 20 s")
        measure(["B", "C"])  # C again, in the same conditions
        after = long_polls_waiting(base)
        held = json.loads(procs.stop("holder").strip().splitlines()[-1])
        notes.append(
            f"B: long-polls waiting before/after: {waiting}/{after}; "
            f"returned early {held['reissued']}, holder errors {held['errors']}"
        )

        if with_uvloop:
            left = DEADLINE_S - (time.monotonic() - started)
            need = 2 * (1 + args.rounds * (args.duration + 0.5)) + 10
            if left < need:
                notes.append(f"uvloop rows skipped: {left:.0f} s left, {need:.0f} s needed")
            else:
                procs.stop_all()
                start_bridge(True)
                start_baselines(True)
                measure(["A", "C"], suffix="-uvloop")

        header = [
            f"GET /v1/sessions/{{random of {len(pop.ids)}}}: {args.connections} connections, "
            f"{args.duration:g} s x {args.rounds} runs per row (best req/s kept), load by "
            + ("wrk" if use_wrk else "bench/py_loadgen.py"),
            f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, server on cpu "
            f"{sorted(server_cores or [])}, load on cpu {sorted(client_cores or [])}, "
            f"load average at start {load_avg:.2f}; 1,000 sessions set up over HTTP in "
            f"{setup_s:.1f} s; session body {len(pop.body)} B",
        ]
        print_report(results, errors, cpu, header, notes)
        return 1 if sum(errors.values()) else 0
    except BenchTimeout as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 3
    finally:
        signal.alarm(0)
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


LABELS = {
    "A": "A  bridge, 1,000 open sessions",
    "B": "B  bridge, + 1,000 long-polls waiting",
    "C": "C  bare aiohttp, same bytes + headers",
    "C2": "C2 bare aiohttp, json_response per req",
}


def print_report(
    results: dict[str, Result],
    errors: dict[str, int],
    cpu: dict[str, float],
    header: list[str],
    notes: list[str],
) -> None:
    """The table, the ratios, the conditions."""
    for line in header:
        print(line)
    print()
    print(
        f"{'run':<50}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'busy':>6}{'cpu us/req':>11}"
        f"{'B/resp':>8}{'errors':>7}"
    )
    for key, r in results.items():
        base, _, loop = key.partition("-")
        label = LABELS[base] + (f" ({loop})" if loop else "")
        print(
            f"{label:<50}{r.rps:>8.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}{r.busy:>6.0%}"
            f"{cpu[key]:>11.1f}{r.resp_bytes:>8.0f}{errors[key]:>7}"
        )
    print()
    floors = [key for key, r in results.items() if r.busy < 0.9]
    if floors:
        print(
            f"note: server under 90% busy in {', '.join(floors)}: that req/s is a floor (the load "
            "generator or another process on the server's core held it back)"
        )
    for loop in ("", "-uvloop"):
        c = results.get("C" + loop)
        if c is None:
            continue
        parts = []
        for row in ("A", "B"):
            r = results.get(row + loop)
            if r is not None:
                ratio = r.rps / c.rps
                by_cpu = cpu["C" + loop] / cpu[row + loop]
                verdict = "ok" if ratio >= GOAL else "BELOW GOAL"
                parts.append(f"{row}/C = {ratio:.2f} {verdict} (by CPU per request {by_cpu:.2f})")
        c2 = results.get("C2" + loop)
        a = results.get("A" + loop)
        if c2 is not None and a is not None:
            verdict = "ok" if a.rps / c2.rps >= GOAL else "BELOW GOAL"
            parts.append(f"A/C2 = {a.rps / c2.rps:.2f} {verdict}")
        name = f" ({loop[1:]})" if loop else ""
        print(f"ratios{name}, goal >= {GOAL}: " + "; ".join(parts))
    for note in notes:
        print(note)


if __name__ == "__main__":
    sys.exit(main())
