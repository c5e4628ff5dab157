"""The `dagster dev` harness, on a throw-away code location (toy_defs.py): start it,
use the API as the UI does, stop it, and leave no process behind."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from graphql import parse, validate

from assets_tests.dagster_dev.harness import (
    PROJECT_DIR,
    DagsterDev,
    DagsterDevError,
    DagsterGraphQL,
    _restore_signals,
    free_port,
    wait_until,
)

HERE = Path(__file__).resolve().parent
TOY_MODULE = "assets_tests.dagster_dev.toy_defs"


def _harness_queries() -> list[tuple[int, str]]:
    tree = ast.parse((HERE / "harness.py").read_text())
    return [
        (node.lineno, node.args[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "query"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]


def test_every_harness_query_is_valid_against_the_installed_schema():
    # Catches a field renamed between Dagster versions without starting a server.
    from dagster_graphql.schema import create_schema

    schema = create_schema().graphql_schema
    queries = _harness_queries()
    assert len(queries) >= 15
    problems = {line: [e.message for e in validate(schema, parse(q))] for line, q in queries}
    assert {line: errs for line, errs in problems.items() if errs} == {}
    # and the check itself can fail
    assert validate(schema, parse("{ runsOrError { nosuchfield } }"))


def test_stop_kills_what_ignores_sigint_and_leaves_nothing(tmp_path):
    # A leader whose child ignores SIGINT: stop() must escalate to SIGKILL by PID.
    ready = tmp_path / "child_ready"
    child = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
    )
    leader = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}, {str(ready)!r}])\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", leader], start_new_session=True, preexec_fn=_restore_signals
    )
    dev = DagsterDev(
        proc=proc,
        port=0,
        home=tmp_path,
        log_path=tmp_path / "nonexistent.log",
        client=DagsterGraphQL("http://127.0.0.1:9/graphql"),
    )
    wait_until(ready.exists, timeout=20, interval=0.05, what="the SIGINT-ignoring child")
    pids = {p.pid for p in dev.processes()}
    assert proc.pid in pids and len(pids) == 2

    killed = dev.stop(timeout=1.0)

    assert len(killed) == 1 and killed[0] in pids - {proc.pid}
    assert dev.survivors() == []
    assert proc.returncode is not None


@pytest.mark.dagster_dev
def test_toy_location_end_to_end_through_dagster_dev(dagster_dev_factory, tmp_path):
    out_dir = tmp_path / "toy_out"
    started = time.monotonic()
    dev = dagster_dev_factory(TOY_MODULE, working_directory=PROJECT_DIR, env={"TOY_OUT_DIR": str(out_dir)})
    print(f"dagster dev ready in {time.monotonic() - started:.1f}s")
    client = dev.client

    # the workspace, as the UI shows it
    assert client.version()
    (repo,) = client.repositories()
    assert repo["location"] == TOY_MODULE
    assert "toy_job" in repo["jobs"]
    assert repo["sensors"] == {"toy_sensor": "STOPPED"}
    assert client.asset_keys() == ["toy/numbers"]
    (node,) = client.asset_nodes()
    assert node["partitioned"] and node["pools"] == ["silver_delta"] and node["group"] == "toy"
    # the instance template was used: pools default to one slot
    assert client.pool_config()["defaultPoolLimit"] == 1
    assert client.materialization_count("toy/numbers") == 0
    # webserver, daemon and code server at least, besides dagster dev itself
    assert len(dev.processes()) >= 4

    # sensor on: the daemon evaluates it and launches the run it requests
    assert client.start_sensor("toy_sensor") == "RUNNING"
    # meanwhile a user materializes partition "b" from the UI
    run_b = client.launch_run(asset_selection=["toy/numbers"], partition="b", tags={"test": "harness"})
    (run_a,) = client.wait_for_run_ids(tags={"dagster/sensor_name": "toy_sensor"}, timeout=60)
    for run_id in (run_a, run_b):
        status = client.wait_for_run(run_id, timeout=120)
        assert status == "SUCCESS", client.run_failure_messages(run_id)

    assert client.run(run_a)["tags"]["dagster/partition"] == "a"
    assert [r["runId"] for r in client.runs(tags={"test": "harness"})] == [run_b]
    assert client.materialized_partitions("toy/numbers") == {"a", "b"}
    assert client.materialization_count("toy/numbers") == 2
    assert client.materialization_count("toy/numbers", partitions=["b"]) == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.txt", "b.txt"]
    # the pool was created on first claim with the template's default limit
    assert client.pool_limit("silver_delta") == 1

    # the fixed run_key dedups: later ticks launch nothing new
    client.wait_for_sensor_tick("toy_sensor", lambda t: t["status"] == "SKIPPED" and not t["runIds"])
    assert len(client.runs(tags={"dagster/sensor_name": "toy_sensor"})) == 1
    assert client.stop_sensor("toy_sensor") == "STOPPED"

    # a backfill over both partitions, as from the UI: one run (single_run policy)
    assert client.partition_keys("toy/numbers") == ["a", "b"]
    backfill_id = client.launch_backfill(["toy/numbers"], ["a", "b"], tags={"test": "backfill"})
    # its run, not its completion: the daemon marks a backfill complete up to 30 s later
    (backfill_run,) = wait_until(
        lambda: client.backfill_run_ids(backfill_id), timeout=90, what="the backfill's run"
    )
    assert client.wait_for_run(backfill_run, timeout=120) == "SUCCESS"
    assert client.backfill(backfill_id)["status"] in {"REQUESTED", "COMPLETED", "COMPLETED_SUCCESS"}
    assert client.materialization_count("toy/numbers") == 4
    assert client.materialization_count("toy/numbers", partitions=["a"]) == 2

    seen = [p.pid for p in dev.processes()]
    killed = dev.stop(timeout=45)
    assert dev.survivors() == []
    assert killed == [], f"needed SIGKILL for {killed}: shutdown on SIGINT was not clean"
    assert not [
        pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.dagster_dev
def test_a_location_that_fails_to_load_is_reported_and_cleaned_up(dagster_dev_factory, tmp_path):
    home = tmp_path / "broken_home"
    with pytest.raises(DagsterDevError, match="no_such_module_xyz"):
        dagster_dev_factory("no_such_module_xyz", home=home, port=free_port(), ready_timeout=90)
    # start_dagster_dev stopped it before raising; nothing of its group is left
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "no_such_module_xyz" in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
