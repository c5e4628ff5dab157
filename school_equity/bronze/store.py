"""Where Bronze batch files live and how they are read back. No Dagster imports."""

from __future__ import annotations

import io

import polars as pl
import pyarrow as pa

from school_equity.lake import Lake

BRONZE_EVENTS_PREFIX = "bronze/survey_events"

BRONZE_SCHEMA = pa.schema([
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("timestamp", pa.timestamp("ms", tz="UTC")),
    ("timestamp_type", pa.int8()),
    ("key", pa.binary()),
    ("value", pa.binary()),
    ("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
    ("batch_id", pa.string()),
    ("ingested_at", pa.timestamp("us", tz="UTC")),
])


def batch_dir(batch_id: str) -> str:
    return f"{BRONZE_EVENTS_PREFIX}/batch={batch_id}"


def range_file(batch_id: str, topic: str, partition: int, start: int, end: int) -> str:
    """One file per topic-partition range of a batch (end exclusive)."""
    return f"{batch_dir(batch_id)}/{topic}-{partition}-{start}-{end}.parquet"


def read_batch(lake: Lake, batch_id: str) -> pl.DataFrame:
    """All Bronze records of one batch, ordered by (partition, offset)."""
    files = [f for f in lake.list(batch_dir(batch_id)) if f.endswith(".parquet")]
    if not files:
        return pl.from_arrow(BRONZE_SCHEMA.empty_table())
    frames = [pl.read_parquet(io.BytesIO(lake.read_bytes(f))) for f in files]
    return pl.concat(frames, how="vertical").sort(["partition", "offset"])
