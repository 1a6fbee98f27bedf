"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, run as the `postgres`
user (the server refuses root) in a temporary folder, on a free TCP port, with a password.

`scripts/rig/install.sh` installs the `postgresql` package; its packaged service is never used.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

USER = "bridge"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*argv: str | Path, timeout: float = 60) -> None:
    cmd = [str(a) for a in argv]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)


@dataclass
class Cluster:
    """A running server; `url(db)` names a database on it (with the password)."""

    bin_dir: Path
    data: Path
    port: int
    password: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')  # test-made names only
        return self.url(name)

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(self.bin_dir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def start(self) -> None:
        _as_postgres(
            self.bin_dir / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.data / "server.log",
            "-o",
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=on",
            "-w",
            "-t",
            "30",
            "start",
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """initdb + start on a free port; stopped and removed afterwards."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL server binaries: run scripts/rig/install.sh")
    root = Path(tempfile.mkdtemp(prefix="tb-pg-"))
    data = root / "data"
    password = secrets.token_hex(12)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    root.chmod(0o700)
    cluster = Cluster(bin_dir, data, _free_tcp_port(), password)
    try:
        _as_postgres(
            bin_dir / "initdb",
            "-D",
            data,
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
            timeout=120,
        )
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        with contextlib.suppress(Exception):
            _as_postgres("rm", "-rf", data)  # the server's files are its user's own
        shutil.rmtree(root, ignore_errors=True)


def have_postgres() -> bool:
    return _bin_dir() is not None
