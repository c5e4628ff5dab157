"""Silver stream assets: one multi-asset turns Bronze batches into the three Delta
tables; checks generated from their contracts (blocking) guard what Gold reads.

Thin glue: parsing is ``silver.parse``, merging ``silver.merge``, validation
``contracts.checks``.
"""

from collections import Counter
from dataclasses import dataclass

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from school_equity.bronze.store import batch_dir, read_batch
from school_equity.contracts.checks import (
    SharedKeys,
    contract_check_name,
    contract_checks,
    empty_frame,
    rows_sharing_keys,
    run_partition_keys,
    table_schema,
    unique_key_check_name,
    validate_or_raise,
    validate_parts_or_raise,
)
from school_equity.contracts.stream import (
    QUARANTINE_REASONS,
    BronzeSurveyEvents,
    SilverSurveyAnswers,
    SilverSurveyQuarantine,
    SilverSurveySubmissions,
)
from school_equity.kafka.partitions import batch_seq, survey_batches
from school_equity.lake import Lake, release_arrow_memory
from school_equity.resources import LakeResource
from school_equity.silver.merge import (
    ANSWERS_TABLE,
    QUARANTINE_TABLE,
    SUBMISSIONS_TABLE,
    WHOLE_TABLE,
    BatchMerge,
    KeySlice,
    SilverTables,
    answers_inconsistencies,
    merge_batch,
    merge_slices,
    read_table,
    table_exists,
    table_row_count,
)
from school_equity.silver.parse import ParsedBatch, ParseStats, parse_batch

BRONZE_EVENTS_KEY = dg.AssetKey(["bronze", "survey_events"])
SUBMISSIONS_KEY = dg.AssetKey(["silver", "survey_submissions"])
ANSWERS_KEY = dg.AssetKey(["silver", "survey_answers"])
QUARANTINE_KEY = dg.AssetKey(["silver", "survey_quarantine"])
SILVER_POOL = "silver_delta"
CHECK_ANSWERS_MATCH = "answers_match_winning_versions"
CHECK_SUBMISSIONS_CONTRACT = contract_check_name(SilverSurveySubmissions)  # contract_survey_submissions
CHECK_SUBMISSIONS_KEY = unique_key_check_name(SilverSurveySubmissions)  # unique_key_survey_submissions
CHECK_ANSWERS_CONTRACT = contract_check_name(SilverSurveyAnswers)
CHECK_ANSWERS_KEY = unique_key_check_name(SilverSurveyAnswers)
CHECK_QUARANTINE_CONTRACT = contract_check_name(SilverSurveyQuarantine)
CHECK_QUARANTINE_KEY = unique_key_check_name(SilverSurveyQuarantine)

_OWNERS = ["team:data-eng"]
_KINDS = {"delta", "polars"}
_CONTRACTS = {
    SUBMISSIONS_KEY: (SilverSurveySubmissions, SUBMISSIONS_TABLE),
    ANSWERS_KEY: (SilverSurveyAnswers, ANSWERS_TABLE),
    QUARANTINE_KEY: (SilverSurveyQuarantine, QUARANTINE_TABLE),
}
# each stream asset's Delta table, under the lake root
SILVER_STREAM_TABLES = {key: table for key, (_, table) in _CONTRACTS.items()}

_DESCRIPTIONS = {
    SUBMISSIONS_KEY: (
        "Survey submissions from the Kafka stream, typed and deduplicated. Grain: one row per submission, "
        "its newest version by event_time, then Kafka (partition, offset), whatever order batches finish in. "
        "Key: submission_id. `language` appears with the first schema-version-2 batch (null for v1)."
    ),
    ANSWERS_KEY: (
        "Answers of the winning version of each submission, long format. Grain: one row per submission x "
        "question. Key: (submission_id, question_id). Exactly the answers of the version in "
        "silver/survey_submissions: a newer version with fewer answers removes the others."
    ),
    QUARANTINE_KEY: (
        "Every Kafka record that failed parsing or its contract, with the first rule it broke "
        "(reason_code, reason_detail), the raw payload and its Kafka coordinates; nothing is dropped "
        "silently. Grain: one row per Kafka record. Key: (kafka_topic, kafka_partition, kafka_offset)."
    ),
}


def _spec(key: dg.AssetKey) -> dg.AssetSpec:
    contract, table = _CONTRACTS[key]
    return dg.AssetSpec(
        key=key,
        deps=[BRONZE_EVENTS_KEY],
        description=_DESCRIPTIONS[key],
        group_name="silver",
        kinds=_KINDS,
        owners=_OWNERS,
        partitions_def=survey_batches,
        metadata={
            "dagster/column_schema": table_schema(contract),
            "dagster/table_name": table.replace("/", "."),
            "contract": contract.__name__,
        },
    )


def read_silver_table(lake: Lake, table: str, contract) -> pl.DataFrame:
    """The whole current table, or an empty frame of the contract before the first write."""
    df = read_table(lake.uri(table), lake.storage_options())
    return empty_frame(contract) if df is None else df


def _process(context: dg.AssetExecutionContext, lake: Lake, tables: SilverTables, key: str) -> tuple:
    if not any(f.endswith(".parquet") for f in lake.list(batch_dir(key))):
        raise FileNotFoundError(
            f"batch {key}: no Bronze files under {lake.uri(batch_dir(key))}; materialize "
            f"{BRONZE_EVENTS_KEY.to_user_string()} for this partition first"
        )
    # Bronze is passed, not kept: parse_batch frees its payloads before its joins
    parsed = parse_batch(validate_or_raise(read_batch(lake, key), BronzeSurveyEvents))
    # bad data must not land: a frame that breaks its contract stops the run before any write
    validate_or_raise(parsed.submissions, SilverSurveySubmissions)
    # the answers are held narrow (BatchAnswers) and checked a part at a time
    validate_parts_or_raise(parsed.answer_rows.parts(), SilverSurveyAnswers)
    validate_or_raise(parsed.quarantine, SilverSurveyQuarantine)
    merged = merge_batch(tables, parsed)
    s = parsed.stats
    context.log.info(
        f"{key}: {s.records} records -> {s.valid_records} valid ({s.fast_path} on the fast path, "
        f"{s.superseded_in_batch} superseded in the batch), {s.quarantined} quarantined; submissions "
        f"+{merged.submissions.inserted} ~{merged.submissions.updated}, answers +{merged.answers.inserted} "
        f"~{merged.answers.updated} -{merged.answers.deleted}"
    )
    return parsed, merged


@dataclass(frozen=True)
class _MergedBatch:
    """What the step reports about one batch once it is merged: counts, not frames (a
    range run would otherwise hold every batch's parsed frames until its last batch)."""

    key: str
    stats: ParseStats
    rows: dict[str, int]  # parsed rows per Silver table: submissions, answers, quarantine
    by_reason: Counter
    merged: BatchMerge

    @classmethod
    def of(cls, key: str, parsed: ParsedBatch, merged: BatchMerge) -> "_MergedBatch":
        rows = {"submissions": parsed.submissions.height, "answers": parsed.answer_rows.height,
                "quarantine": parsed.quarantine.height}
        return cls(key, parsed.stats, rows, Counter(parsed.quarantine.get_column("reason_code").to_list()), merged)


def _batch_summary(b: _MergedBatch) -> dict:
    key, merged = b.key, b.merged
    return {
        "batch_id": key,
        **b.stats.as_dict(),
        "submissions_inserted": merged.submissions.inserted,
        "submissions_updated": merged.submissions.updated,
        "answers_inserted": merged.answers.inserted,
        "answers_updated": merged.answers.updated,
        "answers_deleted": merged.answers.deleted,
        "quarantine_inserted": merged.quarantine.inserted,
        "submissions_files_rewritten": merged.submissions.files_rewritten,
        "answers_files_rewritten": merged.answers.files_rewritten,
        "merge_attempts": max(merged.submissions.attempts, merged.answers.attempts, merged.quarantine.attempts),
    }


def _table_metadata(lake: Lake, key: dg.AssetKey, version: int | None) -> dict:
    contract, table = _CONTRACTS[key]
    uri = lake.uri(table)
    so = lake.storage_options()
    columns = pl.scan_delta(uri, storage_options=so).collect_schema().names()
    return {
        "dagster/row_count": table_row_count(uri, so),
        "dagster/column_schema": table_schema(contract, columns),
        "dagster/uri": uri,
        "dagster/table_name": table.replace("/", "."),
        "delta_version": -1 if version is None else version,
    }


@dg.multi_asset(
    name="silver_survey_stream",
    specs=[_spec(SUBMISSIONS_KEY), _spec(ANSWERS_KEY), _spec(QUARANTINE_KEY)],
    partitions_def=survey_batches,
    # a range of batches is one run, merged batch by batch in sequence order
    backfill_policy=dg.BackfillPolicy.single_run(),
    # one Delta writer at a time: concurrent commits to a table fail (and would be retried)
    pool=SILVER_POOL,
    description="Parse Bronze survey batches and merge them into the Silver Delta tables.",
)
def silver_survey_stream(context: dg.AssetExecutionContext, lake: LakeResource):
    the_lake = lake.get_lake()
    tables = SilverTables.in_lake(the_lake)
    keys = sorted(context.partition_keys, key=batch_seq)
    batches = []
    for key in keys:
        try:
            batches.append(_MergedBatch.of(key, *_process(context, the_lake, tables, key)))
        finally:
            release_arrow_memory()  # the batch's frames are gone; their pages need not stay

    def total(attr: str, field: str) -> int:
        return sum(getattr(getattr(b.merged, attr), field) for b in batches)

    last = batches[-1].merged
    summary = [_batch_summary(b) for b in batches]
    single = len(batches) == 1
    run_stats = {
        "batches": len(batches),
        "batch_ids": dg.MetadataValue.json(keys),
        "records": sum(b.stats.records for b in batches),
        "valid_records": sum(b.stats.valid_records for b in batches),
        "quarantined_records": sum(b.stats.quarantined for b in batches),
        "per_batch": dg.MetadataValue.json(summary),
    }

    def partition_rows(table: str) -> dict:
        return {"dagster/partition_row_count": batches[0].rows[table]} if single else {}

    yield dg.MaterializeResult(
        asset_key=SUBMISSIONS_KEY,
        metadata={
            **_table_metadata(the_lake, SUBMISSIONS_KEY, last.submissions.version),
            **partition_rows("submissions"),
            **run_stats,
            "inserted": total("submissions", "inserted"),
            "updated": total("submissions", "updated"),
            "superseded_in_batch": sum(b.stats.superseded_in_batch for b in batches),
            "fast_path_records": sum(b.stats.fast_path for b in batches),
        },
    )
    yield dg.MaterializeResult(
        asset_key=ANSWERS_KEY,
        metadata={
            **_table_metadata(the_lake, ANSWERS_KEY, last.answers.version),
            **partition_rows("answers"),
            "batches": len(batches),
            "inserted": total("answers", "inserted"),
            "updated": total("answers", "updated"),
            "deleted": total("answers", "deleted"),
        },
    )
    by_reason = sum((b.by_reason for b in batches), Counter())
    table_by_reason = dict(
        read_silver_table(the_lake, QUARANTINE_TABLE, SilverSurveyQuarantine)
        .group_by("reason_code").len().sort("reason_code").iter_rows()
    )
    yield dg.MaterializeResult(
        asset_key=QUARANTINE_KEY,
        metadata={
            **_table_metadata(the_lake, QUARANTINE_KEY, last.quarantine.version),
            **partition_rows("quarantine"),
            "batches": len(batches),
            "inserted": total("quarantine", "inserted"),
            "quarantined_by_reason": dg.MetadataValue.json({r: by_reason.get(r, 0) for r in QUARANTINE_REASONS}),
            "table_by_reason": dg.MetadataValue.json({r: table_by_reason.get(r, 0) for r in QUARANTINE_REASONS}),
            **{f"quarantined/{r}": by_reason.get(r, 0) for r in QUARANTINE_REASONS},
        },
    )


def _reader(table: str, contract):
    def read(lake: Lake) -> pl.DataFrame:
        return read_silver_table(lake, table, contract)

    return read


def _scan_silver(lake: Lake, table: str, contract) -> pl.LazyFrame:
    uri, opts = lake.uri(table), lake.storage_options()
    if not table_exists(uri, opts):
        return empty_frame(contract).lazy()
    return pl.scan_delta(uri, storage_options=opts)


def _batch_seqs(partition_keys: list[str]) -> list[int]:
    return [batch_seq(k) for k in partition_keys]


def _partition_reader(table: str, contract):
    """The rows the run's batches wrote (a Silver row carries the batch that last wrote it),
    and the table's rows that share a key with them (``rows_sharing_keys``)."""

    def read(lake: Lake, partition_keys: list[str], key: list[str]) -> tuple[pl.DataFrame, SharedKeys]:
        scan = _scan_silver(lake, table, contract)
        rows = scan.filter(pl.col("batch_seq").is_in(_batch_seqs(partition_keys))).collect()
        keys = rows_sharing_keys(scan, rows.select(key), key) if key else SharedKeys(rows.height, rows.head(0))
        return rows, keys

    return read


# from this many submissions written by the run, the consistency check reads range by range
RANGE_READ_FROM = 20_000


def batch_inconsistencies(lake: Lake, seqs: list[int], *, by_range_from: int = RANGE_READ_FROM) -> pl.DataFrame:
    """``answers_inconsistencies`` of the submissions the batches ``seqs`` wrote, every
    answer row of theirs, and every answer row those batches wrote.

    A submission and its answers are in one key range, so a large run is read and checked
    one range at a time (the whole tables at once were the run's memory peak after the
    merge); a run that wrote fewer than ``by_range_from`` submissions is read at once (16
    reads of a small batch cost more time than the one read costs memory)."""
    # one snapshot of each table (each scan reads the Delta log once)
    submissions = _scan_silver(lake, SUBMISSIONS_TABLE, SilverSurveySubmissions)
    all_answers = _scan_silver(lake, ANSWERS_TABLE, SilverSurveyAnswers)
    written = submissions.filter(pl.col("batch_seq").is_in(seqs)).select(pl.len()).collect().item()
    parts = []
    for sl in _check_slices(lake) if written >= by_range_from else WHOLE_TABLE:
        subs = submissions.filter(sl.expr()).filter(pl.col("batch_seq").is_in(seqs)).collect()
        ids = subs.get_column("submission_id").implode()
        answers = all_answers.filter(sl.expr()).filter(
            pl.col("submission_id").is_in(ids) | pl.col("batch_seq").is_in(seqs)).collect()
        parts.append(answers_inconsistencies(subs, answers))
    return pl.concat(parts)


def _check_slices(lake: Lake) -> list[KeySlice]:
    """The key ranges to read the answers table in: its merge slices (one range per file;
    the whole table for a layout whose files span ranges)."""
    uri, opts = lake.uri(ANSWERS_TABLE), lake.storage_options()
    if not table_exists(uri, opts):
        return WHOLE_TABLE
    return merge_slices(DeltaTable(uri, storage_options=opts))


@dg.asset_check(
    asset=ANSWERS_KEY,
    name=CHECK_ANSWERS_MATCH,
    blocking=True,
    additional_deps=[SUBMISSIONS_KEY],
    required_resource_keys={"lake"},
    description="The answers table holds exactly the answers of each submission's winning version: same "
    "version coordinates, as many rows as answer_count, no answers of superseded versions.",
)
def answers_match_winning_versions(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    lake = context.resources.lake.get_lake()
    keys = run_partition_keys(context)
    if keys:
        # the submissions the run's batches wrote, every answer row of theirs, and every
        # answer row those batches wrote (an answer of no such submission is a problem)
        bad = batch_inconsistencies(lake, _batch_seqs(keys))
        scope = f"rows written by {len(keys)} batch(es): {keys[0]}..{keys[-1]}"
    else:
        subs = read_silver_table(lake, SUBMISSIONS_TABLE, SilverSurveySubmissions)
        answers = read_silver_table(lake, ANSWERS_TABLE, SilverSurveyAnswers)
        scope = "whole tables"
        bad = answers_inconsistencies(subs, answers)
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "inconsistent_submissions": bad.height,
            "scope": scope,
            "by_problem": dg.MetadataValue.json(dict(bad.group_by("problem").len().iter_rows())),
            "sample": dg.MetadataValue.json(bad.head(10).with_columns(pl.col("event_time").cast(pl.String)).to_dicts()),
        },
    )


SILVER_ASSETS = [silver_survey_stream]
SILVER_CHECKS = [
    *contract_checks(SUBMISSIONS_KEY, SilverSurveySubmissions, _reader(SUBMISSIONS_TABLE, SilverSurveySubmissions),
                     read_partitions=_partition_reader(SUBMISSIONS_TABLE, SilverSurveySubmissions)),
    *contract_checks(ANSWERS_KEY, SilverSurveyAnswers, _reader(ANSWERS_TABLE, SilverSurveyAnswers),
                     read_partitions=_partition_reader(ANSWERS_TABLE, SilverSurveyAnswers)),
    *contract_checks(QUARANTINE_KEY, SilverSurveyQuarantine, _reader(QUARANTINE_TABLE, SilverSurveyQuarantine),
                     read_partitions=_partition_reader(QUARANTINE_TABLE, SilverSurveyQuarantine)),
    answers_match_winning_versions,
]
