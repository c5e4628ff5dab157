"""Bronze: the survey topic's records, landed as received, one Parquet file per
topic-partition range of a batch."""


import dagster as dg

from school_equity.bronze.landing import land_batch, read_manifest
from school_equity.bronze.store import BRONZE_EVENTS_PREFIX, BRONZE_SCHEMA, batch_dir, read_batch
from school_equity.contracts.checks import (
    contract_check_name,
    contract_check_result,
    contract_key,
    unique_key_check_name,
    unique_key_check_result,
    with_metadata,
)
from school_equity.contracts.stream import BronzeSurveyEvents
from school_equity.kafka.assets import TOPIC_KEY
from school_equity.kafka.partitions import survey_batches
from school_equity.lake import release_arrow_memory
from school_equity.resources import LakeResource
from school_equity.resources.kafka import KafkaResource

BRONZE_EVENTS_KEY = dg.AssetKey(["bronze", "survey_events"])
CHECK_RANGES_COMPLETE = "offset_ranges_complete"
CHECK_CONTRACT = contract_check_name(BronzeSurveyEvents)
CHECK_UNIQUE_KEY = unique_key_check_name(BronzeSurveyEvents)
BRONZE_KEY_COLUMNS = contract_key(BronzeSurveyEvents)


def _contract_check_results(the_lake, keys: list[str]) -> list[dg.AssetCheckResult]:
    """The Bronze contract and key, checked on the files each batch has in the lake (what
    this run wrote and what an earlier run already landed), one batch at a time so a
    long single-run backfill never holds more than one batch. The first failing batch
    is reported (its rules, counts and sample); otherwise the totals."""
    rows = 0
    for key in keys:
        df = read_batch(the_lake, key)
        rows += df.height
        results = [
            contract_check_result(df, BronzeSurveyEvents, check_name=CHECK_CONTRACT, check_unique=False),
            unique_key_check_result(df, BRONZE_KEY_COLUMNS, check_name=CHECK_UNIQUE_KEY),
        ]
        if not all(r.passed for r in results):
            return [with_metadata(r, {"batch": key}, description_prefix=f"batch {key}: ") for r in results]
    meta = {"rows_checked": rows, "batches_checked": len(keys)}
    return [
        dg.AssetCheckResult(check_name=CHECK_CONTRACT, passed=True, metadata={**meta, "contract": "BronzeSurveyEvents"}),
        dg.AssetCheckResult(check_name=CHECK_UNIQUE_KEY, passed=True, metadata={**meta, "key": ", ".join(BRONZE_KEY_COLUMNS)}),
    ]


def _column_schema() -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type), constraints=dg.TableColumnConstraints(
        nullable=f.nullable)) for f in BRONZE_SCHEMA])


@dg.asset(
    key=BRONZE_EVENTS_KEY,
    deps=[TOPIC_KEY],
    partitions_def=survey_batches,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="bronze",
    kinds={"kafka", "parquet"},
    owners=["team:data-eng"],
    description=(
        "Raw survey events exactly as received from Kafka (payload bytes, key, headers) plus their Kafka "
        "coordinates (topic, partition, offset, timestamp) and ingest time. Grain: one row per Kafka record. "
        "Key: (topic, partition, offset). One immutable Parquet file per topic-partition offset range of a "
        "batch; the ranges come from the batch manifest the sensor wrote, so a re-run reads the same offsets."
    ),
    metadata={"dagster/column_schema": _column_schema(), "lake/prefix": BRONZE_EVENTS_PREFIX},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_CONTRACT,
            asset=BRONZE_EVENTS_KEY,
            blocking=True,
            description="Every landed record of the batch satisfies the BronzeSurveyEvents contract (columns, "
            "types, Kafka coordinates, batch id); Silver does not run on a batch that fails it.",
        ),
        dg.AssetCheckSpec(
            CHECK_UNIQUE_KEY,
            asset=BRONZE_EVENTS_KEY,
            blocking=True,
            description="(topic, partition, offset) identifies one landed record of the batch.",
        ),
    ],
)
def bronze_survey_events(context: dg.AssetExecutionContext, kafka: KafkaResource, lake: LakeResource):
    the_lake = lake.get_lake()
    consumer = kafka.consumer(with_group=True)
    try:
        landed = []
        for key in sorted(context.partition_keys):
            manifest = read_manifest(the_lake, key)
            if manifest.topic != kafka.topic:
                raise ValueError(f"batch {key} belongs to topic {manifest.topic!r}, not {kafka.topic!r}")
            result = land_batch(the_lake, consumer, manifest)
            context.log.info(
                f"{key}: {result.rows} records in {len(result.ranges)} range file(s) "
                f"({sum(r.already_landed for r in result.ranges)} already landed); committed {result.committed}"
            )
            landed.append((manifest, result))
    finally:
        consumer.close(autocommit=False)
    rows = sum(r.rows for _, r in landed)
    checks = _contract_check_results(the_lake, sorted(context.partition_keys))
    release_arrow_memory()  # the landed batches' and the checks' Arrow pages; the Silver step follows
    return dg.MaterializeResult(
        check_results=checks,
        metadata={
            "dagster/row_count": rows,
            "dagster/column_schema": _column_schema(),
            "batches": len(landed),
            "files": dg.MetadataValue.json([rl.path for _, r in landed for rl in r.ranges]),
            "offset_ranges": dg.MetadataValue.json({m.batch_id: [[x.partition, x.start, x.end] for x in m.ranges]
                                                    for m, _ in landed}),
            "already_landed_files": sum(rl.already_landed for _, r in landed for rl in r.ranges),
            "missing_offsets": sum(r.missing_offsets for _, r in landed),
            "retention_gaps": dg.MetadataValue.json([[g.partition, g.start, g.end] for m, _ in landed for g in m.gaps]),
            "lake_uri": the_lake.uri(batch_dir(sorted(context.partition_keys)[0])),
        }
    )


@dg.asset_check(
    asset=BRONZE_EVENTS_KEY,
    name=CHECK_RANGES_COMPLETE,
    description="Every offset of the batch's ranges was landed (a short range means records the log no longer held).",
)
def offset_ranges_complete(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(BRONZE_EVENTS_KEY)
    md = event.asset_materialization.metadata if event and event.asset_materialization else {}
    missing = md.get("missing_offsets")
    missing = missing.value if missing is not None else None
    gaps = md.get("retention_gaps")
    gaps = gaps.value if gaps is not None else []
    return dg.AssetCheckResult(
        passed=missing == 0 and not gaps,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"missing_offsets": -1 if missing is None else missing, "retention_gaps": dg.MetadataValue.json(gaps)},
    )
