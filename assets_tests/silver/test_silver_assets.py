"""The Silver multi-asset with Dagster, on a real lake directory: Bronze batches written in
the Bronze layout, batch partitions on a test instance, materialized in process."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest

from assets_tests.silver.silver_events import (
    T0,
    bronze_table,
    encode,
    event,
    malformed_cases,
    write_bronze,
)
from school_equity.contracts.stream import QUARANTINE_REASONS
from school_equity.kafka.partitions import SURVEY_BATCHES
from school_equity.lake import Lake
from school_equity.resources import LakeResource
from school_equity.silver import assets as silver_assets
from school_equity.silver.assets import (
    ANSWERS_KEY,
    QUARANTINE_KEY,
    SILVER_ASSETS,
    SILVER_CHECKS,
    SILVER_POOL,
    SUBMISSIONS_KEY,
    silver_survey_stream,
)
from school_equity.silver.merge import SilverTables, read_table, table_version

B1, B2 = "b000000001", "b000000002"


def batch_one() -> list[bytes | None]:
    """Every malformed kind, two valid v1 submissions, and two versions of a third."""
    return [
        *[c[1] for c in malformed_cases()],
        encode(event("sub-a", answers={"P01": 1, "P02": 2, "P03": 3})),
        encode(event("sub-b", respondent_type="student", answers={"S01": 4, "S04": 1})),
        encode(event("sub-c", event_time=T0 + timedelta(minutes=5), answers={"T01": 2}, respondent_type="teacher")),
        encode(event("sub-c", event_time=T0, answers={"T01": 1, "T02": 1}, respondent_type="teacher")),  # late, older
    ]


def batch_two() -> list[bytes | None]:
    """Schema version 2, a newer version of sub-a with fewer answers, a stale duplicate of sub-b."""
    return [
        encode(event("sub-a", event_time=T0 + timedelta(hours=1), answers={"P02": 4}, schema_version=2,
                     language="es")),
        encode(event("sub-d", respondent_type="parent", answers={"P06": 3}, schema_version=2, language="bn")),
        encode(event("sub-b", respondent_type="student", answers={"S01": 4, "S04": 1})),  # same event time, later offset
        b"not json at all",
    ]


def land(lake: Lake) -> None:
    n1 = len(batch_one())
    write_bronze(lake, bronze_table(batch_one(), batch_id=B1, start_offset=0))
    write_bronze(lake, bronze_table(batch_two(), batch_id=B2, start_offset=n1))


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    land(lake)
    return lake


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(SURVEY_BATCHES, [B1, B2])
        yield inst


def run(lake: Lake, instance, partition_key: str | None = None, *, tags=None, raise_on_error=True):
    return dg.materialize(
        [*SILVER_ASSETS, *SILVER_CHECKS],
        instance=instance,
        resources={"lake": LakeResource(root=lake.root)},
        partition_key=partition_key,
        tags=tags,
        raise_on_error=raise_on_error,
    )


def tables(lake: Lake) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    t = SilverTables.in_lake(lake)
    subs = read_table(t.submissions).sort("submission_id")
    answers = read_table(t.answers).sort("submission_id", "question_id")
    quarantine = read_table(t.quarantine).sort("kafka_offset")
    return subs.select(sorted(subs.columns)), answers, quarantine


def materializations(result, key: dg.AssetKey) -> list:
    return [m for m in result.asset_materializations_for_node("silver_survey_stream") if m.asset_key == key]


def materialization_md(result, key: dg.AssetKey) -> dict:
    (mat,) = materializations(result, key)
    return {k: v.value if hasattr(v, "value") else v for k, v in mat.metadata.items()}


def test_definition_is_one_pooled_multi_asset_with_blocking_checks():
    spec_keys = {s.key for s in silver_survey_stream.specs}
    assert spec_keys == {SUBMISSIONS_KEY, ANSWERS_KEY, QUARANTINE_KEY}
    for spec in silver_survey_stream.specs:
        assert spec.group_name == "silver" and set(spec.kinds) == {"delta", "polars"}
        assert spec.owners == ["team:data-eng"] and spec.description
        assert {d.asset_key for d in spec.deps} == {dg.AssetKey(["bronze", "survey_events"])}
        assert isinstance(spec.metadata["dagster/column_schema"], dg.TableSchema)
    assert silver_survey_stream.partitions_def.name == SURVEY_BATCHES
    assert silver_survey_stream.backfill_policy == dg.BackfillPolicy.single_run()
    assert silver_survey_stream.op.pool == SILVER_POOL
    checks = {k: spec for c in SILVER_CHECKS for k, spec in c.check_specs_by_output_name.items()}
    by_asset = {}
    for spec in checks.values():
        assert spec.blocking
        by_asset.setdefault(spec.asset_key, set()).add(spec.name)
    assert by_asset[SUBMISSIONS_KEY] == {"contract_survey_submissions", "unique_key_survey_submissions"}
    assert by_asset[ANSWERS_KEY] == {"contract_survey_answers", "unique_key_survey_answers",
                                     "answers_match_winning_versions"}
    assert by_asset[QUARANTINE_KEY] == {"contract_survey_quarantine", "unique_key_survey_quarantine"}


def test_batches_land_in_silver_with_quarantine_reasons_metadata_and_idempotent_reruns(lake, instance):
    first = run(lake, instance, B1)
    assert first.success
    assert all(e.passed for e in first.get_asset_check_evaluations())
    assert len(first.get_asset_check_evaluations()) == 7
    subs, answers, quarantine = tables(lake)
    assert subs["submission_id"].to_list() == ["sub-a", "sub-b", "sub-c"]
    assert "language" not in subs.columns
    sub_c = subs.filter(pl.col("submission_id") == "sub-c").row(0, named=True)
    assert sub_c["event_time"] == T0 + timedelta(minutes=5) and sub_c["answer_count"] == 1
    assert answers.filter(pl.col("submission_id") == "sub-c").select("question_id", "answer_value").rows() == [("T01", 2)]
    cases = malformed_cases()
    assert quarantine.select("reason_code").to_series().to_list() == [c[2] for c in cases]
    for (name, _payload, _reason, fragment), detail in zip(cases, quarantine["reason_detail"], strict=True):
        assert fragment in detail, name
    assert quarantine["batch_id"].unique().to_list() == [B1]

    md = materialization_md(first, SUBMISSIONS_KEY)
    assert md["dagster/row_count"] == 3 and md["dagster/partition_row_count"] == 3
    assert md["records"] == len(batch_one()) == md["valid_records"] + md["quarantined_records"]
    assert md["inserted"] == 3 and md["delta_version"] == 1  # created with no rows (0), then the batch
    assert md["dagster/uri"] == lake.uri("silver/survey_submissions")
    assert [c.name for c in md["dagster/column_schema"].columns] == [
        c for c in read_table(lake.uri("silver/survey_submissions")).columns
    ]
    qmd = materialization_md(first, QUARANTINE_KEY)
    expected = {r: sum(1 for c in cases if c[2] == r) for r in QUARANTINE_REASONS}
    assert qmd["quarantined_by_reason"] == expected == qmd["table_by_reason"]
    assert qmd["quarantined/invalid_json"] == expected["invalid_json"]
    assert materialization_md(first, ANSWERS_KEY)["dagster/row_count"] == 6

    second = run(lake, instance, B2)
    assert second.success and all(e.passed for e in second.get_asset_check_evaluations())
    subs, answers, quarantine = tables(lake)
    assert dict(subs.select("submission_id", "language").rows()) == {
        "sub-a": "es", "sub-b": None, "sub-c": None, "sub-d": "bn"
    }
    assert subs.filter(pl.col("submission_id") == "sub-b")["batch_id"].item() == B2  # later offset wins a tie
    assert answers.filter(pl.col("submission_id") == "sub-a").select("question_id", "answer_value").rows() == [
        ("P02", 4)
    ]
    assert quarantine.height == len(cases) + 1
    amd = materialization_md(second, ANSWERS_KEY)
    # sub-d P06 new; sub-a P02 and sub-b's two answers (now from a later offset) updated; sub-a P01, P03 gone
    assert (amd["inserted"], amd["updated"], amd["deleted"]) == (1, 3, 2)

    # re-materializing a batch (a backfill) changes nothing, not even the Delta versions
    t = SilverTables.in_lake(lake)
    before, versions = tables(lake), [table_version(u) for u in (t.submissions, t.answers, t.quarantine)]
    again = run(lake, instance, B1)
    assert again.success
    assert [table_version(u) for u in (t.submissions, t.answers, t.quarantine)] == versions
    for x, y in zip(before, tables(lake), strict=True):
        assert x.equals(y)
    md = materialization_md(again, SUBMISSIONS_KEY)
    assert (md["inserted"], md["updated"]) == (0, 0)


def test_a_range_in_one_run_equals_batches_in_reverse_order(tmp_path, instance):
    ranged, reverse = Lake(str(tmp_path / "ranged")), Lake(str(tmp_path / "reverse"))
    land(ranged)
    land(reverse)
    result = run(ranged, instance, tags={
        "dagster/asset_partition_range_start": B1, "dagster/asset_partition_range_end": B2,
    })
    assert result.success
    mats = materializations(result, SUBMISSIONS_KEY)  # one per batch partition of the range
    assert sorted(m.partition for m in mats) == [B1, B2]
    assert all(m.metadata["batch_ids"].value == [B1, B2] for m in mats)
    assert "dagster/partition_row_count" not in mats[0].metadata
    # the run reports each batch of the range, and the range's totals are their sums
    md = {k: v.value if hasattr(v, "value") else v for k, v in mats[0].metadata.items()}
    assert [b["batch_id"] for b in md["per_batch"]] == [B1, B2]
    assert md["records"] == sum(b["records"] for b in md["per_batch"]) > 0
    assert md["quarantined_records"] == sum(b["quarantined"] for b in md["per_batch"])
    (qmat, _) = materializations(result, QUARANTINE_KEY)
    qmd = {k: v.value if hasattr(v, "value") else v for k, v in qmat.metadata.items()}
    assert sum(qmd["quarantined_by_reason"].values()) == md["quarantined_records"]
    assert run(reverse, instance, B2).success and run(reverse, instance, B1).success
    for x, y in zip(tables(ranged), tables(reverse), strict=True):
        assert x.equals(y)


def test_bad_frames_never_land(lake, instance, monkeypatch):
    real_parse = silver_assets.parse_batch

    def corrupted(bronze):
        parsed = real_parse(bronze)
        values = parsed.answer_rows.values.with_columns(answer_value=pl.lit(9, pl.Int16))
        return parsed._replace(answer_rows=dataclasses.replace(parsed.answer_rows, values=values))

    monkeypatch.setattr(silver_assets, "parse_batch", corrupted)
    result = run(lake, instance, B1, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else ""
    message += failure.step_failure_data.error.message
    assert "silver/survey_answers" in message and "less_than_or_equal_to(5)" in message
    assert not any(Lake(lake.root).list("silver"))  # nothing was written, not even the quarantine


def test_missing_bronze_batch_fails_with_a_clear_message(tmp_path, instance):
    result = run(Lake(str(tmp_path / "empty")), instance, B1, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = str(failure.step_failure_data.error.cause or "") + failure.step_failure_data.error.message
    assert "no Bronze files" in text and B1 in text


def test_checks_of_a_batch_run_read_what_the_batch_wrote(lake, instance):
    """A batch run's Silver checks validate the rows its batch wrote (memory and time follow
    the batch, not the table), yet a key duplicated by an older row is still found."""
    run(lake, instance, B1)
    result = run(lake, instance, B2)
    evals = {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}
    subs, answers, _ = tables(lake)
    contract = evals[(SUBMISSIONS_KEY, "contract_survey_submissions")]
    assert contract.passed and "b000000002..b000000002" in contract.metadata["scope"].value
    assert contract.metadata["rows_checked"].value == subs.filter(pl.col("batch_seq") == 2).height < subs.height
    assert evals[(ANSWERS_KEY, "contract_survey_answers")].metadata["rows_checked"].value == \
        answers.filter(pl.col("batch_seq") == 2).height
    assert evals[(ANSWERS_KEY, "answers_match_winning_versions")].passed

    # an older row (batch 1) that repeats the key of a row batch 2 wrote
    from deltalake import write_deltalake

    t = SilverTables.in_lake(lake)
    dup = subs.filter(pl.col("batch_seq") == 2).head(1).with_columns(batch_seq=pl.lit(1, pl.Int64),
                                                                       batch_id=pl.lit(B1))
    write_deltalake(t.submissions, dup.select(read_table(t.submissions).columns).to_arrow(), mode="append")
    result = run(lake, instance, B2, raise_on_error=False)
    evals = {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}
    unique = evals[(SUBMISSIONS_KEY, "unique_key_survey_submissions")]
    assert not unique.passed and unique.metadata["duplicate_keys"].value == 1
