"""The dbt project behind Gold, in its own module because `@dbt_assets` reads the manifest
at import: whoever imports the assets must find it prepared.

`make setup` runs `dbt parse` once. Locally (`dagster dev`, tests, `dagster definitions
validate`) a manifest missing or older than any dbt file is re-parsed at import, so edited
models never load as stale assets. In branch/prod the manifest is built with the image
(`dagster-dbt project prepare-and-package` or `dbt parse --target prod`), the project may be
read-only, and only dagster-dbt's `prepare_if_dev()` applies.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from school_equity.settings import DBT_PROJECT_DIR, get_env

# Files whose change changes the manifest (the target/ and logs/ folders are outputs).
_DBT_INPUT_DIRS = ("models", "macros", "seeds", "snapshots", "tests")
_DBT_INPUT_FILES = ("dbt_project.yml", "profiles.yml")


def manifest_is_stale(project_dir: Path, manifest_path: Path) -> bool:
    """True when the manifest is missing or older than any file dbt parses."""
    if not manifest_path.exists():
        return True
    built = manifest_path.stat().st_mtime
    inputs = [project_dir / name for name in _DBT_INPUT_FILES]
    for sub in _DBT_INPUT_DIRS:
        root = project_dir / sub
        if root.is_dir():
            inputs.extend(p for p in root.rglob("*") if p.is_file())
    return any(p.exists() and p.stat().st_mtime > built for p in inputs)


def _put_venv_dbt_on_path() -> None:
    """dagster-dbt's preparer runs `dbt` from PATH; `.venv/bin/dagster dev` and
    `.venv/bin/pytest` run without the venv activated, so dbt would not be found."""
    beside = Path(sys.executable).parent
    if shutil.which("dbt") is None and (beside / "dbt").exists():
        os.environ["PATH"] = f"{beside}{os.pathsep}{os.environ.get('PATH', '')}"


def build_project(env: str | None = None) -> DbtProject:
    env = env or get_env()
    _put_venv_dbt_on_path()
    project = DbtProject(project_dir=DBT_PROJECT_DIR, target=env)
    if env == "local":
        # Instead of prepare_if_dev(): `dagster dev` exports DAGSTER_IS_DEV_CLI to every
        # process it starts, so each run worker would re-parse (~10 s of CPU here) although
        # nothing changed. Parsing when a dbt file is newer than the manifest covers the
        # edit-and-reload loop, and `pytest` or `dagster definitions validate` too.
        if manifest_is_stale(project.project_dir, project.manifest_path):
            project.preparer.prepare(project)
    else:
        project.prepare_if_dev()
    return project


dbt_project = build_project()
