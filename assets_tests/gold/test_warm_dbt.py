"""The warm dbt process (school_equity/gold/warm_dbt.py): a run starts dbt ahead of its
first Gold build, the build runs in it, and the launcher runs dbt itself whenever there
is no warm process to take over. Real dbt, real DuckDB, real processes throughout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets_tests.gold.conftest import query
from assets_tests.gold.silver_builder import Batch, Quarantined, Submission, at, write_batch
from school_equity.gold import warm_dbt
from school_equity.gold.assets import DBT_PREWARM_ENV, gold_stream_models
from school_equity.gold.assets import dbt_resource as make_dbt_resource
from school_equity.kafka.partitions import SURVEY_BATCHES
from school_equity.settings import DBT_PROJECT_DIR

pytestmark = pytest.mark.e2e

S1 = Submission("s1", "01M015", "parent", at(0), {"P01": 3, "P02": 4}, offset=0, batch_seq=1)
S2 = Submission("s2", "02M001", "student", at(30), {"S01": 4, "S02": 3}, offset=1, batch_seq=1)
Q1 = Quarantined(2, "invalid_json", batch_seq=1)
B1 = "b000000001"


def _dbt_pid(result) -> int:
    """The pid dbt itself logged in the run's stream build (first line of its dbt.log)."""
    logs = list((DBT_PROJECT_DIR / "target").glob(f"gold_stream_dbt-{result.run_id[:7]}-*/dbt.log"))
    assert len(logs) == 1, logs
    with logs[0].open() as fh:
        return json.loads(fh.readline())["info"]["pid"]


@pytest.fixture
def started(monkeypatch):
    """Every warm process a run starts, as the resource got it."""
    got: list[warm_dbt.WarmDbt] = []
    real_start = warm_dbt.start

    def start(*args, **kwargs):
        warm = real_start(*args, **kwargs)
        got.append(warm)
        return warm

    monkeypatch.setattr(warm_dbt, "start", start)
    return got


def test_a_run_builds_gold_in_the_warm_dbt_process_it_started(gold_settings, instance, started):
    dbt = make_dbt_resource(gold_settings)
    assert Path(dbt.dbt_executable).name == warm_dbt.LAUNCHER and dbt.prewarm
    instance.add_dynamic_partitions(SURVEY_BATCHES, [B1])
    write_batch(gold_settings.lake_root, Batch([S1, S2], [Q1]))

    result = dg.materialize([gold_stream_models], instance=instance, partition_key=B1, resources={"dbt": dbt})

    assert result.success
    assert len(started) == 1
    warm = started[0]
    assert _dbt_pid(result) == warm.process.pid  # dbt ran in the process started at set-up
    assert query(gold_settings, "select count(*) from main.fct_survey_response") == [(2,)]
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 20 and all(e.passed for e in evaluations)
    # the run's teardown: the process has left, its folder is gone, the variable unset
    assert warm.process.poll() is not None
    assert not os.path.exists(warm.folder)
    assert warm_dbt.SOCKET_ENV not in os.environ


def test_without_a_warm_process_the_launcher_runs_dbt_itself(gold_settings, instance, monkeypatch):
    """A warm process that is gone before the build (killed here) costs nothing but the
    time it would have saved: the launcher runs the installed dbt with the same
    arguments. With SCHOOL_EQUITY_DBT_PREWARM=0 no process is started at all."""
    real_start = warm_dbt.start
    started: list[warm_dbt.WarmDbt] = []

    def start_then_kill(*args, **kwargs):
        warm = real_start(*args, **kwargs)
        warm.process.kill()
        warm.process.wait()
        started.append(warm)
        return warm

    monkeypatch.setattr(warm_dbt, "start", start_then_kill)
    instance.add_dynamic_partitions(SURVEY_BATCHES, [B1])
    write_batch(gold_settings.lake_root, Batch([S1, S2], [Q1]))
    result = dg.materialize([gold_stream_models], instance=instance, partition_key=B1,
                            resources={"dbt": make_dbt_resource(gold_settings)})
    assert result.success
    assert len(started) == 1 and _dbt_pid(result) != started[0].process.pid
    assert query(gold_settings, "select count(*) from main.fct_survey_response") == [(2,)]

    started.clear()
    monkeypatch.setenv(DBT_PREWARM_ENV, "0")
    dbt = make_dbt_resource(gold_settings)
    assert not dbt.prewarm and Path(dbt.dbt_executable).name == "dbt"
    result = dg.materialize([gold_stream_models], instance=instance, partition_key=B1, resources={"dbt": dbt})
    assert result.success and started == []

    monkeypatch.setenv(DBT_PREWARM_ENV, "maybe")
    with pytest.raises(ValueError, match="SCHOOL_EQUITY_DBT_PREWARM"):
        make_dbt_resource(gold_settings)

    # a warm process that cannot be started (no temporary folder here) costs the run nothing
    monkeypatch.setenv(DBT_PREWARM_ENV, "1")
    monkeypatch.setattr(warm_dbt, "start", real_start)
    monkeypatch.setattr(warm_dbt.tempfile, "tempdir", str(gold_settings.lake_root) + "/no/such/folder")
    result = dg.materialize([gold_stream_models], instance=instance, partition_key=B1,
                            resources={"dbt": make_dbt_resource(gold_settings)})
    assert result.success
    assert any("no warm dbt process for this run's builds" in (e.user_message or "")
               for e in instance.all_logs(result.run_id))
    assert warm_dbt.SOCKET_ENV not in os.environ


def test_a_bad_idle_setting_is_named(monkeypatch):
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv(warm_dbt.IDLE_ENV, bad)
        with pytest.raises(ValueError, match=f"SCHOOL_EQUITY_DBT_WARM_IDLE_S={bad!r}"):
            warm_dbt.idle_from_env()
    monkeypatch.setenv(warm_dbt.IDLE_ENV, "30")
    assert warm_dbt.idle_from_env() == 30.0


def _launch(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    launcher = warm_dbt.launcher()
    assert launcher is not None, "school-equity-dbt is installed with the package (make setup)"
    return subprocess.Popen([launcher, *args], env=env, cwd=DBT_PROJECT_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_the_launcher_passes_dbt_its_arguments_output_and_exit_code_and_serves_once(tmp_path):
    """The same command through a warm process and through dbt itself: the same exit code
    and messages. A warm process serves one build and leaves; the next build through the
    same variable runs dbt itself."""
    env = {k: v for k, v in os.environ.items() if k != warm_dbt.SOCKET_ENV}
    cold = _launch(["no-such-command"], env)
    cold_out, cold_err = cold.communicate(timeout=120)

    warm = warm_dbt.start(idle_s=120)
    try:
        env_warm = {**env, warm_dbt.SOCKET_ENV: warm.socket_path}
        first = _launch(["no-such-command"], env_warm)
        out, err = first.communicate(timeout=120)
        assert first.returncode == cold.returncode == 2
        assert "No such command 'no-such-command'" in err and err == cold_err and out == cold_out
        assert warm.process.wait(timeout=30) == 0  # served, then left

        again = _launch(["--help"], env_warm)  # nothing to hand over to: dbt itself
        out, _ = again.communicate(timeout=120)
        assert again.returncode == 0 and "Usage: dbt" in out
    finally:
        warm.stop()
    assert not os.path.exists(warm.folder)


def test_the_launcher_forwards_an_interrupt_to_the_warm_dbt(tmp_path):
    """dagster-dbt stops dbt with SIGINT to the process it started, the launcher here: the
    dbt in the warm process must stop too, and the launcher reports its failure. A full
    parse of the project (no partial parse state) is long enough to interrupt."""
    env = {k: v for k, v in os.environ.items() if k != warm_dbt.SOCKET_ENV}
    env.update({
        "SCHOOL_EQUITY_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "SCHOOL_EQUITY_LAKE": str(tmp_path / "lake"),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "target"),
        "DBT_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    })
    warm = warm_dbt.start(idle_s=120)
    try:
        env[warm_dbt.SOCKET_ENV] = warm.socket_path
        proc = _launch(["parse", "--no-partial-parse", "--profiles-dir", str(DBT_PROJECT_DIR), "--target", "local"],
                       env)
        first_line = proc.stdout.readline()  # dbt is running in the warm process now
        assert json.loads(first_line)["info"]["pid"] == warm.process.pid
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert not any(json.loads(line)["info"]["name"] == "CommandCompleted" and "succeeded" in line
                       for line in rest.splitlines() if line.startswith("{"))
        assert warm.process.wait(timeout=30) is not None
    finally:
        warm.stop()


# A warm process that has taken the launcher's descriptors and request but not yet said
# it runs dbt (the real one acknowledges once dbt is imported and the hand-over is done):
# it notes what it got and any signal that reaches it, and never acknowledges.
_NOT_YET_TAKEN = """
import signal, socket, sys, time
path, notes = sys.argv[1], sys.argv[2]

def note(text):
    with open(notes, "a") as fh:
        fh.write(text + "\\n")

def got(signum, _frame):
    note(f"signal {signum}")
    sys.exit(0)

for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, got)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(1)
conn, _ = listener.accept()
_, fds, _, _ = socket.recv_fds(conn, 8, 3)
note(f"fds {len(fds)}")
time.sleep(120)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_before_the_warm_process_took_over_is_forwarded_and_ends_the_launcher(sig):
    """dagster-dbt may interrupt the build while the warm process is still importing dbt:
    the signal reaches the warm process, and the launcher ends with 128 + the signal
    instead of starting a dbt of its own after all."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="se-dbt-test-")  # short: a Unix socket path has ~100 bytes
    path, notes = os.path.join(folder, warm_dbt.SOCKET_NAME), os.path.join(folder, "notes")
    warm = subprocess.Popen([sys.executable, "-c", _NOT_YET_TAKEN, path, notes])
    proc = None
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {**os.environ, warm_dbt.SOCKET_ENV: path}
        proc = _launch(["--version"], env)  # dbt itself would print its version
        while time.monotonic() < deadline and not (os.path.exists(notes) and "fds 3" in Path(notes).read_text()):
            time.sleep(0.02)
        assert "fds 3" in Path(notes).read_text()  # handed over, waiting for the acknowledgement
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig
        assert out == "" and "Core" not in err  # no dbt was started
        assert warm.wait(timeout=30) == 0
        assert Path(notes).read_text().splitlines() == ["fds 3", f"signal {int(sig)}"]
    finally:
        for p in (proc, warm):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_warm_process_leaves_when_its_parent_does(tmp_path):
    """A run worker that dies without tearing down its resources leaves no dbt behind."""
    code = (
        "import sys, time; from school_equity.gold import warm_dbt; "
        "w = warm_dbt.start(idle_s=600); print(w.process.pid, w.folder, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid_s, folder = parent.stdout.readline().split()
        pid = int(pid_s)
        socket_path = os.path.join(folder, "dbt.sock")
        deadline = time.monotonic() + 60
        while not os.path.exists(socket_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os.path.exists(socket_path)  # bound: the warm process is up
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.2)  # reparented when its parent died: not ours to reap, so poll it
    try:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the warm process outlived its parent by a minute")
        assert not os.path.exists(socket_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the parent made it and could not remove it


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child that its new parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
