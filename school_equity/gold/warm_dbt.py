"""A dbt process started before the Gold step needs it.

Every Gold build is a new dbt process, and dbt's import alone (dbt-core, its adapter,
mashumaro's schemas) is about 2.5 s of one core before it reads its arguments; on a
stream batch that was a fifth of the dbt step, paid after the Silver step and the wait
for the warehouse pool. ``GoldDbtResource`` starts a *warm* process when a run sets up
its resources: it imports dbt and waits on a Unix socket in a private folder. The dbt
executable dagster-dbt runs is then ``school-equity-dbt`` (``client_main``), which

- connects to the warm process named by ``SCHOOL_EQUITY_DBT_WARM_SOCKET`` and hands it
  its own stdin, stdout and stderr (file descriptors over the socket), its arguments,
  working folder and environment: the warm process runs ``dbt <args>`` exactly as the
  ``dbt`` script would, writing to dagster-dbt's pipe (a client that comes while the
  process is still importing dbt waits for it: still sooner than a new dbt);
- forwards SIGINT and SIGTERM to it (dagster-dbt interrupts dbt with SIGINT) and exits
  with dbt's exit code;
- runs the installed ``dbt`` itself (exec, same arguments) whenever there is no warm
  process to hand over to: none configured, already used (each serves one build), gone,
  or failed before it took the descriptors. A warm process only ever saves time.

The warm process leaves when its parent does, or after ``SCHOOL_EQUITY_DBT_WARM_IDLE_S``
(900 s) unused; the resource stops it when the run's resources are torn down. Standard
library only: the client must start in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SOCKET_ENV = "SCHOOL_EQUITY_DBT_WARM_SOCKET"
IDLE_ENV = "SCHOOL_EQUITY_DBT_WARM_IDLE_S"
LAUNCHER = "school-equity-dbt"
SOCKET_NAME = "dbt.sock"  # in the warm process's private folder
DEFAULT_IDLE_S = 900.0
BIND_WAIT_S = 10.0
ACK_TIMEOUT_S = 120.0  # the warm process still importing dbt is the normal wait here

_HEADER = struct.Struct("!Q")  # length of the JSON request that follows
_CODE = struct.Struct("!i")  # dbt's exit code
_ACK = b"A"  # the warm process holds the descriptors: from here dbt is running


def real_dbt() -> str:
    """The ``dbt`` script beside this interpreter (as ``school_equity.gold.assets`` picks it)."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def launcher() -> str | None:
    """``school-equity-dbt`` beside this interpreter, when the package is installed."""
    beside = Path(sys.executable).parent / LAUNCHER
    return str(beside) if beside.exists() else None


# -- the warm process ----------------------------------------------------------------
def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("client closed the connection before its request was complete")
        buf += chunk
    return bytes(buf)


def _run_dbt(argv: list[str]) -> int:
    from dbt.cli.main import cli

    sys.argv = ["dbt", *argv]  # dbt names its invocation after sys.argv
    try:
        # click's standalone mode, always ending in SystemExit; prog_name, or click would
        # name this module in its usage messages (it was started with -m)
        cli.main(args=argv, prog_name="dbt")
    except SystemExit as e:
        code = e.code
        return 0 if code is None else code if isinstance(code, int) else 1
    except BaseException:  # noqa: BLE001 - reported as dbt would, on its stderr
        import traceback

        traceback.print_exc()
        return 2
    return 0


def serve(socket_path: str, idle_s: float = DEFAULT_IDLE_S) -> int:
    """Bind, import dbt, serve one client, leave. Binding first lets a client queue up
    while dbt is still being imported."""
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1)
    import dbt.cli.main  # noqa: F401 - the point of this process

    with contextlib.suppress(ImportError):
        import dbt.adapters.duckdb  # noqa: F401 - the local target's adapter
    listener.settimeout(1.0)
    deadline = time.monotonic() + idle_s
    while True:
        try:
            conn, _ = listener.accept()
            break
        except TimeoutError:
            if os.getppid() != parent or time.monotonic() > deadline:
                listener.close()
                with contextlib.suppress(OSError):
                    os.unlink(socket_path)
                return 0
    # one build per process: a client queued behind this one, or any later one, is
    # refused from now on (the socket stays, unbound) and runs dbt itself
    listener.close()
    conn.settimeout(30.0)
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(head) < _HEADER.size:
        head += _recv_exact(conn, _HEADER.size - len(head))
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return 1
    request = json.loads(_recv_exact(conn, _HEADER.unpack(head)[0]))
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    conn.settimeout(None)
    try:
        conn.sendall(_ACK)
    except OSError:
        return 0  # the client left before dbt started: nothing to run for
    code = _run_dbt(request["argv"])
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    with contextlib.suppress(OSError):
        conn.sendall(_CODE.pack(code))
    conn.close()
    return 0


# -- the client: what dagster-dbt runs as its dbt executable --------------------------
def _exec_dbt(argv: list[str]) -> None:
    dbt = real_dbt()
    os.execv(dbt, [dbt, *argv])


def _peer_pid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


def _bound(path: str) -> bool:
    """Whether the socket exists, waiting while the warm process may still be binding it
    (it binds first thing, ~0.1 s after it starts; its folder exists from the start)."""
    deadline = time.monotonic() + BIND_WAIT_S
    while not os.path.exists(path):
        if not os.path.isdir(os.path.dirname(path)) or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _hand_over(path: str, argv: list[str]) -> int | None:
    """dbt's exit code from the warm process at ``path``; None when it never took over.

    SIGINT and SIGTERM are forwarded from the moment the warm process is known: one that
    comes before it took over ends this launcher too (no dbt is started after all)."""
    if not _bound(path):
        return None
    pid: int | None = None
    signals: list[int] = []

    def forward(signum, _frame) -> None:
        signals.append(signum)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        pid = _peer_pid(sock)
        body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(sock, [_HEADER.pack(len(body))], [0, 1, 2])
        sock.sendall(body)
        sock.settimeout(ACK_TIMEOUT_S)
        ack = sock.recv(1)
    except OSError:
        ack = b""
    if ack != _ACK:  # refused (another client got it), or gone before taking over
        sock.close()
        if signals:
            return 128 + signals[-1]
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        return None
    sock.settimeout(None)
    data = b""
    with contextlib.suppress(OSError):
        while len(data) < _CODE.size:
            chunk = sock.recv(_CODE.size - len(data))
            if not chunk:
                break
            data += chunk
    sock.close()
    if len(data) == _CODE.size:
        return _CODE.unpack(data)[0]
    if signals:
        return 128 + signals[-1]
    print(f"{LAUNCHER}: the dbt process {pid} ended without an exit code", file=sys.stderr)
    return 2


def client_main() -> None:
    argv = sys.argv[1:]
    path = os.environ.get(SOCKET_ENV)
    if path:
        code = _hand_over(path, argv)
        if code is not None:
            sys.exit(code)
    _exec_dbt(argv)


# -- the run's side: start and stop ---------------------------------------------------
def idle_from_env() -> float:
    raw = os.environ.get(IDLE_ENV, str(DEFAULT_IDLE_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{IDLE_ENV}={raw!r}: expected the seconds a warm dbt process waits unused, above 0")
    return value


@dataclass
class WarmDbt:
    process: subprocess.Popen
    folder: str

    @property
    def socket_path(self) -> str:
        return os.path.join(self.folder, SOCKET_NAME)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start(idle_s: float | None = None) -> WarmDbt:
    """A warm dbt process for this run; its socket path goes in ``SOCKET_ENV``."""
    if idle_s is None:
        idle_s = idle_from_env()
    folder = tempfile.mkdtemp(prefix="se-dbt-")  # private (0700), short enough for AF_UNIX
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    env["PYTHONUNBUFFERED"] = "1"  # as dagster-dbt runs dbt: its events stream as written
    process = subprocess.Popen(
        [sys.executable, "-m", "school_equity.gold.warm_dbt", os.path.join(folder, SOCKET_NAME), str(idle_s)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    return WarmDbt(process, folder)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_IDLE_S))
