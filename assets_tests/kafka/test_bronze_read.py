"""Reading a Bronze batch back: every range file, in (partition, offset) order."""

from __future__ import annotations

import io

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from assets_tests.silver.silver_events import bronze_table, write_bronze
from school_equity.bronze.store import BRONZE_SCHEMA, range_file, read_batch
from school_equity.lake import Lake

B = "b000000007"


def _land(lake: Lake, ranges: list[tuple[int, list[int]]]) -> pl.DataFrame:
    """Write one range file per (partition, offsets); return every row, sorted."""
    tables = []
    for partition, offsets in ranges:
        t = bronze_table([f'{{"n": {partition}{o}}}'.encode() for o in offsets], batch_id=B,
                         partition=partition, offsets=offsets)
        write_bronze(lake, t)
        tables.append(pl.from_arrow(t))
    return pl.concat(tables).sort(["partition", "offset"])


@pytest.mark.parametrize("ranges", [
    # partitions whose file names sort out of numeric order (10 before 2), two ranges of one partition
    [(10, [0, 1, 2]), (2, [5, 6]), (0, [3]), (2, [7, 9])],
    # a file whose offsets are not in order inside it: the batch is sorted instead
    [(1, [4, 2, 3]), (0, [0, 1])],
    # an empty range file
    [(3, []), (1, [0])],
])
def test_read_batch_returns_every_record_in_partition_offset_order(tmp_path, ranges):
    lake = Lake(str(tmp_path))
    expected = _land(lake, [(p, o) for p, o in ranges if o])
    for p, o in ranges:
        if not o:  # the landing writes an empty file for a range with no records left
            buf = io.BytesIO()
            pq.write_table(BRONZE_SCHEMA.empty_table(), buf)
            lake.write_bytes_atomic(range_file(B, "survey_submissions", p, 0, 0), buf.getvalue())
    got = read_batch(lake, B)
    assert_frame_equal(got, expected)
