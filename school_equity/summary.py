"""The short summary the headless run prints: what was produced, rows per layer,
quarantine reasons, a few Gold rows and the equity headline."""

from __future__ import annotations

import io

import duckdb
import polars as pl
import pyarrow.parquet as pq

from school_equity.lake import Lake
from school_equity.settings import Settings

SILVER_TABLES = ["survey_submissions", "survey_answers", "survey_quarantine",
                 "svi_tract", "school_survey_results", "school_location"]


def bronze_rows(lake: Lake) -> int:
    return sum(pq.ParquetFile(io.BytesIO(lake.read_bytes(f))).metadata.num_rows
               for f in lake.list("bronze/survey_events") if f.endswith(".parquet"))


def silver_frame(lake: Lake, table: str) -> pl.DataFrame | None:
    uri = lake.uri("silver", table)
    try:
        return pl.read_delta(uri, storage_options=lake.storage_options())
    except Exception:
        return None


def gold_query(settings: Settings, sql: str) -> pl.DataFrame | None:
    try:
        con = duckdb.connect(settings.warehouse_path, read_only=True)
    except Exception:
        return None
    try:
        return con.sql(sql).pl()
    except Exception:
        return None
    finally:
        con.close()


def layer_counts(settings: Settings) -> dict[str, int]:
    lake = Lake(settings.lake_root)
    out = {"bronze/survey_events": bronze_rows(lake)}
    for t in SILVER_TABLES:
        df = silver_frame(lake, t)
        if df is not None:
            out[f"silver/{t}"] = df.height
    tables = gold_query(settings, "select table_name from information_schema.tables where table_schema = 'main' "
                                  "order by table_name")
    for name in ([] if tables is None else tables["table_name"].to_list()):
        n = gold_query(settings, f'select count(*) as n from main."{name}"')
        if n is not None:
            out[f"gold/{name}"] = int(n["n"][0])
    return out


def print_summary(settings: Settings, report, timings: dict[str, float]) -> None:
    lake = Lake(settings.lake_root)
    print("\n=== school_equity: headless run summary ===")
    if report is not None:
        print("-- produced")
        from school_equity.kafka.producer import format_report

        print(format_report(report))
    print("-- rows per layer")
    for k, v in layer_counts(settings).items():
        print(f"  {k:45s} {v:>10,d}")
    q = silver_frame(lake, "survey_quarantine")
    if q is not None and q.height:
        print("-- quarantined records by reason")
        for row in q.group_by("reason_code").len().sort("len", descending=True).iter_rows():
            print(f"  {row[0]:30s} {row[1]:>8,d}")
        sample = q.sort("kafka_offset").head(3)
        for r in sample.iter_rows(named=True):
            print(f"  e.g. p{r['kafka_partition']}@{r['kafka_offset']}: {r['reason_code']} ({r['reason_detail']})")
    live = gold_query(settings, "select * from main.mart_live_response_daily order by submissions desc limit 5")
    if live is not None:
        print("-- gold: mart_live_response_daily (top 5 school x respondent type x day)")
        print(live)
    equity = gold_query(settings, """
        select dbn, survey_year, svi_bucket, svi_overall, parent_response_rate, student_response_rate
        from main.gold_school_equity
        where flag_high_vulnerability_low_response
        order by svi_overall desc nulls last, parent_response_rate asc nulls last
        limit 8""")
    if equity is not None:
        n = gold_query(settings, "select count(*) as n from main.gold_school_equity "
                                 "where flag_high_vulnerability_low_response")
        print(f"-- equity: {int(n['n'][0]) if n is not None else '?'} schools in high-vulnerability tracts with low "
              f"response; the most vulnerable:")
        print(equity)
    if timings:
        print("-- wall time by step: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
