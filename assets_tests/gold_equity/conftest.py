"""Fixtures for the equity Gold tests: a tmp lake whose batch-source Silver tables are
built by the real source assets (Bronze landing + Silver, in process, from the shipped
files), and the dbt CLI run against a tmp DuckDB file."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from school_equity.resources import LakeResource
from school_equity.settings import DBT_PROJECT_DIR, PROJECT_DIR
from school_equity.sources import (
    PARTITIONS,
    SOURCE_RESOURCE_KEY,
    PublicSourcesResource,
    checks_for,
    materialize_shipped_vintages,
)
from school_equity.sources.assets import BRONZE_ASSETS, SILVER_ASSETS, bronze_op_name

from . import raw_files as raw
from .stream_rows import write_stream_silver

DBT = Path(sys.executable).parent / "dbt"
EQUITY_NODES = ["path:models/equity", "path:seeds", "path:snapshots", "path:tests"]
# The live view needs the stream's Silver tables: the first build leaves it out.
EQUITY_SELECTION = ["--select", *EQUITY_NODES, "--exclude", "gold_live_response_vs_published+"]
# ... the second build has them: the equity nodes, and the stream models the view reads.
SECOND_RUN_SELECTION = ["--select", *EQUITY_NODES, "+gold_live_response_vs_published,path:models/stream"]


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

    def resources(self) -> dict:
        return {"lake": LakeResource(root=str(self.lake)), SOURCE_RESOURCE_KEY: PublicSourcesResource()}

    def land_vintage(self, source: str, vintage: str, csv_path: Path) -> None:
        """Lands one more vintage of a source from a file, through its Bronze and Silver
        assets and their checks, the way a run launched for a new partition would."""
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions(PARTITIONS[source].name, [vintage])
        result = dg.materialize(
            [BRONZE_ASSETS[source], SILVER_ASSETS[source], *checks_for(source)],
            partition_key=vintage,
            instance=instance,
            resources=self.resources(),
            run_config={"ops": {bronze_op_name(source): {"config": {"source_uri": str(csv_path)}}}},
        )
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())


@pytest.fixture(scope="session")
def equity_warehouse(tmp_path_factory) -> Warehouse:
    """The shipped vintages through the source assets, then one `dbt build` of seeds,
    snapshot, equity models and their tests (the build fails, and so does the fixture, if
    any dbt test fails). Tests only read it; a test that changes data works on a copy."""
    root = tmp_path_factory.mktemp("gold_equity")
    wh = Warehouse(lake=root / "lake", path=root / "warehouse.duckdb", work=root)
    materialize_shipped_vintages(dg.DagsterInstance.ephemeral(), wh.resources())
    wh.dbt("build", *EQUITY_SELECTION)
    return wh


def copy_warehouse(source: Warehouse, root: Path) -> Warehouse:
    """An independent copy of a built lake and warehouse, so a test can run a second build
    on top of the first without paying for the first again."""
    wh = Warehouse(lake=root / "lake", path=root / "warehouse.duckdb", work=root)
    shutil.copytree(source.lake, wh.lake)
    shutil.copy2(source.path, wh.path)
    # dbt's partial-parse state: the second build re-parses only what the new paths change
    shutil.copytree(source.work / "target", wh.work / "target")
    return wh


MOVED, CLOSED = "01M015", "01M019"
NEW_ADDRESS = "1 NEW STREET"


def lowest_bucket_manhattan_tract() -> str:
    return min(
        fips for fips, row in raw.svi().items()
        if row["STCNTY"] == "36061" and raw.svi_score(fips) is not None and raw.svi_score(fips) < 0.25
    )


def write_locations_2019(path, moved_to: str) -> None:
    """The shipped 2017-18 extract as fiscal year 2019: MOVED sits in another Manhattan tract
    (its BBL keeps the Manhattan digit), CLOSED is gone."""
    header, rows = raw.read_locations()
    col = {name: i for i, name in enumerate(header)}
    out = []
    for row in rows:
        dbn = row[col["ATS SYSTEM CODE"]].strip()
        if dbn == CLOSED:
            continue
        row = list(row)
        row[col["FISCAL_YEAR"]] = "2019"
        if dbn == MOVED:
            row[col["CENSUS_TRACT"]] = str(int(moved_to[5:]))  # the file drops leading zeros
            row[col["PRIMARY_ADDRESS_LINE_1"]] = NEW_ADDRESS
        out.append(row)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *out])


@pytest.fixture(scope="session")
def second_run(equity_warehouse, tmp_path_factory) -> tuple[Warehouse, str]:
    """A second build on a copy of the first, as the platform sees it when new data lands:
    through the source assets, a 2018-19 location extract (fiscal year 2019, from the
    shipped file) in which MOVED sits in another tract and CLOSED is gone, and an SVI 2020
    partition (the shipped file under another year); and the stream's Silver tables
    (stream_rows), so the live view and the stream models it reads are built too. One
    build for both scenarios: each dbt build is the bulk of these tests' time.
    Returns the warehouse and MOVED's new tract."""
    root = tmp_path_factory.mktemp("gold_equity_second_run")
    wh = copy_warehouse(equity_warehouse, root)
    moved_to = lowest_bucket_manhattan_tract()
    write_locations_2019(root / "school_locations_2018_19.csv", moved_to)
    wh.land_vintage("svi", "2020", raw.SVI_CSV)
    wh.land_vintage("school_locations", "2019", root / "school_locations_2018_19.csv")
    write_stream_silver(wh.lake)
    wh.dbt("build", *SECOND_RUN_SELECTION)
    return wh, moved_to
