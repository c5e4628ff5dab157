"""The same stream models on Snowflake's API: `dbt build` with dbt-snowflake against a
fakesnow server on loopback (target `snowflake_fake` in profiles.yml).

Silver is loaded as ordinary Snowflake tables, the shape a Snowflake deployment reads
(external/Iceberg tables over the lake, or tables loaded from a stage). Two builds: all of
Silver, then the batch window [2, 3) after Silver revised one submission and gained the
schema-v2 column `language` (ALTER TABLE, as Iceberg schema evolution would). This checks
that the SQL is portable (cross-db macros, the Snowflake variant of utc_date, incremental
delete+insert, the optional-column lookup through Snowflake's catalog); it does not check
Snowflake's performance or its real type system. fakesnow answers through DuckDB.

dbt runs in a subprocess with a timeout: when a fake server answers with an error the
Snowflake connector retries for ever.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import polars as pl
import pytest

from assets_tests.gold.silver_builder import (
    Quarantined,
    Submission,
    answers_frame,
    at,
    quarantine_frame,
    revise,
    submissions_frame,
)
from school_equity.gold.assets import dbt_executable
from school_equity.settings import DBT_PROJECT_DIR

fakesnow = pytest.importorskip("fakesnow")
from ..fakesnow_server import start_server  # noqa: E402

snowflake_connector = pytest.importorskip("snowflake.connector")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning"),
]

DATABASE = "SCHOOL_EQUITY_CI"  # profiles.yml, target snowflake_fake
DBT_TIMEOUT_S = 240

S1 = Submission("s1", "01M015", "parent", at(0), {"P01": 3, "P02": 4}, offset=0, batch_seq=1)
S2 = Submission("s2", "01M015", "parent", at(12), {"P01": 1, "P02": 2}, offset=1, batch_seq=1)
S3 = Submission("s3", "02M001", "student", at(30), {"S01": 4}, offset=2, batch_seq=1)
S2_V2 = revise(
    S2, event_time=at(13), answers={"P01": 4}, offset=10, batch_seq=2, language="es", schema_version=2
)


def _sf_type(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "VARCHAR"
    if dtype in (pl.Int16, pl.Int32):
        return "INTEGER"
    if dtype == pl.Int64:
        return "BIGINT"
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP_TZ"
    raise TypeError(dtype)


def _literal(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, dt.datetime):
        return f"'{v.isoformat()}'::TIMESTAMP_TZ"
    return str(v)


def _insert(cur, table: str, df: pl.DataFrame) -> None:
    if df.height:
        rows = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in df.iter_rows())
        cur.execute(f"insert into {DATABASE}.SILVER.{table} ({', '.join(df.columns)}) values {rows}")


def _create(cur, table: str, df: pl.DataFrame) -> None:
    cols = ", ".join(f"{c} {_sf_type(t)}" for c, t in df.schema.items())
    cur.execute(f"create or replace table {DATABASE}.SILVER.{table} ({cols})")
    _insert(cur, table, df)


def _dbt(port: int, tmp_path, *args: str) -> str:
    # Own target and log paths: the project's target/manifest.json is the DuckDB manifest
    # Dagster loads, and must not be replaced by a Snowflake one.
    cmd = [
        dbt_executable(),
        *args,
        "--target",
        "snowflake_fake",
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(tmp_path / "target"),
        "--log-path",
        str(tmp_path / "logs"),
    ]
    env = dict(os.environ, FAKESNOW_PORT=str(port), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    try:
        proc = subprocess.run(
            cmd, cwd=DBT_PROJECT_DIR, env=env, capture_output=True, text=True, timeout=DBT_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(
            f"dbt on fakesnow did not finish in {DBT_TIMEOUT_S} s (connector retrying?):\n{out[-4000:]}"
        )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture
def snowflake(tmp_path):
    with start_server() as conn_kwargs:
        con = snowflake_connector.connect(**conn_kwargs)
        try:
            yield conn_kwargs["port"], con.cursor()
        finally:
            con.close()


def test_stream_models_build_incrementally_on_snowflake(snowflake, tmp_path):
    port, cur = snowflake
    cur.execute(f"create or replace database {DATABASE}")
    cur.execute(f"create schema {DATABASE}.SILVER")
    # Before the first schema-version-2 event: no LANGUAGE column yet.
    _create(cur, "SURVEY_SUBMISSIONS", submissions_frame([S1, S2, S3]).drop("language"))
    _create(cur, "SURVEY_ANSWERS", answers_frame([S1, S2, S3]))
    _create(cur, "SURVEY_QUARANTINE", quarantine_frame([Quarantined(3, "invalid_json", batch_seq=1)]))

    _dbt(port, tmp_path, "build", "--select", "tag:stream")
    cur.execute(
        f"select submission_id, batch_seq, language from {DATABASE}.GOLD.FCT_SURVEY_RESPONSE order by 1"
    )
    assert cur.fetchall() == [("s1", 1, None), ("s2", 1, None), ("s3", 1, None)]
    cur.execute(f"select count(*) from {DATABASE}.GOLD.FCT_SURVEY_ANSWER")
    assert cur.fetchall() == [(5,)]

    # Batch 2 as Silver would leave it: the column added, s2's newest version replacing the old.
    cur.execute(f"alter table {DATABASE}.SILVER.SURVEY_SUBMISSIONS add column LANGUAGE VARCHAR")
    for table in ("SURVEY_SUBMISSIONS", "SURVEY_ANSWERS"):
        cur.execute(f"delete from {DATABASE}.SILVER.{table} where submission_id = 's2'")
    _insert(cur, "SURVEY_SUBMISSIONS", submissions_frame([S2_V2]))
    _insert(cur, "SURVEY_ANSWERS", answers_frame([S2_V2]))

    _dbt(
        port,
        tmp_path,
        "build",
        "--select",
        "tag:stream",
        "--vars",
        '{"min_batch_seq": 2, "max_batch_seq_exclusive": 3}',
    )
    cur.execute(
        f"select submission_id, batch_seq, language from {DATABASE}.GOLD.FCT_SURVEY_RESPONSE order by 1"
    )
    assert cur.fetchall() == [("s1", 1, None), ("s2", 2, "es"), ("s3", 1, None)]
    cur.execute(
        f"select submission_id, question_id, answer_value from {DATABASE}.GOLD.FCT_SURVEY_ANSWER"
        " where submission_id = 's2'"
    )
    assert cur.fetchall() == [("s2", "P01", 4)]
    cur.execute(
        f"select sum(submissions), sum(answers), max(cumulative_submissions)"
        f" from {DATABASE}.GOLD.MART_LIVE_RESPONSE_DAILY where dbn = '01M015'"
    )
    assert cur.fetchall() == [(2, 3, 2)]
    cur.execute(
        f"select response_date, avg_answer_score from {DATABASE}.GOLD.MART_LIVE_RESPONSE_DAILY"
        " where dbn = '01M015' order by 1"
    )
    assert cur.fetchall() == [(dt.date(2026, 3, 2), 3.5), (dt.date(2026, 3, 3), 4.0)]
