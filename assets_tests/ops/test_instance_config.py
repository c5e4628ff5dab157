"""dagster.yaml and workspace.yaml files, loaded by Dagster's own config machinery."""

from __future__ import annotations

import importlib
import shutil

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import PoolGranularity, dagster_instance_config
from dagster._core.workspace.load import location_origins_from_yaml_paths

from assets_tests.ops.deploy_files import (
    DOCKER,
    PACKAGE,
    ROOT,
    instance_env_refs,
    load_yaml,
    pyproject_dagster,
)

TEMPLATE = PACKAGE / "dagster_home" / "dagster.yaml"
DOCKER_INSTANCE = DOCKER / "dagster.yaml"
POOLS = ("silver_delta", "duckdb_warehouse")
CLASS_KEYS = ("run_coordinator", "run_launcher", "compute_logs", "scheduler", "local_artifact_storage")


def _check_class_config(entry: dict) -> None:
    """What instance start-up does for a configurable class, short of instantiating it."""
    klass = getattr(importlib.import_module(entry["module"]), entry["class"])
    result = process_config(resolve_to_config_type(klass.config_type()), entry.get("config") or {})
    assert result.success, f"{entry['module']}.{entry['class']}: {[e.message for e in result.errors]}"


@pytest.fixture
def docker_instance_env(monkeypatch, tmp_path):
    for name in instance_env_refs(DOCKER_INSTANCE):
        monkeypatch.setenv(name, "placeholder")
    monkeypatch.setenv("DAGSTER_POSTGRES_PORT", "5432")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_DIR", str(tmp_path / "compute_logs"))


@pytest.mark.parametrize("path", [TEMPLATE, DOCKER_INSTANCE], ids=["dagster_dev_template", "docker"])
def test_instance_yaml_passes_dagster_schema(path, tmp_path, docker_instance_env):
    config, custom_class = dagster_instance_config(str(path.parent), config_filename=path.name)
    assert custom_class is None
    for key in CLASS_KEYS:
        if key in config:
            _check_class_config(config[key])
    # the checks are not vacuous: a misspelt key is refused
    (tmp_path / "dagster.yaml").write_text(path.read_text() + "\nconcurrencyy: {}\n")
    with pytest.raises(dg.DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path))


@pytest.mark.parametrize("path", [TEMPLATE, DOCKER_INSTANCE], ids=["dagster_dev_template", "docker"])
def test_both_instances_limit_the_two_pools_to_one(path):
    # 1.13 has no per-pool keys in dagster.yaml; `default_limit` is what the two pools get
    # on first claim (asserted live in assets_tests/dagster_dev and test_docker_instance_on_postgres).
    pools = load_yaml(path)["concurrency"]["pools"]
    assert pools["default_limit"] == 1
    assert pools.get("granularity", "op") == "op"
    assert load_yaml(path)["telemetry"] == {"enabled": False}
    # A queued batch run waits at most a second for the queue's daemon (default 5 s).
    assert load_yaml(path)["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1


def test_dagster_dev_template_builds_an_instance(tmp_path):
    shutil.copyfile(TEMPLATE, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
        assert concurrency.run_queue_config.max_concurrent_runs == 3
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert instance.event_log_storage.supports_global_concurrency_limits


def test_docker_instance_on_postgres_runs_and_limits_pools(postgres_server, tmp_path, monkeypatch):
    env = {
        "DAGSTER_POSTGRES_HOST": postgres_server.host,
        "DAGSTER_POSTGRES_PORT": str(postgres_server.port),
        "DAGSTER_POSTGRES_DB": postgres_server.db,
        "DAGSTER_POSTGRES_USER": postgres_server.user,
        "DAGSTER_POSTGRES_PASSWORD": "unused-trust-auth",
        "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "compute_logs"),
    }
    assert set(env) == instance_env_refs(DOCKER_INSTANCE)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(DOCKER_INSTANCE, home / "dagster.yaml")

    @dg.asset(pool="silver_delta")
    def merged() -> int:
        return 1

    @dg.asset(pool="duckdb_warehouse", deps=[merged])
    def modelled() -> int:
        return 2

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        result = dg.materialize([merged, modelled], instance=instance)
        assert result.success
        assert len(instance.get_runs()) == 1
        for pool in POOLS:
            info = instance.event_log_storage.get_concurrency_info(pool)
            assert info.slot_count == 1, pool


def test_workspace_yaml_loads_the_package_location():
    tool = pyproject_dagster()
    (origin,) = location_origins_from_yaml_paths([str(ROOT / "workspace.yaml")])
    assert origin.location_name == tool["code_location_name"] == "school_equity"
    assert origin.loadable_target_origin.module_name == tool["module_name"] == "school_equity.definitions"
    assert importlib.util.find_spec("school_equity") is not None


def test_docker_workspace_points_at_the_user_code_grpc_server():
    (origin,) = location_origins_from_yaml_paths([str(DOCKER / "workspace.yaml")])
    assert type(origin).__name__ == "GrpcServerCodeLocationOrigin"
    assert origin.location_name == pyproject_dagster()["code_location_name"]
    compose = load_yaml(DOCKER / "docker-compose.yml")
    assert origin.host in compose["services"]
    assert compose["services"][origin.host]["build"]["target"] == "user_code"
    assert str(origin.port) in [str(p) for p in compose["services"][origin.host]["expose"]]


def test_a_broken_workspace_is_refused(tmp_path):
    bad = tmp_path / "workspace.yaml"
    bad.write_text(yaml.safe_dump({"load_from": [{"python_modul": {"module_name": "x"}}]}))
    with pytest.raises(dg.DagsterInvalidConfigError):
        location_origins_from_yaml_paths([str(bad)])
