"""docker/: the Dockerfile and the compose stack, checked without a Docker engine.

What a `docker compose up` would trip over first: a COPY of a file that is not in
the build context, a service that depends on one that does not exist or cannot
become healthy, an environment variable set under a name nothing reads, a port
that does not line up between the server, the workspace and the published ports.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from assets_tests.ops.deploy_files import (
    DOCKER,
    ROOT,
    app_env_names,
    instance_env_refs,
    load_yaml,
    pyproject_dagster,
)

DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DAGSTER_SERVICES = ("user_code", "webserver", "daemon")


# --------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per build stage; continuation lines joined, comments dropped."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            stages.append(Stage(name=name, base=parts[0]))
        elif keyword == "ARG" and not stages:
            continue  # global ARGs before the first FROM
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def copy_sources(args: str) -> list[str] | None:
    """Sources of a COPY/ADD from the build context (None for COPY --from=...)."""
    parts = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = [p for p in parts if p.startswith("--")]
    if any(f.startswith("--from=") for f in flags):
        return None
    return [p for p in parts if not p.startswith("--")][:-1]


def dockerignore_patterns() -> list[str]:
    path = DOCKER / "Dockerfile.dockerignore"
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def _ignored(rel: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.removeprefix("**/")) or rel.startswith(p + "/")
        for p in patterns
    )


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    parsed = parse_dockerfile(DOCKERFILE.read_text())
    names = [s.name for s in parsed]
    assert len(names) == len(set(names)), f"duplicate stage names: {names}"
    return {s.name: s for s in parsed}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


def test_dockerfile_copy_sources_exist_in_the_build_context(stages, compose):
    # compose resolves build contexts against the compose file's folder
    contexts = {(COMPOSE.parent / s["build"]["context"]).resolve() for s in _built(compose).values()}
    assert contexts == {ROOT.resolve()}
    context = ROOT
    patterns = dockerignore_patterns()
    copied = []
    for stage in stages.values():
        for keyword, args in stage.instructions:
            if keyword not in ("COPY", "ADD"):
                continue
            for src in copy_sources(args) or []:
                assert not src.startswith(("/", "..")), f"{src} escapes the build context"
                assert (context / src).exists(), f"COPY {src}: not in the repository"
                assert not _ignored(src, patterns), f"COPY {src}: excluded by Dockerfile.dockerignore"
                copied.append(src)
    # the image is only useful with these
    assert {
        "requirements.lock",
        "pyproject.toml",
        "school_equity",
        "dbt_project",
        "docker/dagster.yaml",
    } <= set(copied)


def test_dockerignore_keeps_local_state_out_but_not_sources():
    patterns = dockerignore_patterns()
    for local in (".venv", ".school_equity", "docker/.env", "dbt_project/target"):
        assert _ignored(local, patterns), local
    for needed in ("school_equity", "dbt_project", "requirements.lock", "pyproject.toml"):
        assert not _ignored(needed, patterns), needed


def test_user_code_image_serves_the_code_location_over_grpc(stages):
    tool = pyproject_dagster()
    user_code = stages["user_code"]
    cmd = json.loads(user_code.last("CMD"))
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("-m") + 1] == tool["module_name"]
    assert cmd[cmd.index("--location-name") + 1] == tool["code_location_name"]
    assert cmd[cmd.index("-h") + 1] == "0.0.0.0"  # reachable from the other containers
    port = cmd[cmd.index("-p") + 1]
    assert user_code.last("EXPOSE") == port
    health = user_code.last("HEALTHCHECK")
    assert "grpc-health-check" in health and f'"-p", "{port}"' in health
    # installs the lock, then the package itself
    runs = " ".join(args for kw, args in user_code.instructions if kw == "RUN")
    assert "pip install -r /opt/dagster/requirements.lock" in runs
    assert "pip install --no-deps -e ." in runs and "dbt parse" in runs
    # and does not run as root
    assert user_code.last("USER") not in (None, "root", "0")


def test_system_image_uses_the_lock_pins_and_the_docker_workspace(stages):
    system = stages["dagster"]
    runs = " ".join(args for kw, args in system.instructions if kw == "RUN")
    assert "-c /opt/dagster/requirements.lock" in runs
    for package in ("dagster-webserver", "dagster-postgres"):
        assert package in runs
        assert re.search(rf"^{package}==", (ROOT / "requirements.lock").read_text(), re.M), package
    assert "docker/workspace.yaml" in system.last("COPY")
    assert system.last("USER") not in (None, "root", "0")


# --------------------------------------------------------------------------- compose


def _built(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_builds_point_at_real_dockerfile_targets(compose, stages):
    built = _built(compose)
    assert set(built) == {"user_code", "webserver"}
    for name, svc in built.items():
        dockerfile = (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve()
        assert dockerfile == DOCKERFILE.resolve(), name
        assert svc["build"]["target"] in stages, name
    # the daemon reuses the image the webserver service builds
    assert compose["services"]["daemon"]["image"] == compose["services"]["webserver"]["image"]
    assert "webserver" in compose["services"]["daemon"]["depends_on"]


def test_compose_dependencies_exist_and_can_be_satisfied(compose, stages):
    services = compose["services"]
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            target = services[dep]
            if condition == "service_healthy":
                image_health = "build" in target and stages[target["build"]["target"]].last("HEALTHCHECK")
                assert "healthcheck" in target or image_health, f"{name} waits for {dep} to be healthy"
            elif condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dep} is a one-shot job and must not restart"
            else:
                assert condition == "service_started", condition
    # no cycles
    graph = {n: set((s.get("depends_on") or {}).keys()) for n, s in services.items()}
    done: set[str] = set()
    while graph:
        ready = {n for n, deps in graph.items() if deps <= done}
        assert ready, f"dependency cycle among {sorted(graph)}"
        done |= ready
        graph = {n: d for n, d in graph.items() if n not in ready}


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for svc in compose["services"].values():
        for vol in svc.get("volumes") or []:
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared


def test_dagster_services_get_every_instance_variable_and_share_compute_logs(compose):
    needed = instance_env_refs(DOCKER / "dagster.yaml")
    assert {"DAGSTER_POSTGRES_PASSWORD", "DAGSTER_COMPUTE_LOGS_DIR"} <= needed
    for name in DAGSTER_SERVICES:
        svc = compose["services"][name]
        env = _env(svc)
        assert needed <= set(env), f"{name} lacks {needed - set(env)}"
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts.get(env["DAGSTER_COMPUTE_LOGS_DIR"]) == "compute_logs", name
    pg = _env(compose["services"]["postgres"])
    web = _env(compose["services"]["webserver"])
    for pg_name, dagster_name in [
        ("POSTGRES_DB", "DAGSTER_POSTGRES_DB"),
        ("POSTGRES_USER", "DAGSTER_POSTGRES_USER"),
        ("POSTGRES_PASSWORD", "DAGSTER_POSTGRES_PASSWORD"),
    ]:
        assert pg[pg_name] == web[dagster_name]


def test_user_code_environment_uses_names_the_code_reads(compose):
    env = _env(compose["services"]["user_code"])
    known = app_env_names() | instance_env_refs(DOCKER / "dagster.yaml")
    unknown = sorted(set(env) - known)
    assert unknown == [], f"set in compose but read by nothing: {unknown}"
    assert env["SCHOOL_EQUITY_LAKE"].startswith("s3://")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_ports_line_up_between_servers_workspace_and_host(compose, stages):
    services = compose["services"]
    # webserver: the port it serves on is the one published
    cmd = services["webserver"]["command"]
    web_port = cmd[cmd.index("-p") + 1]
    assert any(p.split(":")[-1] == web_port for p in services["webserver"]["ports"])
    assert services["webserver"]["command"][-1] == services["daemon"]["command"][-1]  # same workspace
    # user code: the gRPC port is exposed and is the one docker/workspace.yaml dials
    grpc_cmd = json.loads(stages["user_code"].last("CMD"))
    grpc_port = grpc_cmd[grpc_cmd.index("-p") + 1]
    assert [str(p) for p in services["user_code"]["expose"]] == [grpc_port]
    (entry,) = load_yaml(DOCKER / "workspace.yaml")["load_from"]
    assert str(entry["grpc_server"]["port"]) == grpc_port
    # kafka: every advertised listener is a listener; the host one is published; user code
    # connects through the internal one
    kenv = _env(services["kafka"])
    listeners = dict(item.split("://") for item in kenv["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in kenv["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in kenv["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols) and set(advertised) <= set(listeners)
    for name, address in advertised.items():
        assert address.rsplit(":", 1)[1] == listeners[name].rsplit(":", 1)[1], name
    host_port = advertised["HOST"].rsplit(":", 1)[1]
    assert f"{host_port}:{host_port}" in services["kafka"]["ports"]
    assert (
        _env(services["user_code"])["SCHOOL_EQUITY_KAFKA"]
        == advertised[kenv["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    )
    assert (
        kenv["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        == f"{kenv['KAFKA_NODE_ID']}@kafka:{listeners['CONTROLLER'].rsplit(':', 1)[1]}"
    )
    # the broker writes its log where the volume is mounted
    kafka_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["kafka"]["volumes"]}
    assert kafka_mounts.get(kenv["KAFKA_LOG_DIRS"]) == "kafka_data"
    # the local default of settings.py matches the published Kafka port, so host-side
    # tools (`school-equity produce`) reach the compose broker unchanged
    settings = (ROOT / "school_equity" / "settings.py").read_text()
    assert f'"127.0.0.1:{host_port}"' in settings


def test_env_example_lists_every_variable_compose_needs_and_no_values():
    text = COMPOSE.read_text()
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    required = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+):\?", text))
    defaulted = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+):-", text))
    assert referenced == required | defaulted, (
        f"no default, not required: {referenced - required - defaulted}"
    )
    lines = [
        line.strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = [line.split("=", 1)[0] for line in lines]
    assert all(line.endswith("=") for line in lines), "values do not belong in .env.example"
    assert set(names) == referenced
    assert len(names) == len(set(names))
