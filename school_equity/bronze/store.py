"""Where Bronze batch files live and how they are read back. No Dagster imports."""

from __future__ import annotations

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
    frames = [lake.read_parquet(f) for f in files]
    # range files are each in offset order: put them in (partition, offset) order and the
    # batch needs no sort (a sort copies the whole batch, payloads included)
    frames.sort(key=lambda f: f.select(pl.col("partition").first(), pl.col("offset").first()).row(0)
                if f.height else (-1, -1))
    df = pl.concat(frames, how="vertical")
    return df if _in_key_order(df) else df.sort(["partition", "offset"])


def _in_key_order(df: pl.DataFrame) -> bool:
    """Whether (partition, offset) strictly increases row by row."""
    step = pl.col("partition").diff()
    return bool(df.select(((step > 0) | ((step == 0) & (pl.col("offset").diff() > 0))).all()).item())
