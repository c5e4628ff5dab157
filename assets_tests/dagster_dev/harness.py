"""Drive `dagster dev` the way a user does: a real `dagster dev` process (webserver,
daemon, code server, run workers) with its own DAGSTER_HOME, and its GraphQL API.

    with start_dagster_dev("school_equity.definitions", home=tmp_path / "dagster_home",
                           env={...}) as dev:
        dev.client.start_sensor("survey_batches_sensor")
        run_id = dev.client.wait_for_run_ids(tags={"dagster/sensor_name": ...})[0]
        assert dev.client.wait_for_run(run_id) == "SUCCESS"

Process hygiene, because a leaked daemon keeps launching runs into the next test:
- the child starts in its own session and process group, with SIGINT/SIGTERM set
  back to default (background shells start it with both ignored, and Python only
  installs its KeyboardInterrupt handler when SIGINT is not ignored);
- stop() sends SIGINT to the group (what Ctrl-C in a terminal does), waits, then
  SIGKILLs the group and every process it saw in the tree, by PID;
- `survivors()` lists anything of that tree still alive, for tests to assert on.

Costs on this machine (2 cores): GraphQL answers after ~7.5 s; a launched run pays
~3 s of process start per step; the processes take ~800 MB RSS together.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import requests

PROJECT_DIR = Path(__file__).resolve().parents[2]
INSTANCE_TEMPLATE = PROJECT_DIR / "school_equity" / "dagster_home" / "dagster.yaml"

TERMINAL_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
TERMINAL_BACKFILL_STATUSES = frozenset(
    {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
)
# Dagster's implicit job for ad-hoc asset selections (what "Materialize" in the UI launches).
ASSET_JOB = "__ASSET_JOB"
PARTITION_TAG = "dagster/partition"

T = TypeVar("T")


class GraphQLError(RuntimeError):
    """The API answered with errors, or with an error type instead of the expected result."""


class DagsterDevError(RuntimeError):
    """`dagster dev` did not come up, or died."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    fn: Callable[[], T | None], *, timeout: float, interval: float = 0.5, what: str = "condition"
) -> T:
    """Poll `fn` until it returns something truthy; return that. TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _key_path(asset_key: str | Sequence[str]) -> list[str]:
    return asset_key.split("/") if isinstance(asset_key, str) else list(asset_key)


def _expect(result: Mapping[str, Any], typename: str, what: str) -> Mapping[str, Any]:
    if result.get("__typename") != typename:
        raise GraphQLError(f"{what}: got {result.get('__typename')}: {result.get('message', result)}")
    return result


# --------------------------------------------------------------------------- client


class DagsterGraphQL:
    """A small client for the webserver's GraphQL API (the API the UI itself uses)."""

    def __init__(self, url: str, *, timeout: float = 30.0):
        self.url = url
        self.timeout = timeout
        self._session = requests.Session()
        self._repo: dict[str, str] | None = None

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        resp = self._session.post(
            self.url, json={"query": query, "variables": dict(variables or {})}, timeout=self.timeout
        )
        resp.raise_for_status()
        body = resp.json()
        if body.get("errors"):
            raise GraphQLError("; ".join(e.get("message", str(e)) for e in body["errors"]))
        return body["data"]

    # -- server and workspace ------------------------------------------------
    def version(self) -> str:
        return self.query("{ version }")["version"]

    def location_statuses(self) -> dict[str, dict[str, Any]]:
        """{location name: {"status": LOADING|LOADED, "error": message or None}}."""
        data = self.query(
            """{ workspaceOrError { __typename
                 ... on Workspace { locationEntries { name loadStatus
                     locationOrLoadError { __typename ... on PythonError { message } } } }
                 ... on PythonError { message } } }"""
        )["workspaceOrError"]
        _expect(data, "Workspace", "workspace")
        out = {}
        for entry in data["locationEntries"]:
            err = entry["locationOrLoadError"] or {}
            out[entry["name"]] = {
                "status": entry["loadStatus"],
                "error": err.get("message") if err.get("__typename") == "PythonError" else None,
            }
        return out

    def repositories(self) -> list[dict[str, Any]]:
        """Every repository: name, location, job names, sensor names and states, asset keys."""
        data = self.query(
            """{ repositoriesOrError { __typename
                 ... on RepositoryConnection { nodes { name location { name }
                     jobs { name } sensors { name sensorState { status } }
                     assetNodes { assetKey { path } } } }
                 ... on PythonError { message } } }"""
        )["repositoriesOrError"]
        _expect(data, "RepositoryConnection", "repositories")
        return [
            {
                "name": node["name"],
                "location": node["location"]["name"],
                "jobs": [j["name"] for j in node["jobs"]],
                "sensors": {s["name"]: s["sensorState"]["status"] for s in node["sensors"]},
                "asset_keys": ["/".join(a["assetKey"]["path"]) for a in node["assetNodes"]],
            }
            for node in data["nodes"]
        ]

    def repository_selector(self) -> dict[str, str]:
        """The selector of the only repository (a Definitions object makes exactly one)."""
        if self._repo is None:
            repos = self.repositories()
            if len(repos) != 1:
                raise GraphQLError(f"expected one repository, found {[r['name'] for r in repos]}")
            self._repo = {
                "repositoryLocationName": repos[0]["location"],
                "repositoryName": repos[0]["name"],
            }
        return dict(self._repo)

    # -- assets ----------------------------------------------------------------
    def asset_nodes(self) -> list[dict[str, Any]]:
        """Definitions of all assets: key ("a/b"), group, kinds, jobs, partitioned, pools, deps."""
        nodes = self.query(
            """{ assetNodes { assetKey { path } groupName kinds jobNames isPartitioned
                 isMaterializable pools dependencyKeys { path } } }"""
        )["assetNodes"]
        return [
            {
                "key": "/".join(n["assetKey"]["path"]),
                "group": n["groupName"],
                "kinds": n["kinds"],
                "jobs": n["jobNames"],
                "partitioned": n["isPartitioned"],
                "materializable": n["isMaterializable"],
                "pools": n["pools"],
                "deps": ["/".join(d["path"]) for d in n["dependencyKeys"]],
            }
            for n in nodes
        ]

    def asset_keys(self) -> list[str]:
        return sorted(n["key"] for n in self.asset_nodes())

    def partition_keys(self, asset_key: str | Sequence[str]) -> list[str]:
        """The asset's partition keys as the instance knows them now (dynamic ones included)."""
        (node,) = self.query(
            """query($key: AssetKeyInput!) { assetNodes(assetKeys: [$key]) { partitionKeys } }""",
            {"key": {"path": _key_path(asset_key)}},
        )["assetNodes"]
        return list(node["partitionKeys"])

    def materializations(
        self, asset_key: str | Sequence[str], *, partitions: Sequence[str] | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Materialization events of an asset, newest first: runId, partition, timestamp (ms)."""
        data = self.query(
            """query($key: AssetKeyInput!, $partitions: [String!], $limit: Int) {
                 assetOrError(assetKey: $key) { __typename
                   ... on Asset { assetMaterializations(partitions: $partitions, limit: $limit) {
                       runId partition timestamp } }
                   ... on AssetNotFoundError { message } } }""",
            {"key": {"path": _key_path(asset_key)}, "partitions": partitions, "limit": limit},
        )["assetOrError"]
        if data["__typename"] == "AssetNotFoundError":
            return []  # defined but never materialized has no event history yet
        return list(_expect(data, "Asset", f"asset {asset_key}")["assetMaterializations"])

    def materialization_count(
        self, asset_key: str | Sequence[str], *, partitions: Sequence[str] | None = None
    ) -> int:
        return len(self.materializations(asset_key, partitions=partitions))

    def materialized_partitions(self, asset_key: str | Sequence[str]) -> set[str]:
        return {m["partition"] for m in self.materializations(asset_key) if m["partition"] is not None}

    # -- sensors ---------------------------------------------------------------
    def _sensor_selector(self, name: str) -> dict[str, str]:
        return {**self.repository_selector(), "sensorName": name}

    def sensor(self, name: str, *, tick_limit: int = 10) -> dict[str, Any]:
        """Status, state id and the latest ticks (status, skipReason, runIds, runKeys, error)."""
        data = self.query(
            """query($sel: SensorSelector!, $limit: Int) { sensorOrError(sensorSelector: $sel) {
                 __typename
                 ... on Sensor { name minIntervalSeconds sensorState { id selectorId status
                     ticks(limit: $limit) { tickId status timestamp skipReason runIds runKeys
                                             cursor error { message } } } }
                 ... on SensorNotFoundError { message } ... on PythonError { message } } }""",
            {"sel": self._sensor_selector(name), "limit": tick_limit},
        )["sensorOrError"]
        return dict(_expect(data, "Sensor", f"sensor {name}"))

    def sensor_ticks(self, name: str, *, limit: int = 10) -> list[dict[str, Any]]:
        return list(self.sensor(name, tick_limit=limit)["sensorState"]["ticks"])

    def start_sensor(self, name: str) -> str:
        data = self.query(
            """mutation($sel: SensorSelector!) { startSensor(sensorSelector: $sel) { __typename
                 ... on Sensor { sensorState { status } }
                 ... on SensorNotFoundError { message } ... on UnauthorizedError { message }
                 ... on PythonError { message } } }""",
            {"sel": self._sensor_selector(name)},
        )["startSensor"]
        return _expect(data, "Sensor", f"start sensor {name}")["sensorState"]["status"]

    def stop_sensor(self, name: str) -> str:
        state = self.sensor(name, tick_limit=0)["sensorState"]
        data = self.query(
            """mutation($id: String, $selectorId: String) {
                 stopSensor(id: $id, jobSelectorId: $selectorId) { __typename
                   ... on StopSensorMutationResult { instigationState { status } }
                   ... on UnauthorizedError { message } ... on PythonError { message } } }""",
            {"id": state["id"], "selectorId": state["selectorId"]},
        )["stopSensor"]
        return _expect(data, "StopSensorMutationResult", f"stop sensor {name}")["instigationState"]["status"]

    def wait_for_sensor_tick(
        self, name: str, predicate: Callable[[dict[str, Any]], bool] = bool, *, timeout: float = 60.0
    ) -> dict[str, Any]:
        """The newest tick that satisfies `predicate` (e.g. lambda t: t["status"] == "SKIPPED")."""

        def found():
            return next((t for t in self.sensor_ticks(name, limit=25) if predicate(t)), None)

        return wait_until(found, timeout=timeout, what=f"a matching tick of sensor {name}")

    # -- runs --------------------------------------------------------------------
    def launch_run(
        self,
        *,
        job_name: str | None = None,
        asset_selection: Iterable[str | Sequence[str]] | None = None,
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        """Launch a run of a job, or of an asset selection (the UI's "Materialize"); returns its id.

        `partition` sets the `dagster/partition` tag, which is how the UI launches one partition.
        """
        if job_name is None and asset_selection is None:
            raise ValueError("give job_name, asset_selection, or both")
        selector: dict[str, Any] = {**self.repository_selector(), "jobName": job_name or ASSET_JOB}
        if asset_selection is not None:
            selector["assetSelection"] = [{"path": _key_path(k)} for k in asset_selection]
        all_tags = dict(tags or {})
        if partition is not None:
            all_tags[PARTITION_TAG] = partition
        params = {
            "selector": selector,
            "runConfigData": dict(run_config or {}),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in all_tags.items()]},
        }
        data = self.query(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                 __typename
                 ... on LaunchRunSuccess { run { runId } }
                 ... on PythonError { message }
                 ... on RunConfigValidationInvalid { errors { message } }
                 ... on Error { message } } }""",
            {"params": params},
        )["launchRun"]
        if data["__typename"] == "RunConfigValidationInvalid":
            raise GraphQLError("run config invalid: " + "; ".join(e["message"] for e in data["errors"]))
        return _expect(data, "LaunchRunSuccess", "launch run")["run"]["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.query(
            """query($id: ID!) { runOrError(runId: $id) { __typename
                 ... on Run { runId status jobName tags { key value } startTime endTime }
                 ... on RunNotFoundError { message } ... on PythonError { message } } }""",
            {"id": run_id},
        )["runOrError"]
        run = dict(_expect(data, "Run", f"run {run_id}"))
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        return run

    def run_status(self, run_id: str) -> str:
        return self.run(run_id)["status"]

    def wait_for_run(self, run_id: str, *, timeout: float = 180.0, interval: float = 0.5) -> str:
        """Block until the run is SUCCESS, FAILURE or CANCELED; return that status."""

        def terminal():
            status = self.run_status(run_id)
            return status if status in TERMINAL_RUN_STATUSES else None

        return wait_until(terminal, timeout=timeout, interval=interval, what=f"run {run_id} to finish")

    def runs(
        self,
        *,
        tags: Mapping[str, str] | None = None,
        statuses: Iterable[str] | None = None,
        job_name: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, filtered by tags / statuses / job: runId, status, jobName, tags."""
        flt: dict[str, Any] = {}
        if tags:
            flt["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        if statuses:
            flt["statuses"] = list(statuses)
        if job_name:
            flt["pipelineName"] = job_name
        data = self.query(
            """query($filter: RunsFilter, $limit: Int) { runsOrError(filter: $filter, limit: $limit) {
                 __typename
                 ... on Runs { results { runId status jobName tags { key value } } }
                 ... on InvalidPipelineRunsFilterError { message } ... on PythonError { message } } }""",
            {"filter": flt, "limit": limit},
        )["runsOrError"]
        out = []
        for r in _expect(data, "Runs", "runs")["results"]:
            out.append({**r, "tags": {t["key"]: t["value"] for t in r["tags"]}})
        return out

    def wait_for_run_ids(
        self, *, tags: Mapping[str, str] | None = None, count: int = 1, timeout: float = 60.0
    ) -> list[str]:
        """Wait until at least `count` runs with these tags exist (e.g. launched by a sensor)."""

        def enough():
            ids = [r["runId"] for r in self.runs(tags=tags)]
            return ids if len(ids) >= count else None

        return wait_until(enough, timeout=timeout, what=f"{count} run(s) tagged {dict(tags or {})}")

    def run_failure_messages(self, run_id: str) -> list[str]:
        """Error messages of failed steps and of the run itself, to show why a run failed."""
        data = self.query(
            """query($id: ID!) { runOrError(runId: $id) { __typename
                 ... on Run { eventConnection(limit: 5000) { events { __typename
                     ... on ExecutionStepFailureEvent { stepKey error { message } }
                     ... on RunFailureEvent { message error { message } } } } } } }""",
            {"id": run_id},
        )["runOrError"]
        if data["__typename"] != "Run":
            return []
        out = []
        for e in data["eventConnection"]["events"]:
            if e["__typename"] == "ExecutionStepFailureEvent":
                out.append(f"{e['stepKey']}: {(e.get('error') or {}).get('message', '').strip()}")
            elif e["__typename"] == "RunFailureEvent":
                detail = (e.get("error") or {}).get("message") or e.get("message", "")
                out.append(f"run: {detail.strip()}")
        return out

    # -- backfills -------------------------------------------------------------
    def launch_backfill(
        self,
        asset_selection: Iterable[str | Sequence[str]],
        partition_names: Sequence[str],
        *,
        tags: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> str:
        """Backfill the assets over these partitions (the UI's "Materialize selected"); returns its id."""
        params: dict[str, Any] = {
            "assetSelection": [{"path": _key_path(k)} for k in asset_selection],
            "partitionNames": list(partition_names),
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        if title:
            params["title"] = title
        data = self.query(
            """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                 __typename ... on LaunchBackfillSuccess { backfillId }
                 ... on PythonError { message } ... on Error { message } } }""",
            {"params": params},
        )["launchPartitionBackfill"]
        return _expect(data, "LaunchBackfillSuccess", "launch backfill")["backfillId"]

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        data = self.query(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
                 ... on PartitionBackfill { id status numPartitions partitionNames }
                 ... on BackfillNotFoundError { message } ... on PythonError { message } } }""",
            {"id": backfill_id},
        )["partitionBackfillOrError"]
        return dict(_expect(data, "PartitionBackfill", f"backfill {backfill_id}"))

    def backfill_run_ids(self, backfill_id: str) -> list[str]:
        return [r["runId"] for r in self.runs(tags={"dagster/backfill": backfill_id})]

    def wait_for_backfill(self, backfill_id: str, *, timeout: float = 300.0) -> str:
        """Block until the backfill is in a final state. The backfill daemon works in fixed
        30 s iterations (not configurable in 1.13): it submits the runs on one iteration
        and marks the backfill complete on a later one, so this takes 30-60 s even for a
        tiny backfill. Waiting on `backfill_run_ids` + `wait_for_run` is quicker when the
        runs are what matter."""

        def terminal():
            status = self.backfill(backfill_id)["status"]
            return status if status in TERMINAL_BACKFILL_STATUSES else None

        return wait_until(terminal, timeout=timeout, interval=1.0, what=f"backfill {backfill_id}")

    # -- instance ----------------------------------------------------------------
    def pool_config(self) -> dict[str, Any]:
        return self.query(
            "{ instance { poolConfig { poolGranularity defaultPoolLimit opGranularityRunBuffer } } }"
        )["instance"]["poolConfig"]

    def pool_limit(self, pool: str) -> int | None:
        """The pool's limit as the instance stores it (None until a step first claims it)."""
        info = self.query(
            "query($k: String) { instance { concurrencyLimit(concurrencyKey: $k) { limit slotCount } } }",
            {"k": pool},
        )["instance"]["concurrencyLimit"]
        return info["limit"]

    def set_pool_limit(self, pool: str, limit: int) -> None:
        ok = self.query(
            "mutation($k: String!, $n: Int!) { setConcurrencyLimit(concurrencyKey: $k, limit: $n) }",
            {"k": pool, "n": limit},
        )["setConcurrencyLimit"]
        if not ok:
            raise GraphQLError(f"setConcurrencyLimit({pool}, {limit}) refused")

    def daemon_statuses(self) -> dict[str, bool | None]:
        data = self.query(
            "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
        )["instance"]["daemonHealth"]["allDaemonStatuses"]
        return {d["daemonType"]: d["healthy"] for d in data if d["required"]}


# --------------------------------------------------------------------------- process


def _restore_signals() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class DagsterDev:
    """A running `dagster dev`. Use as a context manager, or call stop()."""

    proc: subprocess.Popen
    port: int
    home: Path
    log_path: Path
    client: DagsterGraphQL
    _seen: dict[int, psutil.Process] = field(default_factory=dict, repr=False)
    _log_file: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the leader's pid is the group id

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _track(self) -> None:
        """Remember every process of the tree and group, so late orphans are found too."""
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self._seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == self.pgid:
                    self._seen.setdefault(p.pid, p)
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue

    def processes(self) -> list[psutil.Process]:
        """Live processes of this dagster dev (webserver, daemon, code server, run workers)."""
        self._track()
        return [p for p in self._seen.values() if _alive(p)]

    def survivors(self) -> list[psutil.Process]:
        return self.processes()

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGINT the group, wait up to `timeout`, then SIGKILL what is left, by PID.
        Returns the PIDs that had to be killed (empty when shutdown was clean).
        Idempotent: a second call only sweeps stragglers."""
        self._track()
        if self.proc.poll() is None:  # the leader alive means the group id is still ours
            try:
                os.killpg(self.pgid, signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.proc.poll() is None or self.processes()):
            time.sleep(0.2)
        killed: list[int] = []
        # twice: a process may fork between the scan and the kill
        for _ in range(2):
            for p in self.processes():
                try:
                    p.kill()
                    killed.append(p.pid)
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(list(self._seen.values()), timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return sorted(set(killed))

    def __enter__(self) -> DagsterDev:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prepare_home(home: Path, template: Path = INSTANCE_TEMPLATE) -> Path:
    """A fresh DAGSTER_HOME holding a copy of the instance template."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, home / "dagster.yaml")
    return home


def start_dagster_dev(
    module: str,
    *,
    home: Path,
    working_directory: Path | None = None,
    env: Mapping[str, str] | None = None,
    template: Path = INSTANCE_TEMPLATE,
    port: int | None = None,
    ready_timeout: float = 120.0,
) -> DagsterDev:
    """Start `dagster dev -m <module>` on 127.0.0.1 and wait until its code location is loaded.

    `home` becomes DAGSTER_HOME (created, template copied in); `env` is added to this
    process's environment for dagster dev and everything it starts (code server, runs).
    Raises DagsterDevError with the log tail if it dies or the location fails to load.
    """
    home = prepare_home(Path(home), template)
    port = port or free_port()
    log_path = home / "dagster_dev.log"
    child_env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", module, "-p", str(port), "-h", "127.0.0.1"]
    if working_directory is not None:
        cmd += ["-d", str(working_directory)]
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by DagsterDev.stop()
    proc = subprocess.Popen(
        cmd,
        cwd=home,  # dagster dev warns about a dagster.yaml in a cwd that is not DAGSTER_HOME
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_restore_signals,
    )
    dev = DagsterDev(
        proc=proc,
        port=port,
        home=home,
        log_path=log_path,
        client=DagsterGraphQL(f"http://127.0.0.1:{port}/graphql"),
        _log_file=log_file,
    )
    try:
        _wait_ready(dev, ready_timeout)
    except BaseException:
        dev.stop(timeout=10)
        raise
    return dev


def _wait_ready(dev: DagsterDev, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    answered = False
    while time.monotonic() < deadline:
        dev._track()
        if dev.proc.poll() is not None:
            raise DagsterDevError(f"dagster dev exited with {dev.proc.returncode}:\n{dev.log_tail()}")
        try:
            if not answered:
                dev.client.version()
                answered = True
            statuses = dev.client.location_statuses()
        except (requests.RequestException, GraphQLError, ValueError):
            time.sleep(0.25)
            continue
        errors = {name: s["error"] for name, s in statuses.items() if s["error"]}
        if errors:
            raise DagsterDevError(f"code location failed to load: {errors}\n{dev.log_tail()}")
        if statuses and all(s["status"] == "LOADED" for s in statuses.values()):
            return
        time.sleep(0.25)
    raise DagsterDevError(f"dagster dev not ready after {timeout:.0f}s:\n{dev.log_tail()}")
