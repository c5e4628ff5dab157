"""Upserts of parsed batches into the Silver Delta tables. Pure: deltalake + polars,
no Dagster.

Why every batch order gives the same tables:

- ``survey_submissions``: merge on ``submission_id``; a matched row is replaced only
  when the source version is strictly newer by (event_time, kafka_partition,
  kafka_offset), a total order on versions, so the table converges on the maximum
  whatever the order, and re-merging a batch matches nothing newer.
- ``survey_answers``: after the submissions merge, the batch reads back which of its
  versions *won* (are now the table's version of their submission). For those, and
  only those, the answers become exactly that version's answers in one merge:
  changed or new questions upserted, questions the winner no longer has deleted. A
  batch whose versions lost leaves the answers alone. Because winners are read
  from the table, a run that crashed between the two merges is repaired by its
  re-run.
- ``survey_quarantine``: insert-only on (kafka_topic, kafka_partition, kafka_offset).

A batch is one commit to each table (``_merge_by_slices``), written copy-on-write by
the project: delta-rs's MERGE cost one commit and one query plan per key range, so a
stream of small batches wrote 32 commits a batch per table.

- Rows of keys a table does not hold yet (a new submission, the answers of a submission
  with none in the table) are written as new files, in arrival order (``kafka_offset``),
  in ``FILE_BYTES`` pieces (the newest rows in smaller ones: ``NEWEST_FILE_SPLIT``), with
  the Delta statistics of each file.
- Rows of keys it holds (newer versions, their answers' changes) are applied to the
  files holding them: duplicates and corrections follow their first version closely, so
  of the files whose statistics admit a row at or after the least ``kafka_offset`` of
  the table rows they match, the recent ones, only those holding one of their
  submissions are read, and only those whose rows change are replaced. A matched row
  changes only when the batch's version is strictly newer (the guard re-checks what
  the snapshot said).
- The removes and adds go in one transaction. delta-rs fails it with
  ``CommitFailedError`` when a commit since the snapshot removed a file (any file) it
  read; the step is then retried from a fresh snapshot with backoff (the Dagster assets
  also serialise writers with a pool).

Which keys a table holds is decided on a snapshot; the split is sound because Silver
has one writer at a time (the pool; the blocking unique-key checks would name a key two
racing writers had both written as new). A batch that would change nothing is not
committed, so re-merging a batch leaves even the table version alone. New columns in a
source (a v2 field) are added to the table first (their own commit), even when no row
of the batch wins, so the schema does not depend on the order; a column the source
lacks is sent as null, so a newer v1 version clears a v2 field instead of keeping a
stale value.

Key-range slices (submissions and answers): submission ids are random, so a batch has
keys in every file. Both tables are kept clustered in the ``KEY_SLICE_BOUNDS`` ranges
of ``submission_id`` (a file holds ids of one range: its statistics say which), and a
batch is worked one range at a time, so what it reads of the table, its joins and its
rewritten rows are a sixteenth of the table at most (one delta-rs MERGE of the whole
table was about 1 GiB resident for the 5.6M-row answers table of a 1M-event run). A
table whose files span ranges (written before this layout) is merged in one piece. A
new table is written in two commits: the table with no rows (which fails if another
writer created it first), then every range's files in one append, which is safe
because Silver has one writer at a time (the pool); were two first batches to race past
it anyway, the blocking unique-key checks would name the duplicated keys.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import polars as pl
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema, write_deltalake
from deltalake._internal import DeltaFileSystemHandler
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, RemoveAction

from school_equity.lake import Lake
from school_equity.silver.parse import BatchAnswers, ParsedBatch

SUBMISSIONS_TABLE = "silver/survey_submissions"
ANSWERS_TABLE = "silver/survey_answers"
QUARANTINE_TABLE = "silver/survey_quarantine"

VERSION_COLUMNS = ["event_time", "kafka_partition", "kafka_offset"]
SUBMISSION_KEY = ["submission_id"]
# one version of one submission: what the answers of a version are joined on
VERSION_KEY = [*SUBMISSION_KEY, *VERSION_COLUMNS]
ANSWER_KEY = ["submission_id", "question_id"]
QUARANTINE_KEY = ["kafka_topic", "kafka_partition", "kafka_offset"]

T = TypeVar("T")


def _newer(a: str, b: str) -> pl.Expr:
    """The version in columns suffixed ``a`` is strictly newer than the one suffixed ``b``:
    (event_time, kafka_partition, kafka_offset) compared in order."""
    t, p, o = (pl.col(c + a) for c in VERSION_COLUMNS)
    t2, p2, o2 = (pl.col(c + b) for c in VERSION_COLUMNS)
    return (t > t2) | ((t == t2) & ((p > p2) | ((p == p2) & (o > o2))))


# Lower bounds of the submission_id ranges after the first: ids are UUIDs, so sixteen
# ranges by the first hex digit hold a sixteenth of the rows each. Any other id still
# falls in exactly one range (the first and last are open-ended), only less evenly.
KEY_SLICE_BOUNDS = tuple("123456789abcdef")


@dataclass(frozen=True)
class MergeOutcome:
    table_uri: str
    version: int | None  # the table's version after this step (None: the table does not exist)
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    created: bool = False  # this step created the table
    committed: bool = False  # this step wrote a new table version
    # existing data files the step's merges rewrote (new rows are appended in new files
    # and rewrite none): what a batch costs beyond its own rows
    files_rewritten: int = 0
    attempts: int = 1


@dataclass(frozen=True)
class SliceRows:
    """One slice of a batch: rows of keys the table does not hold (appended) and rows
    to merge into the table's rows (updates, deletes)."""

    fresh: pl.DataFrame
    merge: pl.DataFrame
    # the least kafka_offset of the table rows the merge rows match: files whose
    # statistics end before it are not read
    floor: int | None = None


@dataclass(frozen=True)
class BatchMerge:
    submissions: MergeOutcome
    answers: MergeOutcome
    quarantine: MergeOutcome


@dataclass(frozen=True)
class SilverTables:
    """Where the three stream tables live."""

    submissions: str
    answers: str
    quarantine: str
    storage_options: dict[str, str] | None = None

    @classmethod
    def in_lake(cls, lake: Lake) -> SilverTables:
        return cls(
            submissions=lake.uri(SUBMISSIONS_TABLE),
            answers=lake.uri(ANSWERS_TABLE),
            quarantine=lake.uri(QUARANTINE_TABLE),
            storage_options=lake.storage_options(),
        )


# -- helpers -----------------------------------------------------------------------
def with_retries(
    step: Callable[[], T], *, attempts: int = 6, base_delay: float = 0.2, sleep: Callable[[float], None] = time.sleep
) -> tuple[T, int]:
    """Run ``step`` until it commits; a lost commit race is retried with jittered backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return step(), attempt
        except (CommitFailedError, DeltaError) as e:
            if attempt == attempts or not _is_commit_race(e):
                raise
            sleep(base_delay * 2 ** (attempt - 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _is_commit_race(e: Exception) -> bool:
    if isinstance(e, CommitFailedError):
        return True
    # two first writes racing to create the table: the loser retries as a merge
    return "already exists" in str(e)


def table_exists(uri: str, storage_options: dict[str, str] | None = None) -> bool:
    return DeltaTable.is_deltatable(uri, storage_options=storage_options)


def table_version(uri: str, storage_options: dict[str, str] | None = None) -> int | None:
    if not table_exists(uri, storage_options):
        return None
    return DeltaTable(uri, storage_options=storage_options).version()


def read_table(uri: str, storage_options: dict[str, str] | None = None, version: int | None = None) -> pl.DataFrame | None:
    """The whole table (or None when it does not exist yet)."""
    if not table_exists(uri, storage_options):
        return None
    return pl.read_delta(uri, version=version, storage_options=storage_options)


def _scan(uri: str, storage_options: dict[str, str] | None, version: int | None = None) -> pl.LazyFrame:
    return pl.scan_delta(uri, version=version, storage_options=storage_options)


def _align(source: pl.DataFrame, target: pl.Schema) -> pl.DataFrame:
    """Source with every target column (missing ones null), target columns first."""
    missing = [pl.lit(None, dtype=target[c]).alias(c) for c in target if c not in source.columns]
    out = source.with_columns(missing) if missing else source
    return out.select([*(c for c in target), *(c for c in out.columns if c not in target)])


def _add_new_columns(uri: str, source: pl.DataFrame, target: pl.Schema,
                     storage_options: dict[str, str] | None) -> bool:
    """Add the source's columns the table lacks (a v2 field) to the table, whether or not
    any of the source's rows is then written: the schema follows every batch merged, in
    any order. Returns whether it added any."""
    new = [c for c in source.columns if c not in target]
    if new:
        fields = Schema.from_arrow(source.select(new).to_arrow().schema).fields
        DeltaTable(uri, storage_options=storage_options).alter.add_columns(fields)
    return bool(new)


def _create(uri: str, frame: pl.DataFrame, storage_options: dict[str, str] | None) -> MergeOutcome:
    """Create the table with ``frame``, in one commit. mode="error": if another writer
    created the table meanwhile, this fails and the step is retried as a merge."""
    write_deltalake(uri, frame.to_arrow(), mode="error", storage_options=storage_options)
    return MergeOutcome(uri, 0, inserted=frame.height, created=True, committed=True)


def _outcome(uri: str, metrics: dict, storage_options: dict[str, str] | None) -> MergeOutcome:
    inserted = int(metrics.get("num_target_rows_inserted", 0))
    updated = int(metrics.get("num_target_rows_updated", 0))
    deleted = int(metrics.get("num_target_rows_deleted", 0))
    return MergeOutcome(
        uri,
        DeltaTable(uri, storage_options=storage_options).version(),
        inserted=inserted,
        updated=updated,
        deleted=deleted,
        committed=bool(inserted or updated or deleted),
        files_rewritten=int(metrics.get("num_target_files_removed", 0)),
    )


# -- key-range slices ------------------------------------------------------------------
@dataclass(frozen=True)
class KeySlice:
    """``lo <= submission_id < hi``; None is unbounded."""

    lo: str | None
    hi: str | None

    def expr(self, column: str = "submission_id") -> pl.Expr:
        e = pl.lit(True)
        if self.lo is not None:
            e = e & (pl.col(column) >= self.lo)
        if self.hi is not None:
            e = e & (pl.col(column) < self.hi)
        return e

    def holds(self, value: str) -> bool:
        return (self.lo is None or value >= self.lo) and (self.hi is None or value < self.hi)


def key_slices(bounds: tuple[str, ...] = KEY_SLICE_BOUNDS) -> list[KeySlice]:
    edges = [None, *sorted(bounds), None]
    return [KeySlice(lo, hi) for lo, hi in zip(edges, edges[1:], strict=False)]


WHOLE_TABLE = [KeySlice(None, None)]


def merge_slices(dt: DeltaTable, column: str = "submission_id") -> list[KeySlice]:
    """The slices to merge ``dt`` in: ``key_slices()`` when every data file holds keys of
    one slice only (by the file's min/max statistics), else the whole table at once
    (slicing a table whose files span ranges would rewrite such a file once per range)."""
    slices = key_slices()
    actions = pl.DataFrame(dt.get_add_actions(flatten=True))
    lo, hi = f"min.{column}", f"max.{column}"
    if actions.height == 0:
        return slices
    if lo not in actions.columns or hi not in actions.columns:
        return WHOLE_TABLE
    for mn, mx in actions.select(lo, hi).iter_rows():
        if mn is None or mx is None or not any(s.holds(mn) and s.holds(mx) for s in slices):
            return WHOLE_TABLE
    return slices


# the size the files of new rows aim at: small enough that a correction of a recent
# submission rewrites a small file, large enough to keep the file count low
FILE_BYTES = 2 * 1024 * 1024
# ... except the newest rows a write adds to a key range. Corrections follow their first
# version closely, so the next batches' corrections hit the newest rows, and a correction
# rewrites the whole file holding its row: the last FILE_BYTES of a write go in files
# halving in size towards the newest, down to FILE_BYTES / NEWEST_FILE_SPLIT (four more
# files a range, the newest ones). For the bench's 1M-event batch into a 1M-event table,
# whose corrections are of the last 3% of the table's rows, the merge rewrote 3.1M
# answer rows in 16 files of 2 MiB to change 978; with the smaller newest files, 161k
# (the answers merge: 5.5-5.7 s -> 4.2-4.3 s)
NEWEST_FILE_SPLIT = 16


def _arrival_sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows by ``kafka_offset``, ties (other partitions) in their given order: a stable sort
    on one integer column, several times faster in polars than a sort on two columns
    (2.1 s against 0.13 s for a 1M-event batch's 5.6M answers). Rows already in that
    order (``BatchAnswers.filter`` builds them so) are not sorted again."""
    if "kafka_offset" not in frame.columns or frame.get_column("kafka_offset").is_sorted():
        return frame
    return frame.sort("kafka_offset", maintain_order=True)


def _create_sliced(uri: str, rows_in: Callable[[KeySlice], pl.DataFrame], empty: pl.DataFrame,
                   storage_options: dict[str, str] | None) -> MergeOutcome:
    """Create the table so that each file holds one key range (see KEY_SLICE_BOUNDS), in
    two commits: the table with its columns and no rows (mode="error": losing a creation
    race fails it and the caller retries as a merge), then every slice's files in one
    append, cut as every merge cuts them (``_BatchCommit.add``); a crash between them
    leaves an empty table the re-run merges the batch into.

    ``rows_in(slice)`` gives a slice's rows; they are built and written one slice at a
    time (all 16 at once, next to the batch they came from, were the memory peak of a
    first batch's Silver step). ``empty``: the table's columns."""
    write_deltalake(uri, empty.head(0).to_arrow(), mode="error", storage_options=storage_options)
    dt = DeltaTable(uri, storage_options=storage_options)
    inserted = 0
    with _BatchCommit(dt, storage_options) as append:
        for sl in key_slices():
            part = rows_in(sl)
            append.add(part)
            inserted += part.height
            del part
    # versions 0 (the creation) and 1 (the rows, if any)
    return MergeOutcome(uri, 1 if append.committed else 0, inserted=inserted, created=True, committed=True)


# -- a batch's files, added and removed, in one commit ------------------------------------------------
def _stat_value(value: object) -> object:
    """A min/max statistic as delta-rs writes it in the log: a timestamp with a time zone
    as UTC ISO-8601 with a ``Z``; one without (``timestamp_ntz``) as its wall time, with
    no zone and no conversion (``astimezone`` would read it as the machine's local time)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return value


def _stat_kinds(schema: pl.Schema) -> dict[str, pl.DataType]:
    """The columns whose min and max go in the stats: strings, integers, timestamps."""
    return {c: t for c, t in schema.items() if t == pl.String or t.is_integer() or isinstance(t, pl.Datetime)}


def _stats_json(rows: int, columns: list[str], kinds: dict[str, pl.DataType], nulls: dict[str, int],
                lo_raw: dict[str, object], hi_raw: dict[str, object]) -> str:
    """The add action's ``stats``; a column without a min (every value null) gets no bounds.
    A timestamp's min is rounded down and its max up to the millisecond the log keeps,
    so a reader skipping files by them never skips a file holding a match."""
    lo: dict[str, object] = {}
    hi: dict[str, object] = {}
    for c, t in kinds.items():
        if lo_raw.get(c) is None:
            continue
        mn, mx = lo_raw[c], hi_raw[c]
        if isinstance(t, pl.Datetime):
            mn = mn.replace(microsecond=mn.microsecond // 1000 * 1000)
            up = mx.replace(microsecond=mx.microsecond // 1000 * 1000)
            mx = up if up == mx else up + timedelta(milliseconds=1)
        lo[c], hi[c] = _stat_value(mn), _stat_value(mx)
    return json.dumps({
        "numRecords": rows, "minValues": lo, "maxValues": hi,
        "nullCount": {c: nulls[c] for c in columns},
    }, separators=(",", ":"))


def _file_stats(frame: pl.DataFrame) -> str:
    """The ``stats`` of an add action for a file holding ``frame``: row count, and per
    column the null count and, for strings, integers and timestamps, the min and max
    (``_stats_json``), computed from the rows."""
    kinds = _stat_kinds(frame.schema)
    row = frame.select(
        *(pl.col(c).null_count().alias(f"n:{c}") for c in frame.columns),
        *(pl.col(c).min().alias(f"lo:{c}") for c in kinds),
        *(pl.col(c).max().alias(f"hi:{c}") for c in kinds),
    ).row(0, named=True)
    return _stats_json(frame.height, frame.columns, kinds, {c: row[f"n:{c}"] for c in frame.columns},
                       {c: row[f"lo:{c}"] for c in kinds}, {c: row[f"hi:{c}"] for c in kinds})


def _parquet_stats(data: bytes, frame: pl.DataFrame) -> str:
    """``_file_stats(frame)`` read from the footer of ``data``, the Parquet file polars wrote
    of ``frame`` (its writer records every column's null count and exact min and max, row
    group by row group): the same stats without a second pass over the rows (a 1M-event
    batch's 8M written rows: about 0.5 s). Where the footer lacks a figure (a column with
    values but no bounds, a nested or nanosecond column), the rows are read instead."""
    kinds = _stat_kinds(frame.schema)
    if any(isinstance(t, pl.Datetime) and t.time_unit == "ns" for t in kinds.values()):
        return _file_stats(frame)  # the footer's bounds keep nanoseconds a datetime cannot
    meta = pq.read_metadata(io.BytesIO(data))
    if meta.num_rows != frame.height:
        return _file_stats(frame)
    nulls = dict.fromkeys(frame.columns, 0)
    lo: dict[str, object] = {}
    hi: dict[str, object] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        seen = set()
        for i in range(group.num_columns):
            col = group.column(i)
            name, st = col.path_in_schema, col.statistics
            if name not in nulls or st is None or not st.has_null_count:
                return _file_stats(frame)
            seen.add(name)
            nulls[name] += st.null_count
            if name not in kinds:
                continue
            if not st.has_min_max:
                if st.null_count != group.num_rows:  # values, but no bounds
                    return _file_stats(frame)
                continue
            lo[name] = st.min if lo.get(name) is None else min(lo[name], st.min)
            hi[name] = st.max if hi.get(name) is None else max(hi[name], st.max)
        if seen != set(nulls):
            return _file_stats(frame)
    return _stats_json(frame.height, frame.columns, kinds, nulls, lo, hi)


def _file_ends(rows: int, full: int, smallest: int) -> list[int]:
    """Where ``rows`` rows in arrival order are cut into files (each file's end): from the
    newest row back, a file of ``smallest`` rows, then files of as many rows as are behind
    them (each twice the last) up to ``full``, then files of ``full`` rows. The oldest
    file joins the next when it is at most half its size: no file much smaller than its
    neighbour, but the newest."""
    ends = [rows]
    back = smallest
    while back < rows:
        ends.append(rows - back)
        back = back * 2 if back < full else back + full
    ends.reverse()
    if len(ends) > 1 and ends[0] <= (ends[1] - ends[0]) / 2:
        ends.pop(0)
    return ends


class _BatchCommit:
    """Files of several key ranges added to a table, and files removed, in one commit
    (``write_deltalake`` commits once per call, and a call with rows of two ranges may put
    them in one file).

    ``add(frame)`` writes the frame's rows, in arrival order, as Parquet files of about
    ``FILE_BYTES`` that hold that frame's rows only, the newest in smaller files (see
    ``NEWEST_FILE_SPLIT``; ``newest_smaller=False``: all alike), at once (so a caller
    holds one slice's rows at a time); ``remove`` marks files the commit removes. Leaving the
    ``with`` block commits them all (nothing to commit: no commit). If the block raises,
    the files it wrote are deleted: none is in the log."""

    def __init__(self, dt: DeltaTable, storage_options: dict[str, str] | None) -> None:
        self.dt = dt
        # the object store delta-rs writes through (deltalake.fs wraps it for pyarrow, whose
        # writes it refuses); deltalake is pinned exactly
        self.fs = DeltaFileSystemHandler(table_uri=dt.table_uri, options=storage_options)
        self.actions: list[AddAction] = []
        self.removes: list[RemoveAction] = []
        self.inserted = 0  # what the caller counts as new rows
        self.committed = False
        self._bytes_per_row: float | None = None

    def __enter__(self) -> _BatchCommit:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        if self.actions or self.removes:
            try:
                self.dt.create_write_transaction([*self.removes, *self.actions], mode="append",
                                                 schema=self.dt.schema())
            except CommitFailedError:
                self._discard()  # it did not land (a lost race): the retry writes its own files
                raise
            self.committed = True

    def _discard(self) -> None:
        for a in self.actions:
            with contextlib.suppress(Exception):
                self.fs.delete_file(a.path)

    def remove(self, paths: list[str], actions: pl.DataFrame) -> None:
        """Remove ``paths`` (``actions``: their add actions, for their sizes)."""
        size = dict(actions.select("path", "size_bytes").iter_rows())
        now = int(time.time() * 1000)
        self.removes.extend(RemoveAction(path=p, data_change=True, deletion_timestamp=now, size=size[p],
                                         partition_values={}) for p in paths)

    def add(self, frame: pl.DataFrame, *, newest_smaller: bool = True) -> None:
        if frame.height == 0:
            return
        frame = _arrival_sorted(frame)
        if self._bytes_per_row is None:  # a guess from a sample, refined by the larger files written
            sample = frame.head(8192)
            self._bytes_per_row = len(self._parquet(sample)) / sample.height
        # rows of one Kafka record (a submission's answers) stay in one file: cut only
        # where kafka_offset changes
        cuts = (
            frame.select(pl.arg_where(pl.col("kafka_offset").diff() != 0)).to_series()
            if "kafka_offset" in frame.columns else None
        )
        full = max(1, int(FILE_BYTES / self._bytes_per_row))
        start = 0
        for end in _file_ends(frame.height, full, max(1, full // NEWEST_FILE_SPLIT) if newest_smaller else full):
            if cuts is not None and end < frame.height:  # at the next change of offset
                i = int(cuts.search_sorted(end))
                end = int(cuts[i]) if i < len(cuts) else frame.height
            if end > start:
                self._write(frame.slice(start, end - start))
                start = end

    @staticmethod
    def _parquet(chunk: pl.DataFrame) -> bytes:
        buf = io.BytesIO()
        chunk.write_parquet(buf, compression="snappy", statistics=True)
        return buf.getvalue()

    def _write(self, chunk: pl.DataFrame) -> None:
        data = self._parquet(chunk)
        path = f"part-{len(self.actions):05d}-{uuid.uuid4()}-c000.snappy.parquet"
        out = self.fs.open_output_stream(path, None)
        out.write(data)
        out.close()
        if chunk.height >= 8192:
            self._bytes_per_row = len(data) / chunk.height
        self.actions.append(AddAction(path=path, size=len(data), partition_values={},
                                      modification_time=int(time.time() * 1000), data_change=True,
                                      stats=_parquet_stats(data, chunk)))


@dataclass(frozen=True)
class Rewrite:
    """What a batch's merge rows do to the table rows of its key range they match.

    ``rows``: the new content of the rows given (``_file`` kept; a replaced row keeps the
    ``_file`` of the row it replaces, a deleted row is gone); ``inserted``: rows of keys
    the given rows do not hold; ``changed``: the ``_file`` values whose rows changed."""

    rows: pl.DataFrame
    inserted: pl.DataFrame
    changed: pl.Series
    updated: int
    deleted: int


def _read_data_file(fs: DeltaFileSystemHandler, path: str, columns: list[str] | None = None) -> pl.DataFrame:
    """One data file of a table (a module function: tests count the files a merge reads)."""
    f = fs.open_input_file(path)
    try:
        return pl.read_parquet(io.BytesIO(f.read()), columns=columns)
    finally:
        f.close()


def _table_rows(fs: DeltaFileSystemHandler, path: str, schema: pl.Schema) -> pl.DataFrame:
    """A data file's rows with the table's columns, in its order (columns added to the
    table after the file was written are null)."""
    return _align(_read_data_file(fs, path), schema).select(list(schema))


def _merge_by_slices(
    uri: str, source: Callable[[KeySlice], SliceRows | None], storage_options: dict[str, str] | None,
    rewrite: Callable[[pl.DataFrame, pl.DataFrame], Rewrite],
) -> MergeOutcome:
    """Write one batch slice by slice of ``merge_slices``, in one commit.

    ``source(slice)`` gives that slice's rows (None: nothing to write there). Its
    ``fresh`` rows (keys the table does not hold) are written as new files of the slice.
    Its ``merge`` rows are applied copy-on-write: of the slice's files whose statistics
    admit a row at or after the ``floor`` offset, those holding one of their submissions
    are read, ``rewrite(table_rows, merge_rows)`` decides the new rows, and each file whose
    rows changed is replaced by new files of the slice (with the rows inserted). Every
    slice's removes and adds are one commit; a concurrent commit fails it (delta-rs
    checks that no file this transaction read was removed meanwhile) and the step is
    retried from a fresh snapshot. The source is built slice by slice so that what it
    joins against the table is a slice's too."""
    dt = DeltaTable(uri, storage_options=storage_options)
    schema = _scan(uri, storage_options).collect_schema()
    files = pl.DataFrame(dt.get_add_actions(flatten=True))
    updated = deleted = 0
    with _BatchCommit(dt, storage_options) as append:
        for sl in merge_slices(dt):
            part = source(sl)
            if part is None:
                continue
            if part.merge.height:
                # a file without statistics is read
                candidates = files.filter(
                    (sl.expr("min.submission_id") & sl.expr("max.submission_id")).fill_null(True)
                    if "min.submission_id" in files.columns else pl.lit(True))
                if part.floor is not None and "max.kafka_offset" in files.columns:
                    candidates = candidates.filter(pl.col("max.kafka_offset").fill_null(part.floor) >= part.floor)
                ids = part.merge.select(SUBMISSION_KEY).unique()
                touched = [p for p in candidates.get_column("path").to_list()
                           if _read_data_file(append.fs, p, SUBMISSION_KEY).join(ids, on=SUBMISSION_KEY,
                                                                                    how="semi").height]
                rows = pl.concat(
                    [_table_rows(append.fs, p, schema).with_columns(_file=pl.lit(i, pl.Int32))
                     for i, p in enumerate(touched)],
                    how="vertical_relaxed",
                ) if touched else pl.DataFrame(schema={**schema, "_file": pl.Int32})
                r = rewrite(rows, part.merge)
                changed = set(r.changed.to_list())
                append.remove([p for i, p in enumerate(touched) if i in changed],
                              files.filter(pl.col("path").is_in(touched)))
                updated, deleted = updated + r.updated, deleted + r.deleted
                append.add(pl.concat([
                    r.rows.filter(pl.col("_file").is_in(list(changed))).drop("_file"),
                    _align(r.inserted, schema).select(list(schema)),
                ], how="vertical_relaxed"))
                append.inserted += r.inserted.height
            if part.fresh.height:
                fresh = _align(part.fresh, schema)
                if len(fresh.columns) > len(schema):
                    raise ValueError(f"{uri}: rows with columns the table lacks: "
                                     f"{[c for c in fresh.columns if c not in schema]}")
                append.add(fresh)
                append.inserted += fresh.height
    return MergeOutcome(
        uri, DeltaTable(uri, storage_options=storage_options).version(), inserted=append.inserted,
        updated=updated, deleted=deleted, committed=append.committed, files_rewritten=len(append.removes),
    )


def _rewrite_submissions(rows: pl.DataFrame, merge: pl.DataFrame) -> Rewrite:
    """A merge row replaces the table's row of its submission when its version is newer;
    a merge row whose submission the rows do not hold is inserted."""
    src = merge.select(c for c in rows.columns if c != "_file")  # the table's columns, in its order
    seen = rows.select(*VERSION_KEY).join(src.select(VERSION_KEY), on=SUBMISSION_KEY, how="inner", suffix="_s")
    newer_ids = seen.filter(_newer("_s", "")).select(SUBMISSION_KEY)
    replaced = rows.join(newer_ids, on=SUBMISSION_KEY, how="semi")
    # the new version takes the place of the old one, in the old one's file
    new_rows = src.join(replaced.select(*SUBMISSION_KEY, "_file"), on=SUBMISSION_KEY, how="inner")
    out = pl.concat([rows.join(newer_ids, on=SUBMISSION_KEY, how="anti"), new_rows.select(rows.columns)])
    return Rewrite(out, src.join(rows.select(SUBMISSION_KEY), on=SUBMISSION_KEY, how="anti"),
                   replaced.get_column("_file").unique(), updated=replaced.height, deleted=0)


def _rewrite_answers(rows: pl.DataFrame, merge: pl.DataFrame) -> Rewrite:
    """``merge``: ``answers_changes`` rows. A table row matched (same submission and
    question) by a change whose version is newer is deleted (``_action='delete'``) or
    replaced (``'upsert'``); an upsert matching no row is inserted."""
    columns = [c for c in rows.columns if c != "_file"]
    src = merge.select(*columns, "_action")
    matched = rows.select(*ANSWER_KEY, *VERSION_COLUMNS, "_file").join(
        src.select(*ANSWER_KEY, *VERSION_COLUMNS, "_action"), on=ANSWER_KEY, how="inner", suffix="_s")
    hit = matched.filter(_newer("_s", "")).select(*ANSWER_KEY, "_file", "_action")
    out = pl.concat([
        rows.join(hit, on=ANSWER_KEY, how="anti"),
        src.join(hit.filter(pl.col("_action") == "upsert").select(*ANSWER_KEY, "_file"), on=ANSWER_KEY,
                 how="inner").select(rows.columns),
    ])
    inserted = src.filter(pl.col("_action") == "upsert").join(rows.select(ANSWER_KEY), on=ANSWER_KEY,
                                                                how="anti").select(columns)
    n_deleted = hit.filter(pl.col("_action") == "delete").height
    return Rewrite(out, inserted, hit.get_column("_file").unique(), updated=hit.height - n_deleted,
                   deleted=n_deleted)


# -- the three tables ----------------------------------------------------------------
def merge_submissions(
    uri: str, submissions: pl.DataFrame, *, storage_options: dict[str, str] | None = None, attempts: int = 6
) -> MergeOutcome:
    """Upsert one batch's submissions (one row per id); newer version wins."""

    def step() -> MergeOutcome:
        if not table_exists(uri, storage_options):
            return _create_sliced(uri, lambda sl: submissions.filter(sl.expr()), submissions.head(0),
                                  storage_options)
        if submissions.height == 0:
            return MergeOutcome(uri, table_version(uri, storage_options))
        table = _scan(uri, storage_options)
        if _add_new_columns(uri, submissions, table.collect_schema(), storage_options):
            table = _scan(uri, storage_options)
        source = _align(submissions, table.collect_schema())
        current = table.select(VERSION_KEY)

        def rows_in(sl: KeySlice) -> SliceRows | None:
            mine = source.filter(sl.expr())
            if mine.height == 0:
                return None
            held = current.filter(sl.expr()).collect()
            # only versions newer than the table's go to the merge (its guard re-checks)
            newer = mine.join(held, on=SUBMISSION_KEY, how="inner", suffix="_t").filter(_newer("", "_t"))
            return SliceRows(fresh=mine.join(held, on=SUBMISSION_KEY, how="anti"), merge=newer.select(mine.columns),
                             floor=newer.get_column("kafka_offset_t").min())

        return _merge_by_slices(uri, rows_in, storage_options, _rewrite_submissions)

    outcome, n = with_retries(step, attempts=attempts)
    return _with_attempts(outcome, n)


def answers_changes(
    answers: pl.DataFrame, winners: pl.DataFrame, existing: pl.DataFrame | None
) -> pl.DataFrame:
    """The rows that make the answers of the ``winners`` exactly the batch's ``answers``.

    ``winners``: (submission_id + VERSION_COLUMNS) of the batch versions that are the
    table's current version. ``existing``: the answers table's rows of those
    submissions (key + version columns). Returns upserts (``_action='upsert'``, rows
    that differ from the table) and deletes (``_action='delete'``, questions the
    winning version does not have, carrying the winner's version).
    """
    desired = answers.join(winners, on=VERSION_KEY, how="semi")
    if existing is None or existing.height == 0:
        return desired.with_columns(_action=pl.lit("upsert"))
    upserts = desired.join(existing, on=[*ANSWER_KEY, *VERSION_COLUMNS], how="anti")
    stale = existing.select(ANSWER_KEY).join(desired.select(ANSWER_KEY), on=ANSWER_KEY, how="anti")
    deletes = _align(stale.join(winners, on=SUBMISSION_KEY, how="inner"), answers.schema)
    return pl.concat([
        upserts.with_columns(_action=pl.lit("upsert")),
        deletes.select(answers.columns).cast(answers.schema).with_columns(_action=pl.lit("delete")),
    ])


def merge_answers(
    uri: str,
    answers: pl.DataFrame | BatchAnswers,
    *,
    submissions_uri: str,
    batch_versions: pl.DataFrame,
    storage_options: dict[str, str] | None = None,
    attempts: int = 6,
) -> MergeOutcome:
    """Make the answers of every submission this batch won equal to the batch's answers.

    ``batch_versions``: the batch's submissions (submission_id + VERSION_COLUMNS);
    call after ``merge_submissions`` so the table says which of them won. ``answers``
    is read one key range at a time (``filter``), so a ``BatchAnswers`` never has the
    whole batch's rows built at once.
    """
    versions = batch_versions.select(VERSION_KEY)

    def answers_of(sl: KeySlice, won: pl.DataFrame) -> pl.DataFrame:
        # the answer rows of the slice's versions in ``won`` (VERSION_KEY columns)
        if isinstance(answers, BatchAnswers):
            return answers.filter(sl.expr(), of=won)
        return answers.filter(sl.expr()).join(won, on=VERSION_KEY, how="semi")

    def step() -> MergeOutcome:
        # one snapshot of each table for every slice (a slice's rows are untouched by the
        # other slices' merges), so each log is read once per attempt, not once per slice
        current = (
            _scan(submissions_uri, storage_options).select(VERSION_KEY)
            if versions.height and table_exists(submissions_uri, storage_options) else None
        )

        def winners_in(sl: KeySlice) -> pl.DataFrame:
            # the batch versions of the slice that are the table's version. A semi-join
            # with the slice's rows, not an is_in filter in the scan: the scan's filter
            # with the batch's ids cost twice as much
            mine = versions.filter(sl.expr())
            if current is None or mine.height == 0:
                return mine.head(0)
            # a table row that is a batch version has its kafka_offset, at least the least
            # of the batch's: the scan skips the files holding older offsets only
            floor = pl.col("kafka_offset") >= mine.get_column("kafka_offset").min()
            return mine.join(current.filter(sl.expr() & floor).collect(), on=VERSION_KEY, how="semi")

        if not table_exists(uri, storage_options):
            return _create_sliced(
                uri, lambda sl: answers_of(sl, winners_in(sl)),
                answers.head(0), storage_options)
        table = _scan(uri, storage_options)

        def changes_in(sl: KeySlice) -> pl.DataFrame | None:
            # the slice's winners, their rows in the table, the changes: the joins hold one
            # slice of the batch at a time (all at once, they were the step's memory peak)
            won = winners_in(sl)
            if won.height == 0:
                return None
            existing = (
                table.filter(sl.expr()).select(*ANSWER_KEY, *VERSION_COLUMNS).collect()
                .join(won.select(SUBMISSION_KEY), on=SUBMISSION_KEY, how="semi")
            )
            rows = answers_of(sl, won)
            if existing.height == 0:  # no winner has an answer in the table yet: only inserts
                return SliceRows(fresh=rows, merge=rows.head(0))
            # the winners' rows are built once and split by whether the table holds answers
            # of their submission (built twice, for each side, they cost twice as much)
            held = existing.select(SUBMISSION_KEY).unique()
            return SliceRows(
                fresh=rows.join(held, on=SUBMISSION_KEY, how="anti", maintain_order="left"),
                merge=answers_changes(rows.join(held, on=SUBMISSION_KEY, how="semi", maintain_order="left"),
                                      won.join(held, on=SUBMISSION_KEY, how="semi"), existing),
                floor=existing.get_column("kafka_offset").min(),
            )

        return _merge_by_slices(uri, changes_in, storage_options, _rewrite_answers)

    outcome, n = with_retries(step, attempts=attempts)
    return _with_attempts(outcome, n)


def merge_quarantine(
    uri: str, quarantine: pl.DataFrame, *, storage_options: dict[str, str] | None = None, attempts: int = 6
) -> MergeOutcome:
    """Insert quarantined records not already there (by Kafka coordinates)."""

    def step() -> MergeOutcome:
        if not table_exists(uri, storage_options):
            return _create(uri, quarantine, storage_options)
        if quarantine.height == 0:
            return MergeOutcome(uri, table_version(uri, storage_options))
        source = _align(quarantine, _scan(uri, storage_options).collect_schema())
        metrics = (
            DeltaTable(uri, storage_options=storage_options)
            .merge(
                source.to_arrow(),
                predicate="t.kafka_topic = s.kafka_topic AND t.kafka_partition = s.kafka_partition "
                "AND t.kafka_offset = s.kafka_offset",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
            )
            .when_not_matched_insert_all()
            .execute()
        )
        return _outcome(uri, metrics, storage_options)

    outcome, n = with_retries(step, attempts=attempts)
    return _with_attempts(outcome, n)


def _with_attempts(outcome: MergeOutcome, attempts: int) -> MergeOutcome:
    return MergeOutcome(**{**outcome.__dict__, "attempts": attempts})


def merge_batch(tables: SilverTables, parsed: ParsedBatch, *, attempts: int = 6) -> BatchMerge:
    """Merge one parsed batch: quarantine, then submissions, then their answers."""
    so = tables.storage_options
    quarantine = merge_quarantine(tables.quarantine, parsed.quarantine, storage_options=so, attempts=attempts)
    submissions = merge_submissions(tables.submissions, parsed.submissions, storage_options=so, attempts=attempts)
    answers = merge_answers(
        tables.answers,
        parsed.answer_rows,
        submissions_uri=tables.submissions,
        batch_versions=parsed.submissions,
        storage_options=so,
        attempts=attempts,
    )
    return BatchMerge(submissions=submissions, answers=answers, quarantine=quarantine)


# -- housekeeping ----------------------------------------------------------------------
@dataclass(frozen=True)
class VacuumOutcome:
    table_uri: str
    version: int  # the table's version after the vacuum (delta-rs logs it as commits)
    # data files that only versions older than the retention reference: deleted now, or by
    # an earlier vacuum (delta-rs keeps their tombstones in the log and lists them again)
    files_expired: int
    live_files: int  # data files of the current version (untouched)


def vacuum_table(uri: str, retention_hours: int, storage_options: dict[str, str] | None = None
                 ) -> VacuumOutcome | None:
    """Delete the data files that only versions older than ``retention_hours`` reference, and
    the log files past the table's log retention; None when the table does not exist.

    Every merge rewrites the files holding the rows it changes and appends new ones; the
    files it replaced stay on storage for time travel. A stream of small batches left ten
    dead files for each live one within a dozen batches. Readers and writers of the
    current version are unaffected; time travel to a version older than the retention is
    what is given up. The caller guards the retention (an in-flight merge
    still reads the files of the version it started from)."""
    if retention_hours < 0:
        raise ValueError(f"vacuum of {uri}: retention_hours={retention_hours} is negative")
    if not table_exists(uri, storage_options):
        return None
    dt = DeltaTable(uri, storage_options=storage_options)
    # the vacuum's commits advance dt itself; cleanup_metadata changes no version
    removed = dt.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
    dt.cleanup_metadata()
    return VacuumOutcome(uri, dt.version(), files_expired=len(removed), live_files=len(dt.file_uris()))


# A file under half the size the merge aims at is small: a streaming batch's appends
# leave one or two of them per key range; a range with fewer than this many is left as is
SMALL_FILE_BYTES = FILE_BYTES // 2
MIN_SMALL_FILES = 8
# A range's newest small files (by their greatest kafka_offset) are left out: corrections
# follow their first version closely, so the next batches rewrite those files, and a small
# file is cheaper to rewrite than a compacted one. Ad hoc, tables of 220k events from 2k-event
# batches (193 files each): a merge of the next batches took 1.67 s after this compaction
# (77 files), 1.73 s after one that kept none (19 files), 1.60 s with no compaction
KEEP_RECENT_FILES = 2


@dataclass(frozen=True)
class CompactOutcome:
    table_uri: str
    version: int  # the table's version after it (unchanged when nothing was compacted)
    files_before: int  # data files of the current version, before and after
    files_after: int
    files_compacted: int  # small files read and replaced
    files_written: int
    ranges_compacted: int
    # False when not compacted by key range: a table whose files span ranges (see
    # merge_slices; nothing is compacted, as a merge of such a table takes it whole
    # anyway), or the quarantine table, binned by delta-rs (compact_quarantine)
    by_range: bool = True

    @property
    def committed(self) -> bool:
        return self.files_compacted > 0


def compact_table(uri: str, storage_options: dict[str, str] | None = None, *,
                  min_small_files: int = MIN_SMALL_FILES, small_bytes: int = SMALL_FILE_BYTES,
                  keep_recent: int = KEEP_RECENT_FILES, attempts: int = 6) -> CompactOutcome | None:
    """Rewrite each key range's small files as files of about ``FILE_BYTES``, every
    range in one commit; None when the table does not exist.

    A range is compacted when it has at least ``min_small_files`` files under
    ``small_bytes`` besides its ``keep_recent`` newest ones (by greatest
    ``kafka_offset``), which are left for the corrections of the next batches. Their rows
    are written back in arrival order (``kafka_offset``), cut only where the offset
    changes, so the layout the merge relies on holds: each file holds keys of one range,
    and its ``kafka_offset`` statistics bound what it holds.

    The commit is logged as a data change, although it only rearranges rows: delta-rs's
    conflict check passes over removes logged with ``dataChange`` false, so a merge that
    read a file this commit replaced would commit too, and the file's old rows would be
    back beside the merge's new ones. As a data change, the later of the two commits
    fails and is retried from a fresh snapshot. The Silver pool keeps such races rare
    (one writer at a time)."""
    if min_small_files < 2:
        raise ValueError(f"compaction of {uri}: min_small_files={min_small_files}, expected at least 2")
    if keep_recent < 0:
        raise ValueError(f"compaction of {uri}: keep_recent={keep_recent} is negative")

    def step() -> CompactOutcome | None:
        if not table_exists(uri, storage_options):
            return None
        dt = DeltaTable(uri, storage_options=storage_options)
        files = pl.DataFrame(dt.get_add_actions(flatten=True))
        slices = merge_slices(dt) if files.height else []
        if slices == WHOLE_TABLE:
            return CompactOutcome(uri, dt.version(), files.height, files.height, 0, 0, 0, by_range=False)
        schema = _scan(uri, storage_options).collect_schema()
        ranges = compacted = 0
        with _BatchCommit(dt, storage_options) as commit:
            for sl in slices:
                small = files.filter(
                    (sl.expr("min.submission_id") & sl.expr("max.submission_id")).fill_null(False)
                    & (pl.col("size_bytes") < small_bytes)
                ).sort("max.kafka_offset", descending=True, nulls_last=True).slice(keep_recent)
                if small.height < min_small_files:
                    continue
                paths = small.get_column("path").to_list()
                rows = pl.concat([_table_rows(commit.fs, p, schema) for p in paths], how="vertical_relaxed")
                expected = int(small.get_column("num_records").sum())
                if rows.height != expected:  # the log and the files disagree: commit nothing
                    raise RuntimeError(f"compaction of {uri}: {len(paths)} files of range {sl} hold "
                                       f"{rows.height} rows, their add actions say {expected}")
                commit.remove(paths, small)
                # older rows than the files kept for the corrections: no smaller newest files,
                # which would be small files for the next compaction again
                commit.add(rows, newest_smaller=False)
                ranges, compacted = ranges + 1, compacted + len(paths)
                del rows
        version = DeltaTable(uri, storage_options=storage_options).version()
        return CompactOutcome(uri, version, files.height, files.height - compacted + len(commit.actions),
                              compacted, len(commit.actions), ranges)

    outcome, _ = with_retries(step, attempts=attempts)
    return outcome


def compact_quarantine(uri: str, storage_options: dict[str, str] | None = None, *,
                       min_small_files: int = MIN_SMALL_FILES, small_bytes: int = SMALL_FILE_BYTES
                       ) -> CompactOutcome | None:
    """The quarantine table has no key layout (rows keyed by Kafka coordinates, inserted
    by delta-rs MERGE): its small files are binned by delta-rs's own OPTIMIZE, when there
    are at least ``min_small_files`` of them. None when the table does not exist."""
    if not table_exists(uri, storage_options):
        return None
    dt = DeltaTable(uri, storage_options=storage_options)
    files = pl.DataFrame(dt.get_add_actions(flatten=True))
    n_small = files.filter(pl.col("size_bytes") < small_bytes).height if files.height else 0
    if n_small < min_small_files:
        return CompactOutcome(uri, dt.version(), files.height, files.height, 0, 0, 0, by_range=False)
    metrics = dt.optimize.compact(target_size=FILE_BYTES)
    return CompactOutcome(uri, dt.version(), files.height, len(dt.file_uris()),
                          int(metrics.get("numFilesRemoved", 0)), int(metrics.get("numFilesAdded", 0)), 0,
                          by_range=False)


# -- reading back ----------------------------------------------------------------------
def table_row_count(uri: str, storage_options: dict[str, str] | None = None) -> int:
    if not table_exists(uri, storage_options):
        return 0
    return int(_scan(uri, storage_options).select(pl.len()).collect().item())


def answers_inconsistencies(submissions: pl.DataFrame, answers: pl.DataFrame) -> pl.DataFrame:
    """Submissions whose answers are not exactly their winning version's: answer rows
    of another version or of no submission, or a count different from answer_count.
    One row per submission id with the problem; empty when the tables agree."""
    per_version = answers.group_by(VERSION_KEY).agg(pl.len().cast(pl.Int64).alias("answer_rows"))
    joined = submissions.select(*VERSION_KEY, pl.col("answer_count").cast(pl.Int64)).join(
        per_version, on=VERSION_KEY, how="full", coalesce=True
    )
    return (
        joined.with_columns(
            problem=pl.when(pl.col("answer_count").is_null())
            .then(pl.lit("answers of a version that is not the submission's"))
            .when(pl.col("answer_rows").is_null())
            .then(pl.lit("no answers for the winning version"))
            .when(pl.col("answer_rows") != pl.col("answer_count"))
            .then(pl.lit("answer rows differ from answer_count"))
        )
        .filter(pl.col("problem").is_not_null())
        .sort(SUBMISSION_KEY)
    )
