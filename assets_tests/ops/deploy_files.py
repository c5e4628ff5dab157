"""Where the deployment files are, and what the code reads, for the checks in this folder."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
INFRA = ROOT / "infra" / "terraform"
PACKAGE = ROOT / "school_equity"


def load_yaml(path: Path):
    with open(path) as f:
        return yaml.safe_load(f)


def pyproject_dagster() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["dagster"]


def app_env_names() -> set[str]:
    """Environment variable names the package and the dbt profile read.

    Every quoted UPPER_CASE string in the package's Python counts (settings, lake,
    resources with dg.EnvVar), plus every env_var('X') of dbt's profiles.yml: a
    superset, good enough to catch a misspelt name in a deployment file.
    """
    names: set[str] = set()
    for py in PACKAGE.rglob("*.py"):
        names |= set(re.findall(r"""["']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)["']""", py.read_text()))
    profiles = ROOT / "dbt_project" / "profiles.yml"
    names |= set(re.findall(r"""env_var\(\s*['"]([A-Z0-9_]+)['"]""", profiles.read_text()))
    return names


def instance_env_refs(dagster_yaml: Path) -> set[str]:
    """Names used as `{env: NAME}` anywhere in a dagster.yaml."""
    refs: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                refs.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_yaml(dagster_yaml))
    return refs
