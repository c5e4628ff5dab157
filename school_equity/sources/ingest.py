"""Land one vintage of a source in Bronze: find its file, fetch it, write it. No Dagster.

Nothing reaches the lake before the whole file is local, hashed and parsed as CSV;
the single Parquet write is atomic. So a failed download, a truncated file or a
file that is not CSV leaves the vintage exactly as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from school_equity.lake import Lake
from school_equity.sources import storage
from school_equity.sources.catalog import SourceSpec, validate_vintage
from school_equity.sources.download import LocalFile, download, is_url, sha256_file
from school_equity.sources.landing import find_landing_file
from school_equity.sources.parsing import read_source_csv


class SourceNotFoundError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class ResolvedSource:
    uri: str  # URL or absolute local path
    origin: str  # run_config | download_url | landing | shipped


def resolve_source(
    spec: SourceSpec,
    vintage: str,
    *,
    source_uri: str | None = None,
    download_urls: dict[str, str] | None = None,
    landing_dir: str = "",
) -> ResolvedSource:
    """Which file a vintage is landed from (first that applies): the run's ``source_uri``,
    a configured download URL, the newest landing-folder file, the shipped sample."""
    validate_vintage(vintage)
    if source_uri:
        return ResolvedSource(source_uri, "run_config")
    url = (download_urls or {}).get(f"{spec.name}/{vintage}")
    if url:
        return ResolvedSource(url, "download_url")
    if landing_dir:
        found = find_landing_file(landing_dir, spec, vintage)
        if found:
            return ResolvedSource(str(found.resolve()), "landing")
    shipped = spec.shipped_path(vintage)
    if shipped and shipped.exists():
        return ResolvedSource(str(shipped), "shipped")
    raise SourceNotFoundError(
        f"{spec.name} vintage {vintage}: no source file. Drop one named like "
        f"{spec.landing_pattern.pattern!r} into the landing folder ({landing_dir or 'not configured'}), set "
        f"download_urls['{spec.name}/{vintage}'] on the public_sources resource, or pass source_uri in run config"
        + (f" (the publisher's URL for this vintage: {spec.publisher_urls[vintage]})" if vintage in spec.publisher_urls else "")
    )


@contextmanager
def fetched(uri: str, work_dir: str, *, timeout: float = 120.0) -> Iterator[LocalFile]:
    """A complete local copy of ``uri`` (downloads are removed afterwards; local files are read in place)."""
    if is_url(uri):
        local = download(uri, work_dir, timeout=timeout)
        try:
            yield local
        finally:
            os.unlink(local.path)
        return
    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise SourceNotFoundError(f"source file {uri!r} does not exist")
    sha, size = sha256_file(path)
    yield LocalFile(path, sha, size, str(path))


@dataclass(frozen=True)
class LandResult:
    path: str  # the vintage's current Bronze file (relative to the lake)
    written: bool  # False: the newest file already holds these bytes
    sha256: str
    size: int
    rows: int
    ingested_at: datetime
    source_uri: str
    replaced_sha256_prefix: str | None  # the vintage's previous content, when it changed
    frame: pl.DataFrame


def land_vintage(
    lake: Lake,
    spec: SourceSpec,
    vintage: str,
    local: LocalFile,
    *,
    expected_sha256: str | None = None,
    now: datetime | None = None,
) -> LandResult:
    """Bronze for one vintage from a complete local file; idempotent: the same bytes
    twice give one file."""
    validate_vintage(vintage)
    if expected_sha256 and expected_sha256 != local.sha256:
        raise ValueError(
            f"{local.source_uri}: sha256 {local.sha256} differs from the expected {expected_sha256} "
            f"(the file changed after it was announced)"
        )
    raw = read_source_csv(local.path)
    latest = storage.latest_bronze_file(lake, spec, vintage)
    if latest is not None and local.sha256.startswith(latest.sha256_prefix):
        frame = storage.read_bronze(lake, latest.path)
        return LandResult(
            latest.path, False, local.sha256, local.size, frame.height,
            frame["_ingested_at"][0], frame["_source_uri"][0], None, frame,
        )
    ingested_at = (now or datetime.now(UTC)).astimezone(UTC)
    frame = storage.bronze_frame(
        raw, source_uri=local.source_uri, sha256=local.sha256, ingested_at=ingested_at, vintage=vintage
    )
    path = storage.bronze_file_path(spec, vintage, ingested_at, local.sha256)
    storage.write_bronze(lake, path, frame)
    return LandResult(
        path, True, local.sha256, local.size, frame.height, ingested_at, local.source_uri,
        latest.sha256_prefix if latest else None, frame,
    )
