"""The generic contract machinery: validation before a write, the generated asset
checks (run for real against a table in a temporary lake) and the schema metadata."""

from __future__ import annotations

import io

import dagster as dg
import pandera.polars as pa
import polars as pl
import pytest
from pandera.config import ValidationDepth, config_context

from school_equity.contracts.checks import (
    ContractViolation,
    contract_check_name,
    contract_checks,
    duplicate_keys,
    rows_sharing_keys,
    table_schema,
    unique_key_check_name,
    unique_key_check_result,
    validate_frame,
    validate_or_raise,
    validate_parts_or_raise,
)
from school_equity.lake import Lake
from school_equity.resources import LakeResource

RESPONDENT_TYPES = ["parent", "teacher", "student"]


class Answers(pa.DataFrameModel):
    submission_id: str = pa.Field(nullable=False, str_length={"min_value": 1}, description="the submission")
    question_id: str = pa.Field(nullable=False)
    answer_value: pl.Int16 = pa.Field(ge=1, le=5)
    respondent_type: str = pa.Field(isin=RESPONDENT_TYPES)

    class Config:
        name = "test/answers"
        strict = True
        unique = ["submission_id", "question_id"]


def good() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "submission_id": ["s1", "s1", "s2"],
            "question_id": ["P01", "P02", "P01"],
            "answer_value": pl.Series([1, 4, 5], dtype=pl.Int16),
            "respondent_type": ["parent", "parent", "teacher"],
        }
    )


def test_good_frame_passes_and_is_returned_unchanged():
    df = good()
    assert validate_or_raise(df, Answers) is df
    assert validate_frame(df, Answers).passed


def test_bad_frame_fails_naming_table_rule_and_records():
    df = good().with_columns(
        answer_value=pl.Series([1, 9, 5], dtype=pl.Int16), respondent_type=pl.Series(["parent", "parent", "alien"])
    )
    with pytest.raises(ContractViolation) as exc:
        validate_or_raise(df, Answers, "silver/my_answers")
    msg = str(exc.value)
    assert "silver/my_answers" in msg
    assert "answer_value: less_than_or_equal_to(5) x1" in msg
    assert "isin" in msg and "alien" in msg
    report = exc.value.report
    assert report.failing_rows == 2
    assert [r["_row"] for r in report.sample] == [1, 2]
    assert report.sample[0]["answer_value"] == 9
    assert report.sample[0]["_rules"] == ["answer_value: less_than_or_equal_to(5)"]


def test_parts_are_validated_as_one_frame():
    df = good()
    assert validate_parts_or_raise([df.head(2), df.tail(1)], Answers) == 3
    bad = df.with_columns(answer_value=pl.Series([9, 4, 0], dtype=pl.Int16))
    with pytest.raises(ContractViolation) as exc:
        validate_parts_or_raise([bad.head(2), bad.head(0), bad.tail(1)], Answers, "silver/my_answers")
    report = exc.value.report
    # one report of every part's failures, rows numbered across the parts
    assert report.table == "silver/my_answers" and report.rows == 3 and report.failing_rows == 2
    assert [r["_row"] for r in report.sample] == [0, 2]
    assert [r["answer_value"] for r in report.sample] == [9, 0]
    assert "less_than_or_equal_to(5) x1" in str(exc.value) and "greater_than_or_equal_to(1) x1" in str(exc.value)


def test_data_rules_run_even_when_environment_asks_for_schema_only():
    # A LazyFrame, or PANDERA_VALIDATION_DEPTH=SCHEMA_ONLY, would skip the range
    # rule and pass this frame: the contract validation must not.
    bad = good().with_columns(answer_value=pl.Series([0, 1, 1], dtype=pl.Int16))
    with config_context(validation_depth=ValidationDepth.SCHEMA_ONLY):
        assert Answers.validate(bad.lazy()).collect().height == 3  # what a naive check would see
        assert not validate_frame(bad, Answers).passed
        assert not validate_frame(bad.lazy(), Answers).passed
    with config_context(validation_enabled=False):
        assert not validate_frame(bad, Answers).passed


def test_schema_failures_are_reported_without_rows():
    df = good().drop("respondent_type").with_columns(answer_value=pl.col("answer_value").cast(pl.Int64))
    report = validate_frame(df, Answers)
    rules = {(r["column"], r["check"]) for r in report.by_rule()}
    assert ("test/answers", "column_in_dataframe") in rules
    assert ("answer_value", "dtype('Int16')") in rules


def test_missing_key_column_is_reported_as_a_contract_failure():
    report = validate_frame(good().drop("question_id"), Answers)
    assert ("test/answers", "column_in_dataframe") in {(r["column"], r["check"]) for r in report.by_rule()}


def test_duplicate_key_fails_on_write():
    dup = pl.concat([good(), good().head(1)])
    with pytest.raises(ContractViolation, match="multiple_fields_uniqueness"):
        validate_or_raise(dup, Answers)


@pytest.mark.parametrize("buckets", [1, 2])
def test_uniqueness_on_write_is_exact_when_key_hashes_collide(monkeypatch, buckets):
    """Distinct key hashes skip Pandera's uniqueness rule; repeated ones (here forced by a
    weak hash) must run it, which passes distinct keys and still names a real duplicate."""
    from school_equity.contracts import checks

    monkeypatch.setattr(checks, "key_hash", lambda key: pl.struct(list(key)).hash(seed=0) % buckets)
    assert checks._may_repeat_keys(good(), ["submission_id", "question_id"])
    assert validate_frame(good(), Answers).passed
    report = validate_frame(pl.concat([good(), good().tail(1)]), Answers)
    assert {r["check"] for r in report.by_rule()} == {"multiple_fields_uniqueness"}
    assert report.failing_rows == 2  # both rows of the duplicated key (s2, P01)


def test_uniqueness_rule_runs_only_when_key_hashes_repeat(monkeypatch):
    from school_equity.contracts import checks

    assert not checks._may_repeat_keys(good(), ["submission_id", "question_id"])
    assert checks._may_repeat_keys(pl.concat([good(), good().head(1)]), ["submission_id", "question_id"])
    assert not checks._may_repeat_keys(good().head(1), ["submission_id", "question_id"])
    # the skipped rule is the only difference: a frame with distinct keys reports the same
    monkeypatch.setattr(checks, "_may_repeat_keys", lambda df, key: True)
    assert validate_frame(good(), Answers).passed


def test_table_schema_from_contract():
    ts = table_schema(Answers)
    cols = {c.name: c for c in ts.columns}
    assert list(cols) == ["submission_id", "question_id", "answer_value", "respondent_type"]
    assert cols["answer_value"].type == "Int16"
    assert cols["submission_id"].description == "the submission"
    assert cols["answer_value"].constraints.nullable is False
    assert "less_than_or_equal_to(5)" in cols["answer_value"].constraints.other
    assert ts.constraints.other == ["unique key: (submission_id, question_id)"]
    assert [c.name for c in table_schema(Answers, ["question_id"]).columns] == ["question_id"]


# -- the generated checks, run by Dagster against a real table ----------------------
TABLE = "test/answers.parquet"


def read_table(lake: Lake) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(lake.read_bytes(TABLE)))


def run_checks(tmp_path, frame: pl.DataFrame) -> dict[str, dg.AssetCheckEvaluation]:
    @dg.asset(key=["test", "answers"])
    def answers(lake: LakeResource) -> None:
        buf = io.BytesIO()
        frame.write_parquet(buf)
        lake.get_lake().write_bytes_atomic(TABLE, buf.getvalue())

    checks = contract_checks(["test", "answers"], Answers, read_table)
    result = dg.materialize(
        [answers, *checks], resources={"lake": LakeResource(root=str(tmp_path))}, raise_on_error=False
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_generated_checks_pass_on_a_good_table(tmp_path):
    evals = run_checks(tmp_path, good())
    assert set(evals) == {contract_check_name(Answers), unique_key_check_name(Answers)}
    assert {"contract_answers", "unique_key_answers"} == set(evals)
    assert all(e.passed for e in evals.values())
    assert evals["contract_answers"].metadata["rows_checked"].value == 3


def test_generated_checks_report_rule_failures_and_duplicates(tmp_path):
    bad = pl.concat([good(), good().head(1)]).with_columns(
        answer_value=pl.Series([1, 4, 7, 1], dtype=pl.Int16)
    )
    evals = run_checks(tmp_path, bad)
    contract, unique = evals["contract_answers"], evals["unique_key_answers"]
    assert not contract.passed and not unique.passed
    assert contract.severity == dg.AssetCheckSeverity.ERROR
    md = contract.metadata
    assert md["failure_count"].value == 1
    rules = md["failures_by_rule_json"].value
    assert rules == [{"column": "answer_value", "check": "less_than_or_equal_to(5)", "count": 1, "examples": ["7"]}]
    assert md["failure_sample"].value[0]["answer_value"] == 7
    # the key is reported once, by its own check, not again by the contract check
    assert unique.metadata["duplicate_keys"].value == 1
    assert unique.metadata["duplicate_sample"].value == [{"submission_id": "s1", "question_id": "P01", "_count": 2}]


def test_generated_checks_are_blocking_by_default():
    (defn,) = contract_checks(["test", "answers"], Answers, read_table)
    specs = {s.name: s for s in defn.check_specs}
    assert specs["contract_answers"].blocking and specs["unique_key_answers"].blocking
    (nb,) = contract_checks(["test", "answers"], Answers, read_table, blocking=False, unique_key=["submission_id"])
    assert not any(s.blocking for s in nb.check_specs)
    assert "(submission_id)" in {s.name: s for s in nb.check_specs}["unique_key_answers"].description


def _shared_case():
    table = pl.DataFrame({
        "submission_id": ["a", "a", "b", "c", "d", "d", "e"],
        "question_id": ["q1", "q2", "q1", "q1", "q1", "q1", "q9"],
        "n": range(7),
    })
    wanted = pl.DataFrame({"submission_id": ["a", "d", "x"], "question_id": ["q1", "q1", "q1"]})
    return table, wanted


def test_rows_sharing_keys_counts_the_sharing_rows_and_finds_the_duplicate():
    table, wanted = _shared_case()
    shared = rows_sharing_keys(table.lazy(), wanted, ["submission_id", "question_id"])
    # (a, q1) once, (d, q1) twice, (x, q1) not in the table
    assert shared.rows == 3
    dups = duplicate_keys(shared.candidates, ["submission_id", "question_id"])
    assert dups.rows() == [("d", "q1", 2)]


@pytest.mark.parametrize("buckets", [1, 2, 3])
def test_rows_sharing_keys_is_exact_when_hashes_collide(monkeypatch, buckets):
    """A weak hash (every key in a few buckets) makes unrelated keys look repeated; comparing
    the candidates' real keys must still find exactly the one duplicate."""
    from school_equity.contracts import checks

    monkeypatch.setattr(checks, "key_hash", lambda key: pl.struct(list(key)).hash(seed=0) % buckets)
    table, wanted = _shared_case()
    shared = rows_sharing_keys(table.lazy(), wanted, ["submission_id", "question_id"])
    if buckets == 1:
        assert shared.rows == table.height  # every row collides with a wanted key
    assert shared.candidates.height >= 2
    assert duplicate_keys(shared.candidates, ["submission_id", "question_id"]).rows() == [("d", "q1", 2)]
    result = unique_key_check_result(shared, ["submission_id", "question_id"], check_name="unique")
    assert not result.passed and result.metadata["duplicate_keys"].value == 1
    assert result.metadata["rows_checked"].value == shared.rows


def test_rows_sharing_keys_without_repeats_reads_no_candidates():
    table, wanted = _shared_case()
    shared = rows_sharing_keys(table.lazy(), wanted.head(1), ["submission_id", "question_id"])
    assert shared.rows == 1 and shared.candidates.height == 0
    assert shared.candidates.columns == ["submission_id", "question_id"]
    assert unique_key_check_result(shared, ["submission_id", "question_id"], check_name="unique").passed
