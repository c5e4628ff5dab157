"""End to end: real Silver Delta tables in a tmp lake -> the stream dbt assets through
`dg.materialize` -> a real DuckDB warehouse. Three runs, each a real `dbt build`:

1. batch b1: facts hold exactly Silver's submissions/answers, marts agree with the
   facts, every dbt test ran as a passing asset check, every asset has row count and
   column schema metadata;
2. batch b2 (while Silver already holds a row of the later batch b3): exactly the rows
   b2 wrote change (delete+insert of a revised submission, whose dropped answer goes
   too); the b3 row stays out, so the window really filters;
3. a single-run backfill over b1..b4 that selects only the two facts: b3 and b4 land,
   rows of b1/b2 come back identical (idempotent), and b4, merged into Silver after run
   2, is seen although no stg_ view was selected (the run-start source copy).
"""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from assets_tests.gold.conftest import query, table_rows
from assets_tests.gold.silver_builder import Batch, Quarantined, Submission, at, revise, write_batch
from school_equity.gold import assets as gold_assets
from school_equity.gold.assets import dbt_resource as make_dbt_resource
from school_equity.gold.assets import gold_stream_models
from school_equity.kafka.partitions import SURVEY_BATCHES
from school_equity.settings import DBT_PROJECT_DIR

pytestmark = pytest.mark.e2e

GOLD = "gold"
STREAM_MODELS = [
    "stg_survey_submissions", "stg_survey_answers", "stg_survey_quarantine",
    "fct_survey_response", "fct_survey_answer", "mart_live_response_daily", "mart_quarantine_summary",
]

S1 = Submission("s1", "01M015", "parent", at(0), {"P01": 3, "P02": 4}, offset=0, batch_seq=1)
S2 = Submission("s2", "01M015", "parent", at(12), {"P01": 1, "P02": 2}, offset=1, batch_seq=1)
S3 = Submission("s3", "02M001", "student", at(30), {"S01": 4, "S02": 3}, offset=2, batch_seq=1)
Q1 = Quarantined(3, "invalid_json", batch_seq=1)

# b2 revises s2 (newer event, one answer dropped, schema v2 with language) and adds s4.
S2_V2 = revise(S2, event_time=at(13), answers={"P01": 4}, offset=10, batch_seq=2, language="es", schema_version=2)
S4 = Submission("s4", "02M001", "teacher", at(40), {"T01": 2}, offset=11, batch_seq=2)
Q2 = Quarantined(12, "unknown_dbn", batch_seq=2, submission_id="s9")
# b3 (merged into Silver before Gold's b2 run) revises s1; b4 (after it) revises s3.
S1_V3 = revise(S1, event_time=at(1), answers={"P01": 1, "P02": 1}, offset=20, batch_seq=3)
S3_V4 = revise(S3, event_time=at(31), answers={"S01": 1, "S02": 1}, offset=30, batch_seq=4)


def b(seq: int) -> str:
    return f"b{seq:09d}"


def silver_count(lake: str, table: str) -> int:
    return pl.read_delta(f"{lake}/silver/{table}").height


def facts(settings):
    responses = {r["submission_id"]: r for r in table_rows(settings, "fct_survey_response")}
    answers = {(r["submission_id"], r["question_id"]): r for r in table_rows(settings, "fct_survey_answer")}
    return responses, answers


def assert_marts_match_facts(settings):
    (n_resp, n_ans), = query(settings, "select (select count(*) from main.fct_survey_response),"
                                       " (select count(*) from main.fct_survey_answer)")
    (subs, resp, answers), = query(
        settings, "select sum(submissions), sum(respondents), sum(answers) from main.mart_live_response_daily")
    assert subs == resp == n_resp and answers == n_ans
    # The last day of every school x respondent type carries the running total of its days.
    mismatched = query(settings, """
        select dbn, respondent_type from main.mart_live_response_daily
        group by dbn, respondent_type
        having max(cumulative_submissions) <> sum(submissions)""")
    assert mismatched == []
    (q,), = query(settings, "select sum(quarantined_records) from main.mart_quarantine_summary")
    (stg_q,), = query(settings, "select count(*) from main.stg_survey_quarantine")
    assert q == stg_q


def dbt_log(result) -> str:
    """The dbt.log of the stream build in a run (dagster-dbt names the target folder
    <op>-<run id prefix>-<random>)."""
    logs = list((DBT_PROJECT_DIR / "target").glob(f"gold_stream_dbt-{result.run_id[:7]}-*/dbt.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text()


def test_stream_gold_batches_backfill_and_checks(gold_settings, instance):
    lake = gold_settings.lake_root
    dbt = make_dbt_resource(gold_settings)
    instance.add_dynamic_partitions(SURVEY_BATCHES, [b(1), b(2), b(3), b(4)])

    # -- run 1: batch b1 -----------------------------------------------------------------
    write_batch(lake, Batch([S1, S2, S3], [Q1]), drop_language=True)  # before any v2 event
    result = dg.materialize([gold_stream_models], instance=instance, partition_key=b(1), resources={"dbt": dbt})
    assert result.success

    responses, answers = facts(gold_settings)
    distinct_silver = pl.read_delta(f"{lake}/silver/survey_submissions")["submission_id"].n_unique()
    assert len(responses) == distinct_silver == 3
    assert len(answers) == silver_count(lake, "survey_answers") == 6
    assert all(r["language"] is None for r in responses.values())  # column absent in Silver yet
    assert_marts_match_facts(gold_settings)
    (avg,), = query(gold_settings, "select avg_answer_score from main.mart_live_response_daily"
                                   " where dbn = '01M015' and response_date = date '2026-03-02'")
    assert avg == pytest.approx(3.5)  # s1: (3 + 4) / 2

    # every dbt test became an asset check, and all of them ran and passed
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_check_key for e in evaluations} == set(gold_stream_models.check_keys)
    assert len(evaluations) >= 20 and all(e.passed for e in evaluations)
    checked = {e.asset_key for e in evaluations}
    assert checked == {dg.AssetKey([GOLD, m]) for m in STREAM_MODELS}

    materialized = {m.asset_key: m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert set(materialized) == {dg.AssetKey([GOLD, m]) for m in STREAM_MODELS}
    for key, metadata in materialized.items():
        assert "dagster/column_schema" in metadata, key
        assert "dagster/row_count" in metadata, key
    assert materialized[dg.AssetKey([GOLD, "fct_survey_response"])]["dagster/row_count"].value == 3
    assert materialized[dg.AssetKey([GOLD, "stg_survey_answers"])]["dagster/row_count"].value == 6

    # -- run 2: batch b2; Silver already holds a b3 row --------------------------------------
    write_batch(lake, Batch([S2_V2, S4], [Q2]))
    write_batch(lake, Batch([S1_V3], []))
    before_resp, before_ans = responses, answers
    result = dg.materialize([gold_stream_models], instance=instance, partition_key=b(2), resources={"dbt": dbt})
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    # The window changed, the parse state did not: dbt started from run 1's parse (kept
    # in target/ after it) instead of parsing the whole project again.
    log = dbt_log(result)
    assert "Unable to do partial parsing" not in log
    assert "Partial parsing enabled" in log

    responses, answers = facts(gold_settings)
    assert set(responses) == {"s1", "s2", "s3", "s4"}
    changed = {k for k in responses if responses[k] != before_resp.get(k)}
    assert changed == {"s2", "s4"}  # exactly the rows b2 wrote
    assert responses["s2"]["batch_seq"] == 2 and responses["s2"]["language"] == "es"
    assert responses["s1"] == before_resp["s1"]  # its b3 revision is outside [2, 3)
    assert ("s2", "P02") not in answers and answers[("s2", "P01")]["answer_value"] == 4
    assert {k: v for k, v in answers.items() if k[0] in ("s1", "s3")} == \
        {k: v for k, v in before_ans.items() if k[0] in ("s1", "s3")}
    assert_marts_match_facts(gold_settings)
    (q_b2,), = query(gold_settings, "select quarantined_records from main.mart_quarantine_summary"
                                    " where batch_id = 'b000000002' and reason_code = 'unknown_dbn'")
    assert q_b2 == 1

    # -- run 3: single-run backfill b1..b4 of the two facts only ------------------------------
    write_batch(lake, Batch([S3_V4], []))
    before_resp = responses
    result = dg.materialize(
        [gold_stream_models],
        instance=instance,
        resources={"dbt": dbt},
        selection=[dg.AssetKey([GOLD, "fct_survey_response"]), dg.AssetKey([GOLD, "fct_survey_answer"])],
        tags={"dagster/asset_partition_range_start": b(1), "dagster/asset_partition_range_end": b(4)},
    )
    assert result.success
    assert {m.asset_key for m in result.get_asset_materialization_events()} == {
        dg.AssetKey([GOLD, "fct_survey_response"]), dg.AssetKey([GOLD, "fct_survey_answer"])}

    responses, answers = facts(gold_settings)
    assert responses["s1"]["batch_seq"] == 3 and responses["s3"]["batch_seq"] == 4
    assert responses["s2"] == before_resp["s2"] and responses["s4"] == before_resp["s4"]
    assert answers[("s3", "S01")]["answer_value"] == 1  # b4 reached Gold through a fresh source copy
    assert len(responses) == silver_count(lake, "survey_submissions")
    assert len(answers) == silver_count(lake, "survey_answers")


def test_gold_between_two_commits_of_a_silver_step_stays_consistent(gold_settings, instance):
    """A Gold run reads Silver while another run's Silver step is between its submissions
    commit and its answers commit (they run side by side under `dagster dev`): the new
    version of a submission is in Silver, its answers are still the old version's. The
    run must pass its tests (answers only under submissions the facts carry) and the next
    window must bring the submission and its answers together."""
    lake = gold_settings.lake_root
    dbt = make_dbt_resource(gold_settings)
    instance.add_dynamic_partitions(SURVEY_BATCHES, [b(1), b(2), b(3)])
    s5 = Submission("s5", "01M015", "parent", at(50), {"P01": 2, "P02": 2}, offset=40, batch_seq=2)
    s5_v3 = revise(s5, event_time=at(51), answers={"P01": 4}, offset=41, batch_seq=3)

    def run(key: str):
        result = dg.materialize([gold_stream_models], instance=instance, partition_key=key, resources={"dbt": dbt})
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())

    write_batch(lake, Batch([S1], [Q1]))
    run(b(1))
    write_batch(lake, Batch([s5], []))
    write_batch(lake, Batch([s5_v3], []), tables=("submissions",))  # b3's Silver step, half done
    run(b(2))
    responses, answers = facts(gold_settings)
    assert "s5" not in responses and not any(k[0] == "s5" for k in answers)  # neither, not half of it
    write_batch(lake, Batch([s5_v3], []), tables=("answers",))
    run(b(3))
    responses, answers = facts(gold_settings)
    assert responses["s5"]["batch_seq"] == 3
    assert {k: v["answer_value"] for k, v in answers.items() if k[0] == "s5"} == {("s5", "P01"): 4}
    assert len(responses) == silver_count(lake, "survey_submissions")
    assert len(answers) == silver_count(lake, "survey_answers")
    assert_marts_match_facts(gold_settings)


def test_batch_window_comes_from_the_environment_or_vars_never_both(gold_settings, tmp_path):
    """The window macro as dbt runs it: Dagster's environment variables, or --vars by hand;
    both at once, or half of the environment pair, is a clear error naming the rule."""
    import os
    import subprocess
    from pathlib import Path

    from school_equity.gold.assets import dbt_executable
    from school_equity.gold.window import WINDOW_ENV

    def operation(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if k not in WINDOW_ENV.values()}
        full_env.update(env, DBT_TARGET_PATH=str(tmp_path / "target"), DBT_LOG_PATH=str(tmp_path / "logs"))
        return subprocess.run(
            [dbt_executable(), "run-operation", "batch_window", "--args", "{column: batch_seq}", *extra],
            cwd=DBT_PROJECT_DIR, env=full_env, capture_output=True, text=True, timeout=300, check=False)

    Path(gold_settings.warehouse_path).parent.mkdir(parents=True)  # DuckDB creates the file only
    lo, hi = WINDOW_ENV["min_batch_seq"], WINDOW_ENV["max_batch_seq_exclusive"]
    ok = operation({lo: "3", hi: "5"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    twice = operation({lo: "3", hi: "5"}, "--vars", '{"min_batch_seq": 3, "max_batch_seq_exclusive": 5}')
    assert twice.returncode != 0 and "batch window is given twice" in twice.stdout
    half = operation({lo: "3"})
    assert half.returncode != 0 and "go together" in half.stdout
    empty = operation({lo: "5", hi: "5"})
    assert empty.returncode != 0 and "empty batch window [5, 5)" in empty.stdout


def test_dbt_starts_before_the_adapter_a_failed_adapter_drops_only_metadata_old_targets_go(
    gold_settings, instance, monkeypatch, caplog
):
    """GoldDbtResource.cli starts dbt first and makes dagster-dbt's adapter while dbt
    starts up (the adapter's macro parse is ~2 s of a run worker's Gold step). The
    adapter still reaches the invocation (row counts, column schemas); one that cannot be
    made leaves the build and its checks alone and only drops that metadata. Each build
    removes the target folders of earlier builds beyond SCHOOL_EQUITY_DBT_TARGETS_KEEP."""
    from dagster_dbt import DbtCliResource
    from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

    order: list[str] = []
    real_run = DbtCliInvocation.run.__func__
    real_init = DbtCliResource._initialize_dbt_core_adapter

    def run(cls, *args, **kwargs):
        invocation = real_run(cls, *args, **kwargs)
        order.append("dbt started")
        return invocation

    def init(self, args):
        order.append("adapter")
        return real_init(self, args)

    monkeypatch.setattr(DbtCliInvocation, "run", classmethod(run))
    monkeypatch.setattr(DbtCliResource, "_initialize_dbt_core_adapter", init)
    # and each build prunes the target folders of earlier ones: here all but its own
    monkeypatch.setattr(gold_assets, "TARGET_MIN_AGE_S", 0.0)
    monkeypatch.setenv("SCHOOL_EQUITY_DBT_TARGETS_KEEP", "1")
    dbt = make_dbt_resource(gold_settings)
    instance.add_dynamic_partitions(SURVEY_BATCHES, [b(1), b(2)])
    write_batch(gold_settings.lake_root, Batch([S1, S2, S3], [Q1]))

    result = dg.materialize([gold_stream_models], instance=instance, partition_key=b(1), resources={"dbt": dbt})
    assert result.success
    assert order == ["dbt started", "adapter"]
    materialized = {m.asset_key: m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert set(materialized) == {dg.AssetKey([GOLD, m]) for m in STREAM_MODELS}
    assert all("dagster/column_schema" in md and "dagster/row_count" in md for md in materialized.values())
    assert materialized[dg.AssetKey([GOLD, "fct_survey_response"])]["dagster/row_count"].value == 3
    first_log = dbt_log(result)  # exactly one folder of this run
    first_folders = list((DBT_PROJECT_DIR / "target").glob(f"gold_stream_dbt-{result.run_id[:7]}-*"))

    def broken(self, args):
        order.append("adapter")
        raise RuntimeError("profile unreadable")

    order.clear()
    monkeypatch.setattr(DbtCliResource, "_initialize_dbt_core_adapter", broken)
    write_batch(gold_settings.lake_root, Batch([S4], []))
    result = dg.materialize([gold_stream_models], instance=instance, partition_key=b(2), resources={"dbt": dbt})
    assert result.success
    assert order == ["dbt started", "adapter"]
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) >= 20 and all(e.passed for e in evaluations)
    materialized = {m.asset_key: m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert set(materialized) == {dg.AssetKey([GOLD, m]) for m in STREAM_MODELS}
    assert not any("dagster/column_schema" in md for md in materialized.values())
    assert any(r.levelname == "WARNING" and "adapter for row counts and column schemas could not be made"
               in r.getMessage() for r in caplog.records)
    assert "Completed successfully" in first_log
    assert not any(p.exists() for p in first_folders)  # pruned by the second build
    assert list((DBT_PROJECT_DIR / "target").glob("gold_stream_dbt-*")) == [
        *(DBT_PROJECT_DIR / "target").glob(f"gold_stream_dbt-{result.run_id[:7]}-*")]
    assert (DBT_PROJECT_DIR / "target" / "partial_parse.msgpack").exists()
