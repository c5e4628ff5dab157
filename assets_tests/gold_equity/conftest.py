"""Fixtures for the equity Gold tests: a tmp lake with the batch-source Silver tables
built from the shipped raw CSVs, and the dbt CLI run against a tmp DuckDB file."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from school_equity.settings import DBT_PROJECT_DIR, PROJECT_DIR

from .silver_from_raw import build_lake

DBT = Path(sys.executable).parent / "dbt"
# The live view needs the stream's Silver tables; the equity tests build it separately.
EQUITY_SELECTION = [
    "--select", "path:models/equity", "path:seeds", "path:snapshots", "path:tests",
    "--exclude", "gold_live_response_vs_published+",
]


@dataclass(frozen=True)
class Warehouse:
    lake: Path
    path: Path
    work: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SCHOOL_EQUITY_ENV": "local",
            "SCHOOL_EQUITY_LAKE": str(self.lake),
            "SCHOOL_EQUITY_WAREHOUSE": str(self.path),
        }

    def dbt(self, *args: str) -> subprocess.CompletedProcess:
        """Runs the dbt CLI as a user would; target and logs stay in the test's tmp dir so
        parallel runs (and the shared dbt_project/target Dagster reads) are not touched."""
        cmd = [
            str(DBT), *args,
            "--profiles-dir", str(DBT_PROJECT_DIR), "--project-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(self.work / "target"), "--log-path", str(self.work / "logs"),
        ]
        proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=self.env(), capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise AssertionError(f"dbt {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}")
        return proc

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def query_dicts(self, sql: str, params: list | None = None) -> list[dict]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            cur = con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@pytest.fixture(scope="module")
def equity_warehouse(tmp_path_factory) -> Warehouse:
    """Silver from the raw CSVs, then one `dbt build` of seeds, snapshot, equity models and
    their tests (the build fails, and so does the fixture, if any dbt test fails)."""
    root = tmp_path_factory.mktemp("gold_equity")
    wh = Warehouse(lake=root / "lake", path=root / "warehouse.duckdb", work=root)
    build_lake(wh.lake)
    wh.dbt("build", *EQUITY_SELECTION)
    return wh
