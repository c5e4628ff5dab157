"""The short summary the headless run prints: what was produced, rows per layer,
quarantine reasons, a few Gold rows and the equity headline."""

from __future__ import annotations

import duckdb
import polars as pl

from school_equity.lake import Lake
from school_equity.settings import Settings
from school_equity.silver.merge import table_exists, table_row_count

SILVER_TABLES = ["survey_submissions", "survey_answers", "survey_quarantine",
                 "svi_tract", "school_survey_results", "school_location"]


def bronze_rows(lake: Lake) -> int:
    return sum(lake.parquet_num_rows(f) for f in lake.list("bronze/survey_events") if f.endswith(".parquet"))


def silver_frame(lake: Lake, table: str) -> pl.DataFrame | None:
    uri = lake.uri("silver", table)
    try:
        return pl.read_delta(uri, storage_options=lake.storage_options())
    except Exception:
        return None


def gold_query(settings: Settings, sql: str, *, quiet: bool = False) -> pl.DataFrame | None:
    """Run a query on the warehouse; a missing warehouse or table prints why and gives None."""
    try:
        con = duckdb.connect(settings.warehouse_path, read_only=True)
    except duckdb.Error as e:
        if not quiet:
            print(f"  (warehouse {settings.warehouse_path} not readable: {e})")
        return None
    try:
        return con.sql(sql).pl()
    except duckdb.Error as e:
        if not quiet:
            print(f"  (query failed: {str(e).splitlines()[0]})")
        return None
    finally:
        con.close()


def print_table(df: pl.DataFrame) -> None:
    """A compact fixed-width table (no dtype rows, no truncation) for the terminal."""
    rows = [[("" if v is None else str(v)) for v in r] for r in df.iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(df.columns)]
    print("   " + "  ".join(c.ljust(w) for c, w in zip(df.columns, widths, strict=True)))
    for r in rows:
        print("   " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def layer_counts(settings: Settings) -> dict[str, int]:
    lake = Lake(settings.lake_root)
    out = {"bronze/survey_events": bronze_rows(lake)}
    for t in SILVER_TABLES:
        uri = lake.uri("silver", t)
        # a count, not a read: the answers table of a 1M-event run is 5.6M rows
        if table_exists(uri, lake.storage_options()):
            out[f"silver/{t}"] = table_row_count(uri, lake.storage_options())
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
    live = gold_query(settings, """
        select dbn, respondent_type, response_date, submissions, round(avg_answer_score, 2) as avg_score,
               cumulative_submissions as cumulative
        from main.mart_live_response_daily
        order by submissions desc, dbn, respondent_type, response_date limit 5""")
    if live is not None:
        print("-- gold: mart_live_response_daily (busiest school x respondent type x day)")
        print_table(live)
    flagged = gold_query(settings, """
        select count(*) filter (where flag_high_vulnerability_low_response) as low_response,
               count(*) filter (where flag_high_vulnerability_weak_climate) as weak_climate,
               count(*) filter (where svi_bucket_order = (select max(bucket_order) from main.dim_svi_bucket))
                   as highest_bucket,
               count(*) filter (where svi_match_status <> 'matched') as no_svi,
               count(*) as schools
        from main.gold_school_equity""")
    equity = gold_query(settings, """
        select dbn, left(school_name, 34) as school, borough, svi_bucket, round(svi_score, 3) as svi,
               round(parent_response_rate, 2) as parent_rr, round(student_response_rate, 2) as student_rr
        from main.gold_school_equity
        where svi_bucket_order = (select max(bucket_order) from main.dim_svi_bucket)
          and parent_response_rate is not null
        order by parent_response_rate, svi_score desc, dbn
        limit 5""")
    if flagged is not None and equity is not None:
        f = flagged.row(0, named=True)
        print(f"-- equity: of {f['schools']:,} surveyed schools, {f['highest_bucket']:,} sit in the highest SVI "
              f"bucket; {f['low_response']:,} are flagged high vulnerability + low parent response, "
              f"{f['weak_climate']:,} high vulnerability + weak climate; {f['no_svi']:,} have no tract SVI")
        print("   highest-vulnerability bucket, lowest parent response:")
        print_table(equity)
    if timings:
        print("-- wall time by step: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
