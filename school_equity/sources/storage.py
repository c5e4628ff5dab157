"""Where the batch sources live in the lake, and how they are written. No Dagster.

Bronze: ``bronze/<source>/vintage=<v>/<ingested_at>_<sha256[:16]>.parquet``, one
immutable file per distinct source file landed for a vintage. Names sort by ingest
time, so the newest file is the vintage's current content and older ones are its
history. Landing the same bytes again writes nothing (the newest name already
carries their hash).

Silver: a Delta table per source under ``silver/<table>``, partitioned on disk by the
year column; a vintage is replaced with ``overwrite`` + a predicate on that column,
which leaves every other vintage's files untouched.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from school_equity.lake import Lake
from school_equity.sources.catalog import SourceSpec

INGEST_COLUMNS = ["_source_uri", "_source_sha256", "_ingested_at", "_vintage", "_row_number"]
_STAMP = "%Y%m%dT%H%M%S%fZ"


# --- Bronze ---------------------------------------------------------------


@dataclass(frozen=True)
class BronzeFile:
    path: str  # relative to the lake root
    ingested_at: datetime
    sha256_prefix: str


def bronze_dir(spec: SourceSpec, vintage: str) -> str:
    return f"bronze/{spec.name}/vintage={vintage}"


def bronze_file_path(spec: SourceSpec, vintage: str, ingested_at: datetime, sha256: str) -> str:
    return f"{bronze_dir(spec, vintage)}/{ingested_at.astimezone(UTC).strftime(_STAMP)}_{sha256[:16]}.parquet"


def bronze_files(lake: Lake, spec: SourceSpec, vintage: str) -> list[BronzeFile]:
    """The vintage's landed files, oldest first (hidden temporaries excluded)."""
    out = []
    for rel in lake.list(bronze_dir(spec, vintage)):
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(".") or not name.endswith(".parquet"):
            continue
        stamp, _, sha = name.removesuffix(".parquet").partition("_")
        try:
            at = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
        except ValueError:
            continue  # not ours
        out.append(BronzeFile(rel, at, sha))
    return sorted(out, key=lambda f: f.path)


def latest_bronze_file(lake: Lake, spec: SourceSpec, vintage: str) -> BronzeFile | None:
    files = bronze_files(lake, spec, vintage)
    return files[-1] if files else None


def bronze_frame(raw: pl.DataFrame, *, source_uri: str, sha256: str, ingested_at: datetime, vintage: str) -> pl.DataFrame:
    """The source's string columns as read, plus the ingest columns."""
    clash = [c for c in INGEST_COLUMNS if c in raw.columns]
    if clash:
        raise ValueError(f"source file has column(s) {clash} that Bronze reserves for ingest metadata")
    return raw.with_columns(
        pl.lit(source_uri, pl.String).alias("_source_uri"),
        pl.lit(sha256, pl.String).alias("_source_sha256"),
        pl.lit(ingested_at.astimezone(UTC), pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.lit(vintage, pl.String).alias("_vintage"),
        pl.int_range(1, raw.height + 1, dtype=pl.Int64).alias("_row_number"),
    )


def write_bronze(lake: Lake, path: str, frame: pl.DataFrame) -> None:
    """One Parquet file, all or nothing (``Lake.atomic_writer``)."""
    with lake.atomic_writer(path) as f:
        frame.write_parquet(f, compression="zstd")


def read_bronze(lake: Lake, path: str) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(lake.read_bytes(path)))


# --- Silver ---------------------------------------------------------------


def silver_uri(lake: Lake, spec: SourceSpec) -> str:
    return lake.uri("silver", spec.silver_table)


def silver_exists(lake: Lake, spec: SourceSpec) -> bool:
    return DeltaTable.is_deltatable(silver_uri(lake, spec), storage_options=lake.storage_options())


def read_silver(lake: Lake, spec: SourceSpec, vintage: int | None = None) -> pl.DataFrame | None:
    """The whole table, or one vintage; None when the table was never written."""
    if not silver_exists(lake, spec):
        return None
    scan = pl.scan_delta(silver_uri(lake, spec), storage_options=lake.storage_options())
    if vintage is not None:
        scan = scan.filter(pl.col(spec.year_column) == vintage)
    return scan.collect()


def replace_vintage(lake: Lake, spec: SourceSpec, frame: pl.DataFrame, vintage: int, *, attempts: int = 4) -> int:
    """Make the table's rows for ``vintage`` exactly ``frame``; returns the Delta version.

    Two vintages written at once race on the log (CommitFailedError) or on creating
    the table; both are retried, and the retry re-reads the log so it commits on top.
    """
    if frame[spec.year_column].unique().to_list() not in ([vintage], []):
        raise ValueError(f"{spec.silver_table}: rows for other vintages than {vintage} in the frame")
    uri, options = silver_uri(lake, spec), lake.storage_options()
    predicate = f"{spec.year_column} = {int(vintage)}"
    for attempt in range(1, attempts + 1):
        try:
            if DeltaTable.is_deltatable(uri, storage_options=options):
                frame.write_delta(
                    uri, mode="overwrite", storage_options=options, delta_write_options={"predicate": predicate}
                )
            else:
                frame.write_delta(
                    uri, mode="error", storage_options=options,
                    delta_write_options={"partition_by": [spec.year_column]},
                )
            return DeltaTable(uri, storage_options=options).version()
        except (CommitFailedError, TableNotFoundError, DeltaError) as exc:
            retryable = isinstance(exc, CommitFailedError) or "already exists" in str(exc).lower()
            if not retryable or attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")
