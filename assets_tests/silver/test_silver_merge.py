"""Silver merges into real Delta tables: newer wins in any batch order, answers are exactly
the winner's, re-merging changes nothing, v2 columns evolve the schema, commit races
are retried."""

from __future__ import annotations

import json
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from assets_tests.silver.silver_events import T0, bronze_frame, encode, event
from school_equity.contracts.checks import validate_or_raise
from school_equity.contracts.stream import SilverSurveyAnswers, SilverSurveySubmissions
from school_equity.lake import Lake
from school_equity.silver.merge import (
    WHOLE_TABLE,
    SilverTables,
    key_slices,
    merge_answers,
    merge_batch,
    merge_slices,
    merge_submissions,
    read_table,
    table_version,
    with_retries,
)
from school_equity.silver.parse import parse_batch

PARENT_QUESTIONS = ["P01", "P02", "P03", "P04", "P05", "P06"]


def batch_frame(records: list[dict], batch_seq: int) -> pl.DataFrame:
    """records: dicts with sid, minute, answers, partition, offset, version."""
    values = [
        encode(event(r["sid"], event_time=T0 + timedelta(minutes=r["minute"]), answers=r["answers"],
                     schema_version=r.get("version", 1), language=r.get("language", "es")))
        for r in records
    ]
    return bronze_frame(values, batch_id=f"b{batch_seq:09d}", partitions=[r["partition"] for r in records],
                        offsets=[r["offset"] for r in records])


def merge_all(tables: SilverTables, batches: list[pl.DataFrame]) -> None:
    for b in batches:
        merge_batch(tables, parse_batch(b))


def state(tables: SilverTables) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The three tables, in a canonical row and column order."""
    out = []
    for uri, key in ((tables.submissions, ["submission_id"]), (tables.answers, ["submission_id", "question_id"]),
                     (tables.quarantine, ["kafka_topic", "kafka_partition", "kafka_offset"])):
        df = read_table(uri, tables.storage_options)
        out.append(df.select(sorted(df.columns)).sort(key))
    return tuple(out)


def versions(tables: SilverTables) -> tuple:
    so = tables.storage_options
    return tuple(table_version(u, so) for u in (tables.submissions, tables.answers, tables.quarantine))


def expected_winners(records: list[dict]) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for r in records:
        k = (r["minute"], r["partition"], r["offset"])
        if r["sid"] not in best or k > (best[r["sid"]]["minute"], best[r["sid"]]["partition"], best[r["sid"]]["offset"]):
            best[r["sid"]] = r
    return best


def assert_matches_expected(tables: SilverTables, records: list[dict]) -> None:
    subs, answers, _ = state(tables)
    best = expected_winners(records)
    assert subs.select("submission_id", "kafka_partition", "kafka_offset").rows() == [
        (sid, best[sid]["partition"], best[sid]["offset"]) for sid in sorted(best)
    ]
    assert answers.select("submission_id", "question_id", "answer_value").rows() == sorted(
        (sid, q, v) for sid, r in best.items() for q, v in r["answers"].items()
    )
    assert dict(subs.select("submission_id", "answer_count").rows()) == {s: len(r["answers"]) for s, r in best.items()}
    # every answer row carries its submission's winning version
    joined = answers.join(subs, on="submission_id", suffix="_s")
    assert (joined["kafka_offset"] == joined["kafka_offset_s"]).all()
    assert (joined["event_time"] == joined["event_time_s"]).all()
    validate_or_raise(subs, SilverSurveySubmissions)
    validate_or_raise(answers.select(list(SilverSurveyAnswers.to_schema().columns)), SilverSurveyAnswers)


def tables_in(root: str) -> SilverTables:
    return SilverTables.in_lake(Lake(root))


def sid(i: int) -> str:
    """Ids in different key-range slices (merge.KEY_SLICE_BOUNDS), so batches span slices."""
    return "07aFs"[i % 5] + f"-{i}"


# -- property: any batch order gives the newest version per id ---------------------------
@st.composite
def stream(draw):
    n_ids = draw(st.integers(1, 5))
    records, next_offset = [], {0: 0, 1: 0}
    for _ in range(draw(st.integers(1, 12))):
        part = draw(st.integers(0, 1))
        records.append({
            "sid": sid(draw(st.integers(0, n_ids - 1))),
            "minute": draw(st.integers(0, 3)),  # few distinct times: ties broken by Kafka position
            "answers": draw(st.dictionaries(st.sampled_from(PARENT_QUESTIONS), st.integers(1, 4), min_size=1)),
            "partition": part,
            "offset": next_offset[part],
            "version": draw(st.sampled_from([1, 1, 2])),
        })
        next_offset[part] += 1
    n_batches = draw(st.integers(1, min(4, len(records))))
    assignment = [draw(st.integers(0, n_batches - 1)) for _ in records]
    batches = [[r for r, a in zip(records, assignment, strict=True) if a == b] for b in range(n_batches)]
    batches = [b for b in batches if b]
    order = draw(st.permutations(range(len(batches))))
    again = draw(st.integers(0, len(batches) - 1))
    return records, batches, order, again


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream())
def test_property_any_batch_order_gives_the_newest_version(case):
    records, batches, order, again = case
    frames = [batch_frame(b, seq) for seq, b in enumerate(batches)]
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        in_order, permuted = tables_in(a), tables_in(b)
        merge_all(in_order, frames)
        merge_all(permuted, [frames[i] for i in order])
        assert_matches_expected(in_order, records)
        for x, y in zip(state(in_order), state(permuted), strict=True):
            assert_frame_equal(x, y)
        # re-merging any batch changes nothing, not even the table versions
        before, v_before = state(permuted), versions(permuted)
        merge_batch(permuted, parse_batch(frames[again]))
        assert versions(permuted) == v_before
        for x, y in zip(before, state(permuted), strict=True):
            assert_frame_equal(x, y)


# -- deterministic cases -------------------------------------------------------------
def test_newer_version_with_fewer_answers_removes_stale_answers(tmp_path):
    t = tables_in(str(tmp_path))
    old = {"sid": "s", "minute": 0, "answers": {"P01": 1, "P02": 2, "P03": 3}, "partition": 0, "offset": 0}
    new = {"sid": "s", "minute": 5, "answers": {"P02": 4}, "partition": 0, "offset": 1}
    merge_all(t, [batch_frame([old], 1), batch_frame([new], 2)])
    assert_matches_expected(t, [old, new])
    result = merge_batch(t, parse_batch(batch_frame([old], 1)))  # the old batch again: loses, touches nothing
    assert not result.submissions.committed and not result.answers.committed
    assert_matches_expected(t, [old, new])


def test_newer_version_updates_and_deletes_in_one_answers_merge(tmp_path):
    t = tables_in(str(tmp_path))
    old = {"sid": "s", "minute": 0, "answers": {"P01": 1, "P02": 2}, "partition": 0, "offset": 0}
    new = {"sid": "s", "minute": 5, "answers": {"P02": 4, "P03": 1}, "partition": 0, "offset": 1}
    merge_all(t, [batch_frame([old], 1)])
    v = table_version(t.answers)
    result = merge_batch(t, parse_batch(batch_frame([new], 2)))
    assert (result.answers.inserted, result.answers.updated, result.answers.deleted) == (1, 1, 1)
    assert table_version(t.answers) == v + 1
    assert_matches_expected(t, [old, new])


def test_schema_v2_column_is_added_and_order_does_not_matter(tmp_path):
    v1 = {"sid": "a", "minute": 0, "answers": {"P01": 1}, "partition": 0, "offset": 0, "version": 1}
    v2 = {"sid": "b", "minute": 1, "answers": {"P01": 2}, "partition": 0, "offset": 1, "version": 2,
          "language": "zh"}
    # a newer v1 version of a v2 submission clears its language
    a_v2 = {"sid": "a", "minute": 0, "answers": {"P02": 3}, "partition": 1, "offset": 0, "version": 2}
    c_v2 = {"sid": "c", "minute": 0, "answers": {"P02": 3}, "partition": 1, "offset": 1, "version": 2}
    c_v1 = {"sid": "c", "minute": 9, "answers": {"P02": 1}, "partition": 1, "offset": 2, "version": 1}
    frames = [batch_frame([v1], 1), batch_frame([v2, a_v2, c_v2], 2), batch_frame([c_v1], 3)]

    forward = tables_in(str(tmp_path / "forward"))
    merge_batch(forward, parse_batch(frames[0]))
    assert "language" not in read_table(forward.submissions).columns
    merge_all(forward, frames[1:])
    subs = read_table(forward.submissions)
    assert subs.columns[-1] == "language"  # added by the merge, at the end
    assert dict(subs.select("submission_id", "language").rows()) == {"a": "es", "b": "zh", "c": None}

    backward = tables_in(str(tmp_path / "backward"))
    merge_all(backward, frames[::-1])
    for x, y in zip(state(forward), state(backward), strict=True):
        assert_frame_equal(x, y)
    history = [h["operation"] for h in __import__("deltalake").DeltaTable(forward.submissions).history()]
    # newest first: a batch is one commit, the column its own; the first batch is two (the
    # table with no rows, then its rows)
    assert history == ["WRITE", "WRITE", "ADD COLUMN", "WRITE", "WRITE"]


def test_crash_between_submissions_and_answers_is_repaired_by_the_rerun(tmp_path):
    t = tables_in(str(tmp_path))
    old = {"sid": "s", "minute": 0, "answers": {"P01": 1, "P02": 2}, "partition": 0, "offset": 0}
    new = {"sid": "s", "minute": 5, "answers": {"P03": 4}, "partition": 0, "offset": 1}
    merge_all(t, [batch_frame([old], 1)])
    parsed = parse_batch(batch_frame([new], 2))
    merge_submissions(t.submissions, parsed.submissions)  # ... and the run dies here
    subs, answers, _ = state(t)
    assert subs["kafka_offset"].to_list() == [1] and answers["question_id"].to_list() == ["P01", "P02"]
    merge_batch(t, parsed)  # the re-run
    assert_matches_expected(t, [old, new])


def test_quarantine_is_insert_only_and_idempotent(tmp_path):
    t = tables_in(str(tmp_path))
    bad = [b"{oops", encode({**event("x"), "dbn": "99X999"})]
    frame = bronze_frame(bad + [encode(event("ok"))], batch_id="b000000007")
    first = merge_batch(t, parse_batch(frame))
    assert first.quarantine.created and first.quarantine.inserted == 2
    again = merge_batch(t, parse_batch(frame))
    assert (again.quarantine.inserted, again.quarantine.committed) == (0, False)
    q = read_table(t.quarantine)
    assert sorted(q["reason_code"].to_list()) == ["invalid_json", "unknown_dbn"]
    assert q["batch_id"].unique().to_list() == ["b000000007"]


def test_empty_batch_creates_empty_tables(tmp_path):
    t = tables_in(str(tmp_path))
    result = merge_batch(t, parse_batch(bronze_frame([])))
    assert all(o.created and o.version == 0 for o in (result.submissions, result.answers, result.quarantine))
    assert [read_table(u).height for u in (t.submissions, t.answers, t.quarantine)] == [0, 0, 0]


def in_threads(fn, items: list) -> list:
    """``fn(item)`` for every item, each in its own thread, all released at once; the
    results, and no error."""
    results, errors = [], []
    start = threading.Barrier(len(items))

    def run(item):
        try:
            start.wait()
            results.append(fn(item))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    return results


def test_concurrent_merges_into_one_table_are_retried(tmp_path):
    t = tables_in(str(tmp_path))
    seed = {"sid": "seed", "minute": 0, "answers": {"P01": 1}, "partition": 0, "offset": 0}
    merge_all(t, [batch_frame([seed], 0)])
    records = [{"sid": f"s{i}", "minute": i, "answers": {"P01": 1 + i % 4}, "partition": 0, "offset": 1 + i}
               for i in range(6)]
    parsed = [parse_batch(batch_frame([r], 1 + i)) for i, r in enumerate(records)]
    in_threads(lambda p: merge_submissions(t.submissions, p.submissions, attempts=12), parsed)
    assert sorted(read_table(t.submissions)["submission_id"].to_list()) == sorted(["seed", *(r["sid"] for r in records)])
    # then the answers, in sequence, follow the winners
    for p in parsed:
        merge_answers(t.answers, p.answers, submissions_uri=t.submissions, batch_versions=p.submissions)
    assert_matches_expected(t, [seed, *records])


def test_concurrent_rewrites_of_one_submission_keep_the_newest_version(tmp_path):
    """Writers racing to replace the same submission's file: a commit whose snapshot lost
    that file to another commit fails and is retried from a fresh snapshot, so the newest
    version wins whatever the commit order, with its own answers only."""
    t = tables_in(str(tmp_path))
    first = {"sid": "k-1", "minute": 0, "answers": {"P01": 1, "P02": 1}, "partition": 0, "offset": 0}
    merge_all(t, [batch_frame([first], 0)])
    records = [{"sid": "k-1", "minute": 1 + i, "answers": {f"P0{1 + i}": 1 + i % 4}, "partition": 0,
                "offset": 1 + i} for i in range(5)]
    parsed = [parse_batch(batch_frame([r], 1 + i)) for i, r in enumerate(records)]
    attempts = [r.submissions.attempts for r in in_threads(lambda p: merge_batch(t, p, attempts=20), parsed)]
    assert_matches_expected(t, [first, *records])
    assert read_table(t.submissions).height == 1
    assert max(attempts) > 1  # the writers did race: the losers' commits failed and were retried
    # the files of the failed commits were deleted: every data file is live or removed by a commit
    for uri in (t.submissions, t.answers):
        on_disk = {f.name for f in Path(uri).glob("*.parquet")}
        logged = set(_files(uri))
        for entry in Path(uri, "_delta_log").glob("*.json"):
            logged |= {json.loads(line)["remove"]["path"] for line in entry.read_text().splitlines()
                       if '"remove"' in line}
        assert on_disk == logged


def test_with_retries_backs_off_on_commit_races_only():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise CommitFailedError("conflict")
        return "done"

    assert with_retries(flaky, sleep=sleeps.append) == ("done", 3)
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.5

    def broken():
        raise DeltaError("Schema error: invalid type")

    with pytest.raises(DeltaError):
        with_retries(broken, sleep=sleeps.append)
    with pytest.raises(CommitFailedError):
        with_retries(lambda: (_ for _ in ()).throw(CommitFailedError("x")), attempts=2, sleep=lambda s: None)


def test_producer_stream_in_reverse_batches_matches_its_ground_truth(tmp_path):
    """The project's producer (late, out-of-order, duplicate, corrected, malformed, v1 -> v2) cut
    into batches merged newest first: Silver holds exactly the producer's final versions."""
    from school_equity.kafka.events import MALFORMED, GeneratorConfig, SurveyStream, versions_hash

    stream = SurveyStream(4000, GeneratorConfig(seed=5, correction_rate=0.05, duplicate_rate=0.05))
    records = list(stream)
    report = stream.report
    cuts = [0, 700, 1900, 2600, len(records)]
    frames = [
        bronze_frame([r.value for r in records[a:b]], keys=[r.key for r in records[a:b]], start_offset=a,
                     batch_id=f"b{i:09d}")
        for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))
    ]
    t = tables_in(str(tmp_path))
    merge_all(t, frames[::-1])
    subs, answers, quarantine = state(t)

    assert subs.height == report.valid_submissions
    epoch = pl.datetime(1970, 1, 1, time_zone="UTC")
    per_sub = answers.group_by("submission_id").agg(pl.struct("question_id", "answer_value").alias("a"))
    rows = subs.select("submission_id", us=(pl.col("event_time") - epoch).dt.total_microseconds()).join(
        per_sub, on="submission_id")
    silver_hash = versions_hash(
        (sid, us, {x["question_id"]: x["answer_value"] for x in a}) for sid, us, a in rows.iter_rows()
    )
    assert silver_hash == report.final_versions_hash
    assert subs.filter(pl.col("schema_version") == 2).height > 0 and "language" in subs.columns

    expected = {i: r.reason for i, r in enumerate(records) if r.kind == MALFORMED}
    assert dict(quarantine.select("kafka_offset", "reason_code").rows()) == expected
    assert quarantine.height == report.malformed_total


# -- key-range slices ----------------------------------------------------------------------
@given(st.text(max_size=6))
def test_every_key_falls_in_exactly_one_slice(key):
    slices = key_slices()
    assert sum(sl.holds(key) for sl in slices) == 1
    frame = pl.DataFrame({"submission_id": [key]})
    assert [frame.filter(sl.expr()).height for sl in slices] == [int(sl.holds(key)) for sl in slices]


def _files(uri: str) -> dict[str, tuple[str, str]]:
    actions = pl.DataFrame(DeltaTable(uri).get_add_actions(flatten=True))
    return {p: (lo, hi) for p, lo, hi in actions.select("path", "min.submission_id", "max.submission_id").iter_rows()}


def _records(ids: list[str], *, minute: int, first_offset: int) -> list[dict]:
    return [{"sid": i, "minute": minute, "answers": {"P01": 1 + n % 4, "P02": 2}, "partition": 0,
             "offset": first_offset + n} for n, i in enumerate(ids)]


def test_tables_stay_clustered_and_a_batch_rewrites_only_the_slices_it_touches(tmp_path):
    tables = tables_in(str(tmp_path))
    ids = [f"{c}{n}-x" for c in "0123456789abcdef" for n in range(3)]
    first = _records(ids, minute=0, first_offset=0)
    merge_batch(tables, parse_batch(batch_frame(first, 0)))
    for uri in (tables.submissions, tables.answers):
        files = _files(uri)
        assert len(files) == 16  # one per slice, each within it
        assert merge_slices(DeltaTable(uri)) == key_slices()

    before = {uri: _files(uri) for uri in (tables.submissions, tables.answers)}
    # a newer version of ids in slice '3' and a new id in slice 'c'
    second = _records(["30-x", "32-x", "c9-new"], minute=5, first_offset=len(first))
    merge_batch(tables, parse_batch(batch_frame(second, 1)))
    for uri in (tables.submissions, tables.answers):
        after = _files(uri)
        removed = set(before[uri]) - set(after)
        assert {before[uri][p][0][0] for p in removed} == {"3"}  # only slice '3' was rewritten
        assert all(lo[0] == hi[0] for lo, hi in after.values())  # still one slice per file
        assert merge_slices(DeltaTable(uri)) == key_slices()
    assert_matches_expected(tables, first + second)


def test_a_first_batch_creates_the_tables_one_key_range_at_a_time(tmp_path):
    """A first batch creates a table with no rows (version 0), and every slice's files
    follow in one commit (version 1); the outcome counts every row written."""
    spread = tables_in(str(tmp_path / "spread"))
    ids = [f"{c}{n}-x" for c in "0369cf" for n in range(2)]
    # a superseded version in the batch: its answers are not the winner's
    records = _records(ids, minute=0, first_offset=0) + [
        {"sid": "90-x", "minute": 1, "answers": {"P03": 3}, "partition": 0, "offset": 99}]
    out = merge_batch(spread, parse_batch(batch_frame(records, 0)))
    assert (out.submissions.created, out.submissions.version, out.submissions.inserted) == (True, 1, len(ids))
    assert (out.answers.created, out.answers.version, out.answers.inserted) == (True, 1, 2 * len(ids) - 1)
    for uri in (spread.submissions, spread.answers):
        assert len(_files(uri)) == 6 and DeltaTable(uri).version() == 1
    assert_matches_expected(spread, records)

    one = tables_in(str(tmp_path / "one"))  # every key in one slice: the same two commits
    records = _records(["a1-x", "a2-x"], minute=0, first_offset=0)
    out = merge_batch(one, parse_batch(batch_frame(records, 0)))
    assert (out.submissions.version, out.answers.version) == (1, 1)
    for uri in (one.submissions, one.answers):
        assert DeltaTable(uri, version=0).file_uris() == [] and len(_files(uri)) == 1
    assert (out.submissions.inserted, out.answers.inserted) == (2, 4)
    assert_matches_expected(one, records)


def test_a_crash_after_the_empty_creation_is_repaired_by_the_rerun(tmp_path, monkeypatch):
    """A first batch that dies between the creation (no rows) and its rows' commit leaves
    empty tables; the re-run merges the whole batch into them, range by range."""
    import school_equity.silver.merge as merge

    tables = tables_in(str(tmp_path))
    ids = [f"{c}{n}-x" for c in "0369cf" for n in range(2)]
    records = _records(ids, minute=0, first_offset=0)
    parsed = parse_batch(batch_frame(records, 0))

    def dies(self, frame, **kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(merge._BatchCommit, "add", dies)
        with pytest.raises(RuntimeError, match="killed"):
            merge_submissions(tables.submissions, parsed.submissions)
    assert DeltaTable(tables.submissions).version() == 0 and read_table(tables.submissions).height == 0
    out = merge_batch(tables, parsed)  # the re-run
    assert (out.submissions.created, out.submissions.inserted, out.submissions.version) == (False, len(ids), 1)
    assert merge_slices(DeltaTable(tables.submissions)) == key_slices()
    assert_matches_expected(tables, records)


def test_new_rows_are_appended_and_a_correction_reads_and_rewrites_only_the_recent_file(tmp_path, monkeypatch):
    """New submissions and their answers are appended (no file is read or rewritten); a
    correction of a recent submission reads and rewrites only the file holding it: the
    older files of its key range are skipped by their kafka_offset statistics."""
    import school_equity.silver.merge as merge

    reads: list[tuple[str, str]] = []  # (table, file) of every data file a merge reads
    read = merge._read_data_file
    monkeypatch.setattr(merge, "_read_data_file", lambda fs, path, columns=None: reads.append(
        (fs.normalize_path("").rstrip("/").rsplit("/", 1)[-1], path)) or read(fs, path, columns))

    tables = tables_in(str(tmp_path))
    batches = [_records([f"a{b}{n}-x" for n in range(3)], minute=b, first_offset=10 * b) for b in range(3)]
    for b, records in enumerate(batches):
        result = merge_batch(tables, parse_batch(batch_frame(records, b)))
        if b:
            assert (result.submissions.inserted, result.answers.inserted) == (3, 6)
            assert (result.submissions.files_rewritten, result.answers.files_rewritten) == (0, 0)
    assert reads == []  # batches of new keys only: appends, nothing read
    before = {uri: _files(uri) for uri in (tables.submissions, tables.answers)}
    assert all(len(files) == 3 for files in before.values())  # one file per batch, all in range 'a'

    # a correction of a submission of the last batch (one answer dropped, one changed), and a new one
    fix = {**batches[2][1], "minute": 9, "answers": {"P01": 4}, "offset": 40}
    new = {**batches[2][0], "sid": "a9-new", "offset": 41}
    versions_before = versions(tables)
    result = merge_batch(tables, parse_batch(batch_frame([fix, new], 3)))
    assert (result.submissions.inserted, result.submissions.updated) == (1, 1)
    assert (result.answers.inserted, result.answers.updated, result.answers.deleted) == (2, 1, 1)
    assert (result.submissions.files_rewritten, result.answers.files_rewritten) == (1, 1)
    assert [a - b for a, b in zip(versions(tables)[:2], versions_before[:2], strict=True)] == [1, 1]
    for uri in (tables.submissions, tables.answers):
        last = next(p for p, bounds in before[uri].items() if bounds == ("a20-x", "a22-x"))
        # only the last batch's file was read (its ids, then all of it) and replaced
        assert {p for _, p in reads if p in before[uri]} == {last}
        assert set(before[uri]) - set(_files(uri)) == {last}
    assert_matches_expected(tables, [r for records in batches for r in records] + [fix, new])


def test_new_rows_are_written_in_arrival_order_in_pieces(tmp_path, monkeypatch):
    """A slice's new rows go out sorted by kafka_offset in FILE_BYTES pieces, so each file
    holds one stretch of the stream (what lets a correction skip the older files)."""
    import school_equity.silver.merge as merge

    monkeypatch.setattr(merge, "FILE_BYTES", 4096)
    tables = tables_in(str(tmp_path))
    merge_batch(tables, parse_batch(batch_frame(_records(["a0-x"], minute=0, first_offset=0), 0)))
    ids = [f"a{n:04d}-y" for n in range(2500)]  # rows for several files of FILE_BYTES
    records = _records(ids[::-1], minute=1, first_offset=1)  # offsets against the id order
    merge_batch(tables, parse_batch(batch_frame(records, 1)))
    for uri in (tables.submissions, tables.answers):
        actions = pl.DataFrame(DeltaTable(uri).get_add_actions(flatten=True))
        ranges = sorted(actions.select("min.kafka_offset", "max.kafka_offset").rows())
        assert len(ranges) >= 3
        assert all(hi < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))  # none overlap
    assert_matches_expected(tables, _records(["a0-x"], minute=0, first_offset=0) + records)


def test_file_ends_halve_towards_the_newest_rows():
    """Where a write is cut: full files, then the last full file's worth in files halving
    towards the newest, down to the smallest; with smallest == full, files of one size
    (the oldest stretch joins the next when it is at most half a file)."""
    from school_equity.silver.merge import _file_ends

    ends = _file_ends(1000, 160, 10)
    sizes = [b - a for a, b in zip([0, *ends], ends, strict=False)]
    assert sum(sizes) == 1000 and sizes[-5:] == [80, 40, 20, 10, 10] and all(s == 160 for s in sizes[1:-5])
    assert 80 <= sizes[0] <= 240  # the oldest: no much smaller file than its neighbour
    assert _file_ends(25, 160, 10) == [15, 25]  # the oldest (5 rows) joins the next
    assert _file_ends(12, 160, 10) == [12]  # the oldest (2 rows) joins the newest
    assert _file_ends(5, 160, 10) == [5]
    assert _file_ends(1000, 160, 160) == [200, 360, 520, 680, 840, 1000]
    assert _file_ends(1040, 160, 160) == [240, 400, 560, 720, 880, 1040]


def test_the_newest_rows_go_in_smaller_files_so_a_correction_rewrites_little(tmp_path, monkeypatch):
    """A write's newest rows in a range go in files halving in size towards the newest, so
    the correction of a recent submission reads and rewrites a small file, not a full one;
    a compaction writes files of one size."""
    import school_equity.silver.merge as merge

    monkeypatch.setattr(merge, "FILE_BYTES", 16384)
    tables = tables_in(str(tmp_path))
    ids = [f"a{n:04d}-y" for n in range(4000)]  # one key range
    records = _records(ids, minute=0, first_offset=0)
    merge_batch(tables, parse_batch(batch_frame(records, 0)))

    def files(uri: str) -> pl.DataFrame:
        return pl.DataFrame(DeltaTable(uri).get_add_actions(flatten=True)).sort("min.kafka_offset")

    before = {}
    for uri in (tables.submissions, tables.answers):
        rows = files(uri).get_column("num_records").to_list()
        assert len(rows) >= 6 and rows[-1] * 8 <= max(rows)  # the newest a small fraction of a full one
        assert rows[-5:-1] == sorted(rows[-5:-1], reverse=True)  # halving towards the newest
        before[uri] = files(uri)

    fix = {**records[-2], "minute": 5, "answers": {"P01": 4}, "offset": 4000}
    out = merge_batch(tables, parse_batch(batch_frame([fix], 1)))
    assert (out.submissions.files_rewritten, out.answers.files_rewritten) == (1, 1)
    for uri in (tables.submissions, tables.answers):
        (gone,) = set(before[uri]["path"]) - set(files(uri)["path"])
        rewritten = before[uri].filter(pl.col("path") == gone).get_column("num_records").item()
        assert rewritten * 8 <= before[uri].get_column("num_records").max()
    assert_matches_expected(tables, records + [fix])

    # a compaction's files are of one size: none left small for the next compaction
    for uri in (tables.submissions, tables.answers):
        out = merge.compact_table(uri, min_small_files=2, small_bytes=10**9, keep_recent=0)
        rows = files(uri).get_column("num_records").to_list()
        assert out.files_compacted == out.files_before and len(rows) < out.files_before
        assert min(rows) * 2 >= max(rows) or len(rows) == 1
    assert_matches_expected(tables, records + [fix])


def test_a_table_whose_files_span_slices_is_merged_whole(tmp_path):
    """Tables written before the sliced layout (one file holding every range) still merge
    correctly, in one piece, and give the same tables as the sliced layout."""
    ids = [f"{c}{n}-x" for c in "05af" for n in range(2)]
    first = _records(ids, minute=0, first_offset=0)
    second = _records([ids[0], ids[-1], "7-new"], minute=5, first_offset=len(first))
    sliced, legacy = tables_in(str(tmp_path / "sliced")), tables_in(str(tmp_path / "legacy"))
    merge_batch(sliced, parse_batch(batch_frame(first, 0)))
    # the legacy layout: the same first state, each table rewritten as one file
    for uri_from, uri_to in zip((sliced.submissions, sliced.answers, sliced.quarantine),
                                (legacy.submissions, legacy.answers, legacy.quarantine), strict=True):
        write_deltalake(uri_to, read_table(uri_from).to_arrow())
    assert merge_slices(DeltaTable(legacy.answers)) == WHOLE_TABLE
    for t in (sliced, legacy):
        merge_batch(t, parse_batch(batch_frame(second, 1)))
    assert_matches_expected(legacy, first + second)
    for x, y in zip(state(sliced), state(legacy), strict=True):
        assert_frame_equal(x, y)


def test_batch_check_reads_range_by_range_and_finds_what_the_whole_tables_show(tmp_path):
    """The answers/submissions consistency check of a batch run reads one key range at a
    time; inconsistencies planted in three ranges are all found, as a whole-table read finds
    them, on the clustered layout and on a legacy one-file layout alike."""
    from school_equity.silver.assets import batch_inconsistencies
    from school_equity.silver.merge import answers_inconsistencies

    ids = [f"{c}{n}-x" for c in "0123456789abcdef" for n in range(2)]
    first = _records(ids, minute=0, first_offset=0)
    second = _records(["30-x", "f1-x", "c9-new"], minute=5, first_offset=len(first))
    lake = Lake(str(tmp_path / "sliced"))
    tables = SilverTables.in_lake(lake)
    merge_all(tables, [batch_frame(first, 0), batch_frame(second, 1)])
    answers = read_table(tables.answers)
    row = answers.filter(pl.col("submission_id") == "00-x").head(1)
    planted = [
        row.with_columns(question_id=pl.lit("P05")),  # an answer the winning version does not have
        row.with_columns(submission_id=pl.lit("7z-orphan"), batch_seq=pl.lit(1, pl.Int64),
                         batch_id=pl.lit("b000000001")),  # an answer of no submission, written by batch 1
        answers.filter(pl.col("submission_id") == "f1-x").head(1).with_columns(
            question_id=pl.lit("P03"), kafka_offset=pl.lit(0, pl.Int64)),  # a superseded version's answer
    ]
    for extra in planted:  # one file each, so the table stays one range per file
        write_deltalake(tables.answers, extra.select(answers.columns).to_arrow(), mode="append")
    assert merge_slices(DeltaTable(tables.answers)) == key_slices()

    whole = answers_inconsistencies(read_table(tables.submissions), read_table(tables.answers))
    assert sorted(whole.get_column("submission_id").to_list()) == ["00-x", "7z-orphan", "f1-x"]
    for by_range_from in (0, 10**9):  # read range by range, and at once (a small run)
        assert_frame_equal(batch_inconsistencies(lake, [0, 1], by_range_from=by_range_from), whole)
        # batch 1 wrote f1-x and the orphan; 00-x is batch 0's
        assert batch_inconsistencies(lake, [1], by_range_from=by_range_from).get_column(
            "submission_id").to_list() == ["7z-orphan", "f1-x"]

    legacy = Lake(str(tmp_path / "legacy"))
    for name in ("survey_submissions", "survey_answers"):
        write_deltalake(legacy.uri(f"silver/{name}"), read_table(lake.uri(f"silver/{name}")).to_arrow())
    assert merge_slices(DeltaTable(legacy.uri("silver/survey_answers"))) == WHOLE_TABLE
    assert_frame_equal(batch_inconsistencies(legacy, [0, 1], by_range_from=0), whole)


def test_the_new_rows_of_every_slice_go_in_one_commit(tmp_path):
    """A batch is one commit to each table: the new rows of all sixteen ranges, each range
    in its own files, and the rewritten files of the ranges holding a newer version; a new
    table is two commits."""
    tables = tables_in(str(tmp_path))
    ids = [f"{c}{n}-x" for c in "0123456789abcdef" for n in range(2)]
    first = _records(ids, minute=0, first_offset=0)
    merge_batch(tables, parse_batch(batch_frame(first, 0)))
    assert versions(tables)[:2] == (1, 1)  # the table is created empty, every range's rows follow at once
    before = {uri: _files(uri) for uri in (tables.submissions, tables.answers)}
    # new ids in every range, and newer versions of ids in ranges '3' and 'c'
    second = _records([f"{c}9-new" for c in "0123456789abcdef"] + ["30-x", "c1-x"], minute=5,
                      first_offset=len(first))
    merge_batch(tables, parse_batch(batch_frame(second, 1)))
    assert versions(tables)[:2] == (2, 2)
    for uri in (tables.submissions, tables.answers):
        (last,) = DeltaTable(uri).history(1)
        assert (last["operation"], last["operationParameters"]["mode"]) == ("WRITE", "Append")
        removed = set(before[uri]) - set(_files(uri))
        assert sorted(before[uri][p][0][0] for p in removed) == ["3", "c"]  # the files of 30-x and c1-x
        assert all(lo[0] == hi[0] for lo, hi in _files(uri).values())  # still one range per file
        assert merge_slices(DeltaTable(uri)) == key_slices()
    assert_matches_expected(tables, first + second)
    # re-merging the batch commits nothing
    merge_batch(tables, parse_batch(batch_frame(second, 1)))
    assert versions(tables)[:2] == (2, 2)


def test_file_stats_are_the_ones_delta_rs_writes_with_timestamps_widened_to_the_millisecond():
    """The add actions of the one-commit append carry what delta-rs's own writer records
    (row count, null counts, min and max of strings and integers), and timestamp bounds
    that contain every value: delta-rs keeps milliseconds, so the min is rounded down and
    the max up, never cutting off a row a reader would skip a file for."""
    from datetime import UTC, datetime

    from school_equity.silver.merge import _file_stats

    frame = pl.DataFrame({
        "submission_id": ["b", "a", None, "c"],
        "answer_value": pl.Series([3, None, -1, 7], dtype=pl.Int16),
        "kafka_offset": pl.Series([10, 11, 12, 13], dtype=pl.Int64),
        "event_time": pl.Series([datetime(2026, 3, 2, 5, 0, 0, 250_400, tzinfo=UTC),
                                 datetime(2026, 3, 2, 5, 0, 1, tzinfo=UTC), None,
                                 datetime(2026, 3, 2, 5, 0, 2, 999_001, tzinfo=UTC)]),
        "language": pl.Series([None] * 4, dtype=pl.String),
    })
    mine = json.loads(_file_stats(frame))
    with tempfile.TemporaryDirectory() as d:
        write_deltalake(d, frame.to_arrow())
        theirs = pl.DataFrame(DeltaTable(d).get_add_actions(flatten=True)).row(0, named=True)
    assert mine["numRecords"] == theirs["num_records"] == 4
    assert mine["nullCount"] == {c: theirs[f"null_count.{c}"] for c in frame.columns}
    assert mine["nullCount"] == {"submission_id": 1, "answer_value": 1, "kafka_offset": 0, "event_time": 1,
                                 "language": 4}
    for c in ("submission_id", "answer_value", "kafka_offset"):
        assert (mine["minValues"][c], mine["maxValues"][c]) == (theirs[f"min.{c}"], theirs[f"max.{c}"])
    assert "language" not in mine["minValues"] and "language" not in mine["maxValues"]  # all null
    assert (mine["minValues"]["event_time"], mine["maxValues"]["event_time"]) == (
        "2026-03-02T05:00:00.250Z", "2026-03-02T05:00:03.000Z")  # 2.999001 s rounded up
    # delta-rs cuts the max to 05:00:02.999, below the row at 02.999001
    assert theirs["max.event_time"] < frame.get_column("event_time").max()


def test_file_stats_of_a_timestamp_without_time_zone_are_its_wall_time_whatever_the_local_zone(monkeypatch):
    """A ``timestamp_ntz`` column's bounds are written as delta-rs writes them (wall time,
    no zone), not shifted by the machine's local time zone: a reader skipping files by
    them would otherwise skip files that hold a match."""
    import time
    from datetime import datetime

    from school_equity.silver.merge import _file_stats

    frame = pl.DataFrame({"t": [datetime(2026, 3, 2, 5, 0, 0, 250_000), datetime(2026, 3, 2, 23, 30, 0)]})
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        mine = json.loads(_file_stats(frame))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    with tempfile.TemporaryDirectory() as d:
        write_deltalake(d, frame.to_arrow())
        theirs = pl.DataFrame(DeltaTable(d).get_add_actions(flatten=True)).row(0, named=True)
    assert (mine["minValues"]["t"], mine["maxValues"]["t"]) == ("2026-03-02 05:00:00.250", "2026-03-02 23:30:00.000")
    assert theirs["min.t"] == datetime(2026, 3, 2, 5, 0, 0, 250_000)  # the same instant delta-rs records
    assert theirs["max.t"] == datetime(2026, 3, 2, 23, 30, 0)


def test_file_stats_read_from_the_parquet_footer_equal_the_ones_computed_from_the_rows():
    """The one-commit append reads each file's stats from the footer polars wrote
    (``_parquet_stats``) instead of a second pass over the rows: for every column kind the
    tables hold, row groups with and without values, strings past ASCII, zones other than
    UTC, and files written without statistics or bounds (read from the rows), they are the same
    JSON ``_file_stats`` computes."""
    import io
    import random
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from school_equity.silver.merge import _BatchCommit, _file_stats, _parquet_stats

    rng = random.Random(11)
    t0 = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)

    def maybe(v, p=0.2):
        return None if rng.random() < p else v

    n = 500
    frame = pl.DataFrame({
        "submission_id": [maybe("".join(rng.choice("ab\u00e9\u20ac\U0001F600Z0") for _ in range(rng.randint(1, 6))))
                          for _ in range(n)],
        "answer_value": pl.Series([maybe(rng.randint(-5, 5)) for _ in range(n)], dtype=pl.Int16),
        "kafka_offset": pl.Series([rng.randint(0, 10**12) for _ in range(n)], dtype=pl.Int64),
        "event_time": pl.Series([maybe(t0 + timedelta(microseconds=rng.randint(0, 10**10))) for _ in range(n)]),
        "local_time": pl.Series([maybe(datetime(2026, 3, 2) + timedelta(microseconds=rng.randint(0, 10**9)))
                                 for _ in range(n)]),
        "ny_time": pl.Series([maybe(t0 + timedelta(milliseconds=rng.randint(0, 10**8))) for _ in range(n)])
        .dt.convert_time_zone("America/New_York").dt.cast_time_unit("ms"),
        "score": [maybe(rng.random()) for _ in range(n)],
        "flag": [maybe(rng.random() < 0.5) for _ in range(n)],
        # values in the first rows only: later row groups of it are all null
        "language": pl.Series(["es" if i < 40 else None for i in range(n)], dtype=pl.String),
        "empty": pl.Series([None] * n, dtype=pl.String),
    })
    assert frame.schema["ny_time"] == pl.Datetime("ms", ZoneInfo("America/New_York").key)

    def written(df, **kw) -> bytes:
        buf = io.BytesIO()
        df.write_parquet(buf, **kw)
        return buf.getvalue()

    cases = {
        "as the append writes it": _BatchCommit._parquet(frame),
        "many row groups": written(frame, compression="snappy", statistics=True, row_group_size=64),
        "no statistics": written(frame, statistics=False),
        "null counts only": written(frame, statistics={"min": False, "max": False, "distinct_count": False,
                                                       "null_count": True}),
    }
    for rows in (frame, frame.head(1), frame.filter(pl.col("submission_id").is_null())):
        expected = json.loads(_file_stats(rows))
        for name, data in (cases if rows is frame else {"one group": _BatchCommit._parquet(rows)}).items():
            assert json.loads(_parquet_stats(data, rows)) == expected, (name, rows.height)
    mine = json.loads(_parquet_stats(cases["many row groups"], frame))
    # the bounds span every row group, not the first one's
    assert mine["maxValues"]["kafka_offset"] == frame.get_column("kafka_offset").max()
    assert mine["minValues"]["kafka_offset"] == frame.get_column("kafka_offset").min()
    assert mine["nullCount"]["language"] == n - 40 and mine["nullCount"]["empty"] == n
    assert "empty" not in mine["minValues"]


def test_an_append_that_fails_leaves_no_file_behind(tmp_path):
    """The files of the one-commit append are written before the commit: if the step fails
    before it, they are deleted, so nothing unreferenced is left in the table."""
    import os

    from school_equity.silver.merge import _BatchCommit

    tables = tables_in(str(tmp_path))
    first = _records(["00-x", "a0-x"], minute=0, first_offset=0)
    merge_batch(tables, parse_batch(batch_frame(first, 0)))
    before = sorted(os.listdir(tables.answers))
    frame = read_table(tables.answers)
    dt = DeltaTable(tables.answers)
    with pytest.raises(RuntimeError, match="boom"), _BatchCommit(dt, None) as append:
        append.add(frame)
        assert len(os.listdir(tables.answers)) == len(before) + 1  # written, not yet committed
        raise RuntimeError("boom")
    assert sorted(os.listdir(tables.answers)) == before
    assert DeltaTable(tables.answers).version() == dt.version()
    assert_matches_expected(tables, first)
