"""The same equity models on the Snowflake adapter: dbt-snowflake against fakesnow (a
Snowflake-dialect server over DuckDB, in this process, on loopback), with the Silver tables
the shared fixture's source assets wrote. The build (seeds, snapshot, models, tests) must
pass, and the marts must hold the same values as on the DuckDB target.

fakesnow checks what a DuckDB run cannot: that the models compile with dbt-snowflake's
macros and that their SQL parses and runs as Snowflake SQL. It is not Snowflake; a
repeat snapshot and incremental merges need compatibility macros there, so this test
covers the first build only."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator

import polars as pl
import pytest
import snowflake.connector

from school_equity.settings import DBT_PROJECT_DIR, PROJECT_DIR

from ..fakesnow_server import server_module, start_server
from .conftest import DBT, EQUITY_NODES

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:Arrow output:UserWarning")]

# fakesnow.server (the function) is captured by the root conftest before its module shadows it.
_start_fakesnow = start_server
_fakesnow_server = server_module

DATABASE, SILVER, GOLD = "SCHOOL_EQUITY", "SILVER", "GOLD"
SILVER_TABLES = ("svi_tract", "school_survey_results", "school_location")
# dbt's own generic tests are portable by construction and already ran on DuckDB; the
# project's generic and singular tests are the ones whose SQL needs proving on Snowflake
# (and skipping the rest saves a hundred round trips).
BUILTIN_TESTS = [
    "test_name:not_null",
    "test_name:unique",
    "test_name:accepted_values",
    "test_name:relationships",
]


@pytest.fixture(scope="module")
def fake_snowflake(equity_warehouse, tmp_path_factory) -> Iterator[snowflake.connector.SnowflakeConnection]:
    work = tmp_path_factory.mktemp("gold_equity_snowflake")
    with _start_fakesnow() as kwargs:
        con = snowflake.connector.connect(**kwargs)
        con.cursor().execute(f"create database if not exists {DATABASE}")
        con.cursor().execute(f"create schema if not exists {DATABASE}.{SILVER}")
        # Test setup only: the Silver rows go straight into the server's DuckDB (row-by-row
        # inserts through the Snowflake API take minutes); the models then run through
        # dbt-snowflake and the Snowflake dialect like any client's SQL.
        duck = _fakesnow_server.shared_fs.duck_conn
        for name in SILVER_TABLES:
            duck.register(
                "silver_frame", pl.read_delta(str(equity_warehouse.lake / "silver" / name)).to_arrow()
            )
            duck.execute(
                f"create or replace table {DATABASE}.{SILVER}.{name.upper()} as select * from silver_frame"
            )
            duck.unregister("silver_frame")
        (work / "profiles.yml").write_text(
            textwrap.dedent(f"""\
            school_equity:
              target: fake
              outputs:
                fake:
                  type: snowflake
                  account: {kwargs["account"]}
                  user: {kwargs["user"]}
                  password: {kwargs["password"]}
                  host: {kwargs["host"]}
                  port: {kwargs["port"]}
                  protocol: {kwargs["protocol"]}
                  database: {DATABASE}
                  schema: {GOLD}
                  warehouse: TRANSFORMING
                  threads: 2
                  connect_retries: 0
                  connect_timeout: 10
            """)
        )
        env = {
            **os.environ,
            "SCHOOL_EQUITY_ENV": "fake",
            "SCHOOL_EQUITY_SILVER_DATABASE": DATABASE,
            "SCHOOL_EQUITY_SILVER_SCHEMA": SILVER,
        }
        cmd = [
            str(DBT),
            "build",
            "--select",
            *EQUITY_NODES,
            "--exclude",
            "gold_live_response_vs_published+",
            *BUILTIN_TESTS,
            "--profiles-dir",
            str(work),
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(work / "target"),
            "--log-path",
            str(work / "logs"),
        ]
        # a server error makes the connector retry for ever: the timeout bounds it
        proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-6000:]
        yield con
        con.close()


def snowflake_rows(con, sql: str) -> list[tuple]:
    return con.cursor().execute(sql).fetchall()


@pytest.mark.parametrize(
    ("table", "key", "columns"),
    [
        (
            "gold_school_equity",
            "dbn, survey_year",
            "tract_fips, svi_year, svi_match_status, svi_score, svi_bucket, parent_response_rate, climate_score, "
            "flag_high_vulnerability_low_response, flag_high_vulnerability_weak_climate",
        ),
        (
            "gold_climate_vulnerability",
            "tract_fips, svi_year",
            "svi_score, svi_bucket, svi_household_score, school_count, surveyed_school_count, avg_parent_response_rate",
        ),
        (
            "gold_district_summary",
            "district, survey_year",
            "borough, district_type, school_count, avg_parent_response_rate, avg_svi_score, "
            "high_vulnerability_low_response_school_count, high_vulnerability_school_share",
        ),
        ("gold_borough_summary", "borough, survey_year", "school_count, avg_climate_score, district_count"),
        ("dim_district", "district", "borough, is_charter_district, school_count, located_school_count"),
        ("dim_school", "dbn", "tract_geoid, is_current, location_fiscal_year"),
    ],
)
def test_snowflake_target_gives_the_duckdb_values(fake_snowflake, equity_warehouse, table, key, columns):
    sql = f"select {key}, {columns} from {{schema}}.{table} order by {key}"
    on_duckdb = equity_warehouse.query(sql.format(schema="main"))
    on_snowflake = snowflake_rows(fake_snowflake, sql.format(schema=f"{DATABASE}.{GOLD}"))
    assert len(on_snowflake) == len(on_duckdb) > 0
    for sf, dd in zip(on_snowflake, on_duckdb, strict=True):
        assert len(sf) == len(dd)
        for a, b in zip(sf, dd, strict=True):
            # averages may differ in the last bits between engines; everything else exactly
            assert a == (pytest.approx(b) if isinstance(b, float) else b), (table, dd)
