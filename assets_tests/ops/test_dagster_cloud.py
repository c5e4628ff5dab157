"""dagster_cloud.yaml: the Dagster+ code location matches the package, and carries
environment variable names only."""

from __future__ import annotations

import re

from assets_tests.ops.deploy_files import INFRA, ROOT, app_env_names, load_yaml, pyproject_dagster

ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY")


def _location() -> dict:
    config = load_yaml(ROOT / "dagster_cloud.yaml")
    assert set(config) == {"locations"}
    (location,) = config["locations"]
    return location


def test_location_is_the_package_code_location():
    tool = pyproject_dagster()
    location = _location()
    assert location["location_name"] == tool["code_location_name"]
    assert location["code_source"] == {"module_name": tool["module_name"]}
    assert (ROOT / location["build"]["directory"]).is_dir()
    assert {"directory", "registry"} <= set(location["build"])
    # the image's working directory: where the editable install puts the package
    assert "WORKDIR " + location["working_directory"] in (ROOT / "docker" / "Dockerfile").read_text()


def test_env_vars_are_names_only_known_to_the_code_and_not_secrets():
    ecs = _location()["container_context"]["ecs"]
    names = ecs["env_vars"]
    assert names and len(names) == len(set(names))
    for name in names:
        assert ENV_NAME.match(name), f"{name!r}: names only, no KEY=value"
        assert not any(word in name for word in SECRET_WORDS), f"{name} is a secret: use secrets_tags"
    unknown = sorted(set(names) - app_env_names())
    assert unknown == [], f"read by nothing in the package or the dbt profile: {unknown}"
    assert "secrets" not in ecs, "secret ARNs name the account: select secrets by tag instead"


def test_every_snowflake_setting_of_the_dbt_profile_reaches_the_container():
    profile = (ROOT / "dbt_project" / "profiles.yml").read_text()
    needed = set(re.findall(r"env_var\('(SNOWFLAKE_[A-Z_]+)'", profile))
    assert "SNOWFLAKE_PASSWORD" in needed
    ecs = _location()["container_context"]["ecs"]
    # secrets come from Secrets Manager by tag: the terraform secrets carry that tag
    # and are named after the variable
    main_tf = (INFRA / "main.tf").read_text()
    (tag,) = ecs["secrets_tags"]
    assert re.search(rf"tags\s*=\s*{{\s*{re.escape(tag)}\s*=", main_tf)
    variables = (INFRA / "variables.tf").read_text()
    secret_default = re.search(
        r'variable "runtime_secret_names" \{.*?default\s*=\s*(\[[^\]]*\])', variables, re.S
    )
    secrets = set(re.findall(r'"([A-Z_]+)"', secret_default.group(1)))
    assert needed <= set(ecs["env_vars"]) | secrets, needed - set(ecs["env_vars"]) - secrets


def test_terraform_runtime_environment_covers_the_forwarded_names():
    # what terraform outputs for the agent's task is exactly what the location forwards
    main_tf = (INFRA / "main.tf").read_text()
    block = re.search(r"runtime_environment = \{(.*?)\n  \}", main_tf, re.S).group(1)
    keys = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+)\s+=", block, re.M))
    assert keys == set(_location()["container_context"]["ecs"]["env_vars"])
