"""The stream end to end on the real broker, lake, DuckDB and dbt: the producer's
ground truth against what lands in Silver, quarantine and Gold."""

from __future__ import annotations

import dataclasses
import shutil

import dagster as dg
import duckdb
import polars as pl
import pytest

from school_equity.kafka.producer import produce
from school_equity.lake import Lake
from school_equity.location import build_definitions
from school_equity.pipeline import batch_keys, drain_stream, run_batch, tick
from school_equity.settings import load_settings

pytestmark = pytest.mark.e2e

# columns that record when a row was processed, not what it says
PROCESSING_COLUMNS = {"ingested_at"}


def _table(lake: Lake, name: str) -> pl.DataFrame:
    """The table's content, independent of column order: a column added by schema evolution
    (v2's `language`) sits where the first batch carrying it put it, which depends on the order
    batches ran; Delta appends evolved columns, so only the set of columns is comparable."""
    df = pl.read_delta(lake.uri("silver", name))
    keep = sorted(c for c in df.columns if c not in PROCESSING_COLUMNS)
    return df.select(keep).sort(keep)


def _gold(warehouse: str, sql: str):
    con = duckdb.connect(warehouse, read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def _silver_versions_hash(subs: pl.DataFrame, answers: pl.DataFrame) -> int:
    """The producer's fingerprint of (submission_id, event time, answers) over Silver's winning versions."""
    from school_equity.kafka.events import versions_hash

    by_sub: dict[str, dict[str, int]] = {}
    for sid, qid, value in answers.select("submission_id", "question_id", "answer_value").iter_rows():
        by_sub.setdefault(sid, {})[qid] = int(value)
    times = subs.select("submission_id", pl.col("event_time").dt.epoch("us")).iter_rows()
    return versions_hash((sid, t_us, by_sub.get(sid, {})) for sid, t_us in times)


@pytest.fixture
def produced(stream_env, broker, topic_name, monkeypatch):
    monkeypatch.setenv("SCHOOL_EQUITY_BATCH_MIN_RECORDS", "1")
    monkeypatch.setenv("SCHOOL_EQUITY_BATCH_MIN_INTERVAL_S", "0")
    monkeypatch.setenv("SCHOOL_EQUITY_BATCH_MAX_RECORDS", "1500")
    # 6k events: ~60 malformed of every kind, late/duplicate/out-of-order events, the v2 switch
    report = produce(broker.bootstrap, topic_name, 6000, seed=11, partitions=3)
    assert set(report.stream.malformed) >= {"invalid_json", "missing_field", "unknown_dbn",
                                            "answer_out_of_range", "wrong_type"}
    assert report.stream.duplicates and report.stream.late and report.stream.corrections
    return report


def test_stream_lands_exactly_the_valid_submissions(produced, stream_env):
    settings = load_settings()
    defs = build_definitions(settings)
    lake = Lake(settings.lake_root)
    with dg.instance_for_test() as instance:
        run = drain_stream(defs, instance)
        assert len(run.batches) >= 4  # 6k records in batches of at most 1,500
        subs = pl.read_delta(lake.uri("silver", "survey_submissions"))
        stream = produced.stream
        # one row per valid distinct submission, as the producer counts them
        assert subs.height == subs["submission_id"].n_unique() == stream.valid_submissions
        # the newest version of each submission won (corrections, duplicates, out of order)
        assert _silver_versions_hash(subs, pl.read_delta(lake.uri("silver", "survey_answers"))) == \
            stream.final_versions_hash
        # v2's added field arrived as a new column
        assert "language" in subs.columns and subs["language"].is_not_null().any()
        assert subs.filter(pl.col("schema_version") == 1)["language"].is_null().all()

        # quarantine holds exactly the malformed records, with the right reasons
        q = pl.read_delta(lake.uri("silver", "survey_quarantine"))
        got = dict(q.group_by("reason_code").len().iter_rows())
        assert got == stream.malformed
        assert q["raw_payload"].is_not_null().all() and q["reason_detail"].str.len_chars().min() > 0

        # nothing lost: every Bronze record is either a submission version or quarantined
        bronze_rows = sum(pl.read_parquet(lake.uri(f)).height for f in lake.list("bronze/survey_events"))
        assert bronze_rows == stream.events

        # Gold totals match Silver
        wh = settings.warehouse_path
        assert _gold(wh, "select count(*) from main.fct_survey_response")[0][0] == subs.height
        assert _gold(wh, "select sum(submissions) from main.mart_live_response_daily")[0][0] == subs.height
        answers = pl.read_delta(lake.uri("silver", "survey_answers"))
        assert _gold(wh, "select count(*) from main.fct_survey_answer")[0][0] == answers.height
        assert _gold(wh, "select sum(quarantined_records) from main.mart_quarantine_summary")[0][0] == q.height


def test_batch_order_and_rematerialization_do_not_change_silver(produced, stream_env, tmp_path):
    base = load_settings()
    in_order = dataclasses.replace(base, lake_root=str(tmp_path / "lake_a"), warehouse_path=str(tmp_path / "a" / "warehouse.duckdb"),
                                   consumer_group=base.consumer_group + ".a")
    reverse = dataclasses.replace(base, lake_root=str(tmp_path / "lake_b"), warehouse_path=str(tmp_path / "b" / "warehouse.duckdb"),
                                  consumer_group=base.consumer_group + ".b")
    defs_a, defs_b = build_definitions(in_order), build_definitions(reverse)
    with dg.instance_for_test() as inst_a, dg.instance_for_test() as inst_b:
        # cut the batches once (lake A), then give lake B the same manifests
        cursor = None
        for _ in range(20):
            data = tick(defs_a, inst_a, cursor)
            cursor = data.cursor or cursor
            if not data.run_requests:
                break
        keys = batch_keys(inst_a)
        assert len(keys) >= 4
        shutil.copytree(tmp_path / "lake_a" / "_manifests", tmp_path / "lake_b" / "_manifests")
        inst_b.add_dynamic_partitions("survey_batches", keys)

        for k in keys:
            run_batch(defs_a, inst_a, k)
        for k in reversed(keys):
            run_batch(defs_b, inst_b, k)
        lake_a, lake_b = Lake(in_order.lake_root), Lake(reverse.lake_root)
        for table in ("survey_submissions", "survey_answers", "survey_quarantine"):
            assert _table(lake_a, table).equals(_table(lake_b, table)), table

        # re-materializing any batch changes nothing, in Silver or in Gold
        before = {t: _table(lake_a, t) for t in ("survey_submissions", "survey_answers", "survey_quarantine")}
        gold_before = _gold(in_order.warehouse_path, "select * from main.fct_survey_response order by 1")
        run_batch(defs_a, inst_a, keys[1])
        for t, df in before.items():
            assert _table(lake_a, t).equals(df), t
        assert _gold(in_order.warehouse_path, "select * from main.fct_survey_response order by 1") == gold_before
