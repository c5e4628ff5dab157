"""Silver housekeeping: VACUUM of the stream tables on real Delta tables in a tmp lake,
through the pure function and through the Dagster job (its config, its observations)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from assets_tests.silver.test_silver_merge import PARENT_QUESTIONS, batch_frame, merge_all, state
from school_equity.lake import Lake
from school_equity.resources import LakeResource
from school_equity.silver.assets import ANSWERS_KEY, QUARANTINE_KEY, SUBMISSIONS_KEY
from school_equity.silver.maintenance import silver_maintenance_job, silver_maintenance_schedule
from school_equity.silver.merge import SilverTables, vacuum_table


def parquet_on_disk(uri: str) -> set[str]:
    return {p.name for p in Path(uri).glob("*.parquet")}


def live_files(uri: str) -> set[str]:
    return {Path(u).name for u in DeltaTable(uri).file_uris()}


def revised_batches(n: int) -> list:
    """n batches that each revise the same submissions: every merge rewrites their files."""
    sids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(6)] + [f"f0000000-0000-4000-8000-{i:012d}" for i in range(6)]
    return [
        batch_frame([{"sid": s, "minute": b * 10 + j, "answers": {q: 1 + (b + j) % 5 for q in PARENT_QUESTIONS[: 2 + b % 3]},
                      "partition": 0, "offset": b * 100 + j} for j, s in enumerate(sids)], batch_seq=b + 1)
        for b in range(n)
    ]


@pytest.fixture
def churned(tmp_path) -> SilverTables:
    tables = SilverTables.in_lake(Lake(str(tmp_path / "lake")))
    merge_all(tables, revised_batches(4))
    # the merges replaced files: more on disk than the current version references
    for uri in (tables.submissions, tables.answers):
        assert parquet_on_disk(uri) > live_files(uri)
    return tables


def test_vacuum_deletes_only_unreferenced_files_and_the_tables_read_the_same(churned):
    before = state(churned)
    versions = {uri: DeltaTable(uri).version() for uri in (churned.submissions, churned.answers)}
    for uri in (churned.submissions, churned.answers):
        live = live_files(uri)
        dead = parquet_on_disk(uri) - live
        outcome = vacuum_table(uri, 0)
        assert outcome is not None
        assert outcome.files_expired == len(dead) > 0
        assert outcome.live_files == len(live)
        assert parquet_on_disk(uri) == live  # every dead file went, no live one
        assert outcome.version > versions[uri]  # delta-rs logs the vacuum
        again = vacuum_table(uri, 0)  # idempotent: the same expired files, none left to delete
        assert again is not None and again.live_files == len(live)
        assert parquet_on_disk(uri) == live
    after = state(churned)
    for b, a in zip(before, after, strict=True):
        assert_frame_equal(b, a)
    # the tables still take merges after it
    merge_all(churned, revised_batches(5)[4:])


def test_vacuum_keeps_files_within_the_retention_and_skips_a_missing_table(churned, tmp_path):
    on_disk = parquet_on_disk(churned.answers)
    outcome = vacuum_table(churned.answers, 1)  # the replaced files are seconds old
    assert outcome is not None and outcome.files_expired == 0
    assert parquet_on_disk(churned.answers) == on_disk
    assert vacuum_table(str(tmp_path / "lake" / "silver" / "nothing_here"), 0) is None
    with pytest.raises(ValueError, match="retention_hours=-1 is negative"):
        vacuum_table(churned.answers, -1)


def test_the_job_observes_each_table_and_guards_the_retention(churned, tmp_path):
    lake = LakeResource(root=str(tmp_path / "lake"))
    on_disk = {uri: parquet_on_disk(uri) for uri in (churned.submissions, churned.answers)}
    result = silver_maintenance_job.execute_in_process(
        resources={"lake": lake}, run_config={"ops": {"vacuum_silver_tables": {"config": {"retention_hours": 1}}}},
        instance=dg.DagsterInstance.ephemeral())
    assert result.success
    observed = {o.asset_key: o.metadata for o in result.asset_observations_for_node("vacuum_silver_tables")}
    assert set(observed) == {SUBMISSIONS_KEY, ANSWERS_KEY, QUARANTINE_KEY}
    for key, uri in ((SUBMISSIONS_KEY, churned.submissions), (ANSWERS_KEY, churned.answers)):
        assert observed[key]["vacuum/files_expired"].value == 0  # nothing is an hour old yet
        assert observed[key]["vacuum/live_files"].value == len(live_files(uri))
        assert observed[key]["vacuum/retention_hours"].value == 1
        assert observed[key]["delta_version"].value == DeltaTable(uri).version()
        assert parquet_on_disk(uri) == on_disk[uri]

    refused = silver_maintenance_job.execute_in_process(
        resources={"lake": lake}, run_config={"ops": {"vacuum_silver_tables": {"config": {"retention_hours": 0}}}},
        raise_on_error=False)
    assert not refused.success
    failure = refused.get_step_failure_events()[0].step_failure_data.error
    assert "retention_hours" in failure.to_string() and "greater than or equal to 1" in failure.to_string()
    assert all(parquet_on_disk(uri) == files for uri, files in on_disk.items())

    # an empty lake (no batch merged yet): the job succeeds and observes nothing
    empty = silver_maintenance_job.execute_in_process(resources={"lake": LakeResource(root=str(tmp_path / "empty"))})
    assert empty.success and empty.asset_observations_for_node("vacuum_silver_tables") == []


def test_the_schedule_runs_the_job_daily_with_the_default_retention():
    assert silver_maintenance_schedule.job_name == silver_maintenance_job.name
    assert silver_maintenance_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert silver_maintenance_schedule.cron_schedule == "30 3 * * *"
