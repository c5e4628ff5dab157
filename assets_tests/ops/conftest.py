"""A throw-away PostgreSQL server, for loading docker/dagster.yaml against real
Postgres instance storage."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    db: str
    pid: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


@pytest.fixture
def postgres_server() -> Iterator[Postgres]:
    """A real PostgreSQL on a free loopback port, trust auth, stopped by PID at the end.

    Postgres refuses to run as root, so as root the server runs as the `postgres`
    system user. Skips when the server binaries are not installed.
    """
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and postgres):
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed")
    demote = None
    base = Path(tempfile.mkdtemp(prefix="school_equity_pg_"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)

        def demote() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    data = base / "data"
    user, port = "dagster", _free_port()
    subprocess.run(
        [initdb, "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        preexec_fn=demote,
        timeout=120,
    )
    log = open(base / "postgres.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            postgres,
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(base),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=demote,
        start_new_session=True,
    )
    try:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user=user, dbname="postgres").close()
                break
            except psycopg2.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((base / "postgres.log").read_text()) from None
                time.sleep(0.1)
        yield Postgres(host="127.0.0.1", port=port, user=user, db="postgres", pid=proc.pid)
    finally:
        # SIGINT is Postgres' "fast shutdown": disconnect clients, checkpoint, exit.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
