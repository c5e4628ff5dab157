"""Compaction of the Silver stream tables' small files (merge.compact_table and the hourly
Dagster job), on real Delta tables in a tmp lake: what each key range holds, the rows and
their order, the log's commit, merges after it and racing it."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from polars.testing import assert_frame_equal

from assets_tests.silver.silver_events import bronze_frame
from assets_tests.silver.test_silver_merge import (
    assert_matches_expected,
    batch_frame,
    in_threads,
    state,
    tables_in,
)
from school_equity.resources import LakeResource
from school_equity.silver.assets import ANSWERS_KEY, QUARANTINE_KEY, SUBMISSIONS_KEY
from school_equity.silver.maintenance import (
    SILVER_COMPACTION_JOB,
    silver_compaction_job,
    silver_compaction_schedule,
)
from school_equity.silver.merge import (
    compact_quarantine,
    compact_table,
    key_slices,
    merge_batch,
    merge_slices,
)
from school_equity.silver.parse import parse_batch

RANGES = "0123456789abcdef"  # a first character in each key range (merge.KEY_SLICE_BOUNDS)


def _batch(b: int) -> tuple[list[dict], pl.DataFrame]:
    """Batch ``b``: a new submission in every key range, a newer version of one of batch
    b-1's, and a record that is not JSON (quarantined)."""
    offset = b * 100
    records = [{"sid": f"{c}{b}-x", "minute": b, "answers": {"P01": 1 + b % 4, "P02": 2}, "partition": 0,
                "offset": offset + n} for n, c in enumerate(RANGES)]
    if b:
        records.append({"sid": f"{RANGES[b % 16]}{b - 1}-x", "minute": b, "answers": {"P01": 4},
                        "partition": 1, "offset": offset})
    bad = bronze_frame([b"{not json"], batch_id=f"b{b:09d}", offsets=[offset + 50], partitions=[2])
    return records, pl.concat([batch_frame(records, b), bad])


def _streamed(root: str, n: int):
    tables = tables_in(root)
    records: list[dict] = []
    for b in range(n):
        recs, frame = _batch(b)
        merge_batch(tables, parse_batch(frame))
        records += recs
    return tables, records


def _live(uri: str) -> pl.DataFrame:
    return pl.DataFrame(DeltaTable(uri).get_add_actions(flatten=True))


def _small_per_range(uri: str) -> dict[str, list[str]]:
    """Each key range's files (all small here), oldest first by greatest kafka_offset."""
    out: dict[str, list[str]] = {str(sl): [] for sl in key_slices()}
    for path, lo, _ in _live(uri).sort("max.kafka_offset").select("path", "min.submission_id",
                                                                    "max.kafka_offset").iter_rows():
        out[next(str(sl) for sl in key_slices() if sl.holds(lo))].append(path)
    return out


def _newest_small(uri: str, n: int) -> set[str]:
    return {p for paths in _small_per_range(uri).values() for p in paths[-n:]}


def _last_commit(uri: str) -> list[dict]:
    last = max(Path(uri, "_delta_log").glob("*.json"), key=lambda p: int(p.stem))
    return [json.loads(line) for line in last.read_text().splitlines()]


def test_compaction_rewrites_each_key_ranges_small_files_in_one_commit_and_keeps_every_row(tmp_path):
    tables, records = _streamed(str(tmp_path), 10)
    before = state(tables)
    for uri in (tables.submissions, tables.answers):
        files_before = _live(uri).height
        assert files_before >= 16 * 10  # one small file per range per batch, at least
        version = DeltaTable(uri).version()
        newest = _newest_small(uri, 2)
        outcome = compact_table(uri, min_small_files=8)
        assert outcome is not None and outcome.committed and outcome.by_range
        # all but each range's two newest files (the next corrections' targets)
        assert outcome.ranges_compacted == 16 and outcome.files_compacted == files_before - 32
        live = _live(uri)
        assert outcome.files_written == 16  # the rows fit a file per range
        assert outcome.files_after == live.height == 16 + 32
        assert newest <= set(live.get_column("path"))
        assert outcome.version == DeltaTable(uri).version() == version + 1  # one commit
        # the layout the merge relies on: each file within one range, in arrival order
        assert merge_slices(DeltaTable(uri)) == key_slices()
        for path in live.get_column("path"):
            offsets = pl.read_parquet(Path(uri, path)).get_column("kafka_offset")
            assert offsets.is_sorted()
        # one commit removes every small file and adds the compacted ones, logged as a data
        # change (see compact_table: delta-rs's conflict check skips dataChange=false removes)
        actions = [a for a in _last_commit(uri) if "add" in a or "remove" in a]
        assert sorted(next(iter(a)) for a in actions) == ["add"] * 16 + ["remove"] * (files_before - 32)
        assert all(next(iter(a.values()))["dataChange"] is True for a in actions)
        # statistics as the merge writes them, so readers and later merges prune by them
        assert live.get_column("num_records").sum() == pl.read_delta(uri).height
        assert live.get_column("min.kafka_offset").null_count() == 0

    quarantined = _live(tables.quarantine).height
    assert quarantined == 10  # delta-rs's MERGE left a file per batch
    outcome = compact_quarantine(tables.quarantine, min_small_files=8)
    assert outcome is not None and outcome.files_compacted == 10 and outcome.files_after == 1
    for b, a in zip(before, state(tables), strict=True):
        assert_frame_equal(b, a)

    # merges go on from the compacted tables: newer versions rewrite the compacted files
    recs, frame = _batch(10)
    merge_batch(tables, parse_batch(frame))
    assert_matches_expected(tables, records + recs)
    assert merge_slices(DeltaTable(tables.answers)) == key_slices()
    # nothing small enough left to compact: no commit
    for uri in (tables.submissions, tables.answers):
        version = DeltaTable(uri).version()
        again = compact_table(uri, min_small_files=8)
        assert again is not None and not again.committed and again.version == version


def test_only_ranges_over_the_threshold_are_compacted_and_bad_input_is_named(tmp_path):
    tables, _ = _streamed(str(tmp_path), 4)
    # one more file in three ranges only
    extra = [{"sid": f"{c}extra-x", "minute": 9, "answers": {"P01": 2}, "partition": 0, "offset": 5000 + n}
             for n, c in enumerate("07b")]
    merge_batch(tables, parse_batch(batch_frame(extra, 4)))
    uri = tables.answers
    per_range = _small_per_range(uri)  # small files per range, oldest first
    threshold = max(map(len, per_range.values()))
    assert sorted(map(len, per_range.values())) == [threshold - 1] * 13 + [threshold] * 3
    version = DeltaTable(uri).version()
    assert not compact_table(uri, min_small_files=threshold, keep_recent=1).committed  # every range short of it
    assert DeltaTable(uri).version() == version
    outcome = compact_table(uri, min_small_files=threshold, keep_recent=0)
    full = {r for r, paths in per_range.items() if len(paths) >= threshold}
    assert outcome.committed and outcome.ranges_compacted == len(full) == 3
    assert outcome.files_compacted == sum(len(per_range[r]) for r in full)
    after = _small_per_range(uri)
    for r, paths in per_range.items():  # the other ranges keep their files
        assert (len(after[r]) == 1) if r in full else (after[r] == paths)
    with pytest.raises(ValueError, match="min_small_files=1, expected at least 2"):
        compact_table(tables.answers, min_small_files=1)
    with pytest.raises(ValueError, match="keep_recent=-1 is negative"):
        compact_table(tables.answers, keep_recent=-1)
    assert compact_table(str(tmp_path / "silver" / "nothing_here")) is None
    assert compact_quarantine(str(tmp_path / "silver" / "nothing_here")) is None


def test_a_table_whose_files_span_key_ranges_is_not_compacted(tmp_path):
    """A table written before the key-range layout (or rewritten outside the project): its
    merges take it whole, and compaction leaves it as it is rather than mix ranges more."""
    uri = str(tmp_path / "spanning")
    for i in range(10):
        write_deltalake(uri, pl.DataFrame({"submission_id": [f"0{i}-x", f"f{i}-x"], "kafka_offset": [i, i]}).to_arrow(),
                        mode="append")
    outcome = compact_table(uri, min_small_files=2)
    assert outcome is not None and not outcome.by_range and not outcome.committed
    assert DeltaTable(uri).version() == 9 and _live(uri).height == 10


def test_a_compaction_racing_a_merge_loses_no_row(tmp_path):
    """The Silver pool keeps them apart in Dagster; without it, a commit that lost the race
    (its files removed by the other) is retried from a fresh snapshot, and the newest
    version of every submission, with its own answers only, is what remains."""
    tables, records = _streamed(str(tmp_path), 9)
    recs, frame = _batch(9)
    parsed = parse_batch(frame)

    def work(which: str):
        if which == "merge":
            return merge_batch(tables, parsed, attempts=20)
        return [compact_table(uri, min_small_files=2, attempts=20) for uri in (tables.answers, tables.submissions)]

    in_threads(work, ["merge", "compact"])
    assert_matches_expected(tables, records + recs)
    assert merge_slices(DeltaTable(tables.answers)) == key_slices()


def test_a_merge_whose_files_a_compaction_replaced_meanwhile_is_retried(tmp_path, monkeypatch):
    """Deterministic form of the race: the compaction commits after the answers merge took
    its snapshot and while it reads the files it rewrites. The merge's commit must fail
    and be retried; committed as well, it would leave the old answers of a corrected
    submission in the compacted file beside the new ones."""
    from school_equity.silver import merge as m

    tables, records = _streamed(str(tmp_path), 9)
    recs, frame = _batch(9)
    parsed = parse_batch(frame)
    m.merge_quarantine(tables.quarantine, parsed.quarantine)
    m.merge_submissions(tables.submissions, parsed.submissions)
    real_read, compacted = m._read_data_file, []

    def read_then_compact(fs, path, columns=None):
        if not compacted:
            compacted.append(None)  # once, and not for the compaction's own reads
            outcome = compact_table(tables.answers, min_small_files=2)
            assert outcome is not None and outcome.committed
        return real_read(fs, path, columns)

    monkeypatch.setattr(m, "_read_data_file", read_then_compact)
    outcome = m.merge_answers(tables.answers, parsed.answers, submissions_uri=tables.submissions,
                              batch_versions=parsed.submissions)
    monkeypatch.undo()
    assert compacted and outcome.attempts == 2
    assert_matches_expected(tables, records + recs)


def test_the_job_compacts_and_observes_each_table(tmp_path):
    tables, _ = _streamed(str(tmp_path / "lake"), 10)
    before = state(tables)
    files = {uri: _live(uri).height for uri in (tables.submissions, tables.answers, tables.quarantine)}
    lake = LakeResource(root=str(tmp_path / "lake"))
    result = silver_compaction_job.execute_in_process(
        resources={"lake": lake}, run_config={"ops": {"compact_silver_tables": {"config": {"min_small_files": 8}}}},
        instance=dg.DagsterInstance.ephemeral())
    assert result.success
    observed = {o.asset_key: o.metadata for o in result.asset_observations_for_node("compact_silver_tables")}
    assert set(observed) == {SUBMISSIONS_KEY, ANSWERS_KEY, QUARANTINE_KEY}
    for key, uri in ((SUBMISSIONS_KEY, tables.submissions), (ANSWERS_KEY, tables.answers),
                     (QUARANTINE_KEY, tables.quarantine)):
        meta = observed[key]
        assert meta["compaction/live_files_before"].value == files[uri]
        assert meta["compaction/live_files"].value == _live(uri).height < files[uri]
        kept = 0 if key == QUARANTINE_KEY else 32  # the quarantine table has no ranges, no kept files
        assert meta["compaction/files_compacted"].value == files[uri] - kept
        assert meta["delta_version"].value == DeltaTable(uri).version()
    assert observed[ANSWERS_KEY]["compaction/ranges_compacted"].value == 16
    for b, a in zip(before, state(tables), strict=True):
        assert_frame_equal(b, a)

    refused = silver_compaction_job.execute_in_process(
        resources={"lake": lake}, run_config={"ops": {"compact_silver_tables": {"config": {"min_small_files": 1}}}},
        raise_on_error=False)
    assert not refused.success
    assert "greater than or equal to 2" in refused.get_step_failure_events()[0].step_failure_data.error.to_string()
    empty = silver_compaction_job.execute_in_process(resources={"lake": LakeResource(root=str(tmp_path / "empty"))})
    assert empty.success and empty.asset_observations_for_node("compact_silver_tables") == []


def test_the_schedule_compacts_hourly_and_is_in_the_code_location():
    from school_equity.definitions import defs

    assert silver_compaction_schedule.job_name == SILVER_COMPACTION_JOB
    assert silver_compaction_schedule.cron_schedule == "45 * * * *"
    assert silver_compaction_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert defs.resolve_schedule_def("silver_compaction_hourly").job_name == SILVER_COMPACTION_JOB
    op = defs.resolve_job_def(SILVER_COMPACTION_JOB).graph.node_defs[0]
    assert op.pool == "silver_delta"  # one Silver writer at a time, as the merges
