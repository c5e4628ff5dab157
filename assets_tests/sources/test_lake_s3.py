"""Bronze batches read back the same from a local lake and from S3 (moto on loopback)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from school_equity.bronze.store import BRONZE_SCHEMA, range_file, read_batch
from school_equity.lake import Lake


def _range(partition: int, start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "topic": ["t"] * n,
            "partition": [partition] * n,
            "offset": list(range(start, start + n)),
            "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)] * n,
            "timestamp_type": [0] * n,
            "key": [f"k{partition}-{i}".encode() for i in range(n)],
            "value": [b'{"i": %d}' % i if i % 7 else None for i in range(n)],
            "headers": [[{"key": "h", "value": b"v"}]] * n,
            "batch_id": ["b000000003"] * n,
            "ingested_at": [datetime(2026, 1, 1, 0, 1, tzinfo=UTC)] * n,
        }
    ).cast(BRONZE_SCHEMA)


def test_read_batch_same_on_s3_and_local(s3_lake_root, tmp_path):
    ranges = [(2, 40, 5), (0, 10, 7), (1, 0, 3)]  # written out of partition order
    frames = {}
    for name, lake in (("local", Lake(str(tmp_path / "lake"))), ("s3", Lake(s3_lake_root))):
        for p, start, n in ranges:
            buf = io.BytesIO()
            pq.write_table(_range(p, start, n), buf)
            lake.write_bytes_atomic(range_file("b000000003", "t", p, start, start + n), buf.getvalue())
        frames[name] = read_batch(lake, "b000000003")
    local, s3 = frames["local"], frames["s3"]
    assert local.schema == pl.from_arrow(BRONZE_SCHEMA.empty_table()).schema
    assert local.height == 15
    assert local.select("partition", "offset").rows() == sorted(local.select("partition", "offset").rows())
    assert local.get_column("value").null_count() == 3  # null payloads stay null
    assert s3.equals(local)
