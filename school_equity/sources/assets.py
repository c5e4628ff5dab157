"""Bronze and Silver assets of the public batch sources (SVI, survey results, school
locations), their checks and jobs. Thin glue: the rules live in ``parsing``,
``ingest`` and ``storage``.

Partitions: one dynamic partitions set per source, keyed by vintage year
(``svi_vintages`` "2022", ``survey_results_vintages`` "2019", ``location_vintages``
"2018" for 2017-18). Dynamic rather than static so a new year is added by the landing
sensor (or the UI) without a code change; the key equals the Silver year column.
"""

import tempfile

import dagster as dg
import pandera.polars as pa
import polars as pl
from pydantic import Field

from school_equity.contracts import sources as contracts
from school_equity.contracts.checks import (
    ContractViolation,
    contract_checks,
    empty_frame,
    table_schema,
    validate_or_raise,
)
from school_equity.lake import Lake
from school_equity.resources import LakeResource
from school_equity.sources import storage
from school_equity.sources.catalog import LOCATIONS, SURVEY_RESULTS, SVI, SourceSpec
from school_equity.sources.ingest import fetched, land_vintage, resolve_source
from school_equity.sources.parsing import (
    Parsed,
    canonical_header,
    flag_svi_matches,
    parse_locations,
    parse_survey_results,
    parse_svi,
)
from school_equity.sources.resources import PublicSourcesResource

OWNERS = ["team:data-eng"]
SILVER_POOL = "silver_delta"  # one Delta writer at a time (see dagster_home/dagster.yaml)
# unmatched schools above this share point at a tract vintage mismatch, not at a few split tracts
MAX_UNMATCHED_SHARE = 0.2

SVI_VINTAGES = dg.DynamicPartitionsDefinition(name=SVI.partitions_name)
SURVEY_RESULTS_VINTAGES = dg.DynamicPartitionsDefinition(name=SURVEY_RESULTS.partitions_name)
LOCATION_VINTAGES = dg.DynamicPartitionsDefinition(name=LOCATIONS.partitions_name)
PARTITIONS: dict[str, dg.DynamicPartitionsDefinition] = {
    SVI.name: SVI_VINTAGES,
    SURVEY_RESULTS.name: SURVEY_RESULTS_VINTAGES,
    LOCATIONS.name: LOCATION_VINTAGES,
}

BRONZE_KEYS = {name: dg.AssetKey(["bronze", name]) for name in PARTITIONS}
SILVER_KEYS = {
    SVI.name: dg.AssetKey(["silver", SVI.silver_table]),
    SURVEY_RESULTS.name: dg.AssetKey(["silver", SURVEY_RESULTS.silver_table]),
    LOCATIONS.name: dg.AssetKey(["silver", LOCATIONS.silver_table]),
}
SILVER_CONTRACTS: dict[str, type[pa.DataFrameModel]] = {
    SVI.name: contracts.SviTract,
    SURVEY_RESULTS.name: contracts.SchoolSurveyResults,
    LOCATIONS.name: contracts.SchoolLocation,
}
BRONZE_CONTRACTS: dict[str, type[pa.DataFrameModel]] = {
    SVI.name: contracts.BronzeSvi,
    SURVEY_RESULTS.name: contracts.BronzeSchoolSurveyResults,
    LOCATIONS.name: contracts.BronzeSchoolLocations,
}


class SourceFileConfig(dg.Config):
    """Run config of a Bronze source asset; empty means "resolve as usual"."""

    source_uri: str | None = Field(
        default=None, description="http(s) URL or local path of the file to land for this vintage"
    )
    expected_sha256: str | None = Field(
        default=None, description="fail if the file's sha256 differs (set by the landing sensor)"
    )


# --- metadata -------------------------------------------------------------


def table_schema_from_frame(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=str(t)) for n, t in frame.schema.items()])


# --- Bronze ---------------------------------------------------------------


def _bronze_description(spec: SourceSpec) -> str:
    return (
        f"{spec.label}, as published by {spec.publisher}: the file landed unchanged, every column a "
        f"string with its header as written, plus ingest columns (_source_uri, _source_sha256, "
        f"_ingested_at, _vintage, _row_number). Grain: one row per record of the file. Key: "
        f"(_vintage, _row_number). One immutable Parquet file per distinct file landed for a vintage; "
        f"the newest is current. Partition: vintage year."
    )


def build_bronze_asset(spec: SourceSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=BRONZE_KEYS[spec.name],
        partitions_def=PARTITIONS[spec.name],
        description=_bronze_description(spec),
        group_name="bronze",
        owners=OWNERS,
        kinds={"polars", "parquet"},
        metadata={"publisher": spec.publisher, "landing_file_pattern": spec.landing_pattern.pattern},
    )
    def _bronze(
        context: dg.AssetExecutionContext,
        config: SourceFileConfig,
        lake: LakeResource,
        public_sources: PublicSourcesResource,
    ) -> dg.MaterializeResult:
        vintage = context.partition_key
        resolved = resolve_source(
            spec, vintage, source_uri=config.source_uri,
            download_urls=public_sources.download_urls, landing_dir=public_sources.landing_dir,
        )
        context.log.info(f"{spec.name} {vintage}: landing {resolved.uri} ({resolved.origin})")
        lake_ = lake.get_lake()
        with tempfile.TemporaryDirectory(prefix="school_equity-source-") as work:
            with fetched(resolved.uri, work, timeout=public_sources.download_timeout_seconds) as local:
                landed = land_vintage(lake_, spec, vintage, local, expected_sha256=config.expected_sha256)
        if not landed.written:
            context.log.info(f"{spec.name} {vintage}: same bytes as {landed.path}, nothing written")
        elif landed.replaced_sha256_prefix:
            context.log.warning(
                f"{spec.name} {vintage}: new content (sha256 {landed.sha256[:16]}) supersedes "
                f"{landed.replaced_sha256_prefix}; the older file stays in Bronze as history"
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": landed.rows,
                "dagster/column_schema": table_schema_from_frame(landed.frame),
                "dagster/uri": lake_.uri(landed.path),
                "source_uri": resolved.uri,
                "source_origin": resolved.origin,
                "source_sha256": landed.sha256,
                "source_bytes": landed.size,
                "ingested_at": dg.MetadataValue.timestamp(landed.ingested_at),
                "written": landed.written,
                "replaced_sha256_prefix": landed.replaced_sha256_prefix or "",
            },
            # the file's hash is its version: re-landing the same bytes does not make Silver stale
            data_version=dg.DataVersion(landed.sha256),
        )

    return _bronze


bronze_svi = build_bronze_asset(SVI)
bronze_school_survey_results = build_bronze_asset(SURVEY_RESULTS)
bronze_school_locations = build_bronze_asset(LOCATIONS)
BRONZE_ASSETS = {SVI.name: bronze_svi, SURVEY_RESULTS.name: bronze_school_survey_results,
                 LOCATIONS.name: bronze_school_locations}


# --- Silver ---------------------------------------------------------------


def _current_bronze(lake: Lake, spec: SourceSpec, vintage: str) -> tuple[pl.DataFrame, str]:
    latest = storage.latest_bronze_file(lake, spec, vintage)
    if latest is None:
        raise dg.Failure(
            f"{spec.name} vintage {vintage} has no Bronze file in {lake.uri(storage.bronze_dir(spec, vintage))}; "
            f"materialize {BRONZE_KEYS[spec.name].to_user_string()} for this partition first"
        )
    frame = storage.read_bronze(lake, latest.path)
    return frame.drop(storage.INGEST_COLUMNS), latest.path


def _write_silver(
    context: dg.AssetExecutionContext, lake: Lake, spec: SourceSpec, parsed: Parsed, bronze_path: str, extra: dict
) -> dg.MaterializeResult:
    """Validate against the contract, then (only then) replace the vintage's rows."""
    contract = SILVER_CONTRACTS[spec.name]
    try:
        validate_or_raise(parsed.frame, contract)
    except ContractViolation as exc:
        raise dg.Failure(
            description=f"{exc} Nothing was written for vintage {context.partition_key}.",
            metadata={"failures_by_rule": dg.MetadataValue.json(exc.report.by_rule())},
        ) from exc
    vintage = int(context.partition_key)
    version = storage.replace_vintage(lake, spec, parsed.frame, vintage)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": parsed.frame.height,
            "dagster/column_schema": table_schema(contract),
            "dagster/uri": storage.silver_uri(lake, spec),
            "delta_version": version,
            "bronze_file": bronze_path,
            **parsed.stats,
            **extra,
        }
    )


@dg.asset(
    key=SILVER_KEYS[SVI.name],
    partitions_def=SVI_VINTAGES,
    deps=[bronze_svi],
    group_name="silver",
    owners=OWNERS,
    kinds={"polars", "delta", "pandera"},
    pool=SILVER_POOL,
)
def silver_svi_tract(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Social Vulnerability Index per NYC census tract (2020 tracts), typed; sentinels to null.
    Grain: one row per SVI vintage and tract. Key: (svi_year, tract_fips)."""
    lake_ = lake.get_lake()
    raw, bronze_path = _current_bronze(lake_, SVI, context.partition_key)
    return _write_silver(context, lake_, SVI, parse_svi(raw, int(context.partition_key)), bronze_path, {})


@dg.asset(
    key=SILVER_KEYS[SURVEY_RESULTS.name],
    partitions_def=SURVEY_RESULTS_VINTAGES,
    deps=[bronze_school_survey_results],
    group_name="silver",
    owners=OWNERS,
    kinds={"polars", "delta", "pandera"},
    pool=SILVER_POOL,
)
def silver_school_survey_results(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Published NYC School Survey results per school: response rates 0-1, framework scores 1-5,
    district, borough, charter and D75 flags. Grain: school x survey year. Key: (dbn, survey_year)."""
    lake_ = lake.get_lake()
    raw, bronze_path = _current_bronze(lake_, SURVEY_RESULTS, context.partition_key)
    parsed = parse_survey_results(raw, int(context.partition_key))
    return _write_silver(context, lake_, SURVEY_RESULTS, parsed, bronze_path, {})


def latest_svi_tracts(lake: Lake) -> tuple[int, pl.Series]:
    """The newest SVI vintage in Silver and its tract GEOIDs."""
    svi = storage.read_silver(lake, SVI)
    if svi is None or svi.is_empty():
        raise dg.Failure(
            f"{SILVER_KEYS[SVI.name].to_user_string()} is empty: materialize an SVI vintage first, school "
            f"locations are flagged against it"
        )
    year = int(svi["svi_year"].max())
    return year, svi.filter(pl.col("svi_year") == year)["tract_fips"]


@dg.asset(
    key=SILVER_KEYS[LOCATIONS.name],
    partitions_def=LOCATION_VINTAGES,
    deps=[
        bronze_school_locations,
        # every SVI vintage feeds every location vintage: the flag uses the newest one
        dg.AssetDep(SILVER_KEYS[SVI.name], partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="silver",
    owners=OWNERS,
    kinds={"polars", "delta", "pandera"},
    pool=SILVER_POOL,
)
def silver_school_location(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """School locations with their 2010 census tract GEOID, coordinates and geographical district,
    flagged against the newest SVI vintage's tracts (unmatched schools kept and counted).
    Grain: school (DBN) x fiscal year. Key: (dbn, fiscal_year)."""
    lake_ = lake.get_lake()
    raw, bronze_path = _current_bronze(lake_, LOCATIONS, context.partition_key)
    parsed = parse_locations(raw, int(context.partition_key))
    svi_year, tracts = latest_svi_tracts(lake_)
    parsed.frame = flag_svi_matches(parsed.frame, tracts)
    unmatched = parsed.frame.filter(~pl.col("svi_tract_matched"))
    context.log.info(f"{unmatched.height} of {parsed.frame.height} schools have no SVI {svi_year} tract")
    extra = {
        "svi_year_matched_against": svi_year,
        "unmatched_schools": unmatched.height,
        "unmatched_share": round(unmatched.height / max(parsed.frame.height, 1), 4),
        "unmatched_sample": dg.MetadataValue.json(unmatched["dbn"].head(25).to_list()),
    }
    return _write_silver(context, lake_, LOCATIONS, parsed, bronze_path, extra)


SILVER_ASSETS = {SVI.name: silver_svi_tract, SURVEY_RESULTS.name: silver_school_survey_results,
                 LOCATIONS.name: silver_school_location}


# --- checks ---------------------------------------------------------------


def _bronze_reader(spec: SourceSpec):
    """The Bronze "table": every vintage's current file, headers canonical (the contract
    pins canonical names), stacked."""

    def read(lake: Lake) -> pl.DataFrame:
        vintages = sorted({
            part.removeprefix("vintage=")
            for rel in lake.list(f"bronze/{spec.name}")
            for part in rel.split("/")
            if part.startswith("vintage=")
        })
        frames = []
        for vintage in vintages:
            latest = storage.latest_bronze_file(lake, spec, vintage)
            if latest is not None:
                frame = storage.read_bronze(lake, latest.path)
                frames.append(frame.rename({c: canonical_header(c) for c in frame.columns}))
        if not frames:
            return empty_frame(BRONZE_CONTRACTS[spec.name])
        return pl.concat(frames, how="diagonal_relaxed")

    return read


def _silver_reader(spec: SourceSpec):
    def read(lake: Lake) -> pl.DataFrame:
        frame = storage.read_silver(lake, spec)
        return empty_frame(SILVER_CONTRACTS[spec.name]) if frame is None else frame

    return read


# Bronze checks do not block: one malformed vintage must not hold back the others'
# Silver, and Silver guards itself (its parser needs these columns, its contract runs
# before the write). Silver checks block Gold.
BRONZE_CHECKS = [
    c
    for spec in (SVI, SURVEY_RESULTS, LOCATIONS)
    for c in contract_checks(BRONZE_KEYS[spec.name], BRONZE_CONTRACTS[spec.name], _bronze_reader(spec), blocking=False)
]
SILVER_CHECKS = [
    c
    for spec in (SVI, SURVEY_RESULTS, LOCATIONS)
    for c in contract_checks(SILVER_KEYS[spec.name], SILVER_CONTRACTS[spec.name], _silver_reader(spec), blocking=True)
]


@dg.asset_check(
    asset=SILVER_KEYS[LOCATIONS.name],
    name="school_location_svi_match_rate",
    blocking=False,
    description=(
        f"Warns when more than {MAX_UNMATCHED_SHARE:.0%} of a vintage's schools have no tract in the newest "
        f"SVI vintage: a few split tracts are expected (2010 vs 2020), a mass mismatch means the tract "
        f"vintages no longer line up."
    ),
)
def school_location_svi_match_rate(lake: LakeResource) -> dg.AssetCheckResult:
    frame = storage.read_silver(lake.get_lake(), LOCATIONS)
    if frame is None or frame.is_empty():
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description="no rows yet")
    shares = (
        frame.group_by("fiscal_year")
        .agg(schools=pl.len(), unmatched=(~pl.col("svi_tract_matched")).sum())
        .with_columns(share=pl.col("unmatched") / pl.col("schools"))
        .sort("fiscal_year")
    )
    worst = float(shares["share"].max())
    return dg.AssetCheckResult(
        passed=worst <= MAX_UNMATCHED_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "worst_unmatched_share": round(worst, 4),
            "by_fiscal_year": dg.MetadataValue.json(
                {str(r["fiscal_year"]): {"schools": r["schools"], "unmatched": r["unmatched"]}
                 for r in shares.iter_rows(named=True)}
            ),
        },
    )


SOURCE_CHECKS = [*BRONZE_CHECKS, *SILVER_CHECKS, school_location_svi_match_rate]


# --- jobs -----------------------------------------------------------------

JOB_NAMES = {SVI.name: "svi_job", SURVEY_RESULTS.name: "school_survey_results_job",
             LOCATIONS.name: "school_locations_job"}
SOURCE_JOBS = {
    name: dg.define_asset_job(
        JOB_NAMES[name],
        selection=dg.AssetSelection.assets(BRONZE_ASSETS[name], SILVER_ASSETS[name]),
        partitions_def=PARTITIONS[name],
        description=f"Land one {name} vintage in Bronze and build its Silver rows (checks included).",
    )
    for name in PARTITIONS
}


def bronze_op_name(source: str) -> str:
    """The op that takes ``SourceFileConfig`` for a source's Bronze asset (for run config)."""
    return BRONZE_ASSETS[source].op.name
