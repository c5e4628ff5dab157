"""Silver housekeeping as Dagster jobs: compaction of the stream tables' small files,
hourly, and VACUUM of the three stream tables, daily.

A streaming batch appends one or two small files per key range to each table; left
alone they grow by thousands a day, and every merge and every Gold read lists and opens
them. ``silver_compaction_job`` rewrites each range's small files as files of the size
the merge aims at (``merge.compact_table``), in one commit per table.

The merges leave the files they replaced on storage (see ``merge.vacuum_table``);
``silver_maintenance_job`` deletes those past the retention and reports, per table, what it expired as an
observation of the table's asset, so the lineage view shows when each table was last
cleaned. It takes the Silver pool: delta-rs logs a vacuum as commits, and one writer at a
time keeps a batch's merge from having to retry against them.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
from pydantic import Field

from school_equity.resources import LakeResource
from school_equity.silver.assets import SILVER_POOL, SILVER_STREAM_TABLES
from school_equity.silver.merge import (
    MIN_SMALL_FILES,
    QUARANTINE_TABLE,
    compact_quarantine,
    compact_table,
    vacuum_table,
)

SILVER_MAINTENANCE_JOB = "silver_maintenance_job"
# Delta's own default for deleted files (delta.deletedFileRetentionDuration): a week of
# time travel. Below an hour, a merge that started before the vacuum could lose the files
# of the version it read.
DEFAULT_RETENTION_HOURS = 168
MIN_RETENTION_HOURS = 1


class VacuumConfig(dg.Config):
    retention_hours: int = Field(
        default=DEFAULT_RETENTION_HOURS,
        ge=MIN_RETENTION_HOURS,
        description="Keep the files that any version of the last this many hours references "
        f"(at least {MIN_RETENTION_HOURS}: a merge in flight still reads its version's files).",
    )


def _each_table(context: dg.OpExecutionContext, lake: LakeResource, verb: str,
                work: Callable[[str, str, dict[str, str] | None], Any],
                report: Callable[[Any], tuple[str, dict[str, Any]]]):
    """``work(table, uri, storage_options)`` on each Silver stream table, logged, and an
    observation of the table's asset with what it did; a table not created yet (``work``
    gives None) is skipped. ``report(outcome)``: the log line and the metadata."""
    the_lake = lake.get_lake()
    for key, table in SILVER_STREAM_TABLES.items():
        outcome = work(table, the_lake.uri(table), the_lake.storage_options())
        if outcome is None:
            context.log.info(f"{table}: no table yet, nothing to {verb}")
            continue
        line, metadata = report(outcome)
        context.log.info(f"{table}: {line}; version {outcome.version}")
        yield dg.AssetObservation(asset_key=key, metadata={**metadata, "delta_version": outcome.version})
    yield dg.Output(None)


@dg.op(pool=SILVER_POOL)
def vacuum_silver_tables(context: dg.OpExecutionContext, config: VacuumConfig, lake: LakeResource):
    """Vacuum each Silver stream table that exists; a table not created yet is skipped."""
    hours = config.retention_hours
    yield from _each_table(
        context, lake, "vacuum",
        lambda _table, uri, options: vacuum_table(uri, hours, options),
        lambda o: (
            f"{o.files_expired} data files only versions older than {hours} h referenced are gone; "
            f"{o.live_files} live files",
            {"vacuum/files_expired": o.files_expired, "vacuum/live_files": o.live_files,
             "vacuum/retention_hours": hours},
        ),
    )


@dg.job(
    name=SILVER_MAINTENANCE_JOB,
    executor_def=dg.in_process_executor,
    description="Delete the Silver stream tables' data files that only versions older than the retention "
    "reference (VACUUM), and their expired log files.",
)
def silver_maintenance_job():
    vacuum_silver_tables()


silver_maintenance_schedule = dg.ScheduleDefinition(
    name="silver_maintenance_daily",
    job=silver_maintenance_job,
    cron_schedule="30 3 * * *",  # outside school hours, when batches are rare
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Vacuum the Silver stream tables once a day (retention: the job's config, a week by default).",
)


# -- compaction ------------------------------------------------------------------------
SILVER_COMPACTION_JOB = "silver_compaction_job"


class CompactionConfig(dg.Config):
    min_small_files: int = Field(
        default=MIN_SMALL_FILES,
        ge=2,
        description="Compact a key range (the quarantine table: the table) once it has at least this many "
        "small files (under half the 2 MiB the merge aims at).",
    )


@dg.op(pool=SILVER_POOL)
def compact_silver_tables(context: dg.OpExecutionContext, config: CompactionConfig, lake: LakeResource):
    """Compact each Silver stream table that exists; a table not created yet is skipped."""

    def compact(table: str, uri: str, options: dict[str, str] | None):
        by = compact_quarantine if table == QUARANTINE_TABLE else compact_table
        return by(uri, options, min_small_files=config.min_small_files)

    yield from _each_table(
        context, lake, "compact", compact,
        lambda o: (
            f"{o.files_compacted} small files in {o.ranges_compacted} key ranges rewritten as "
            f"{o.files_written}; {o.files_before} -> {o.files_after} live files",
            {"compaction/files_compacted": o.files_compacted, "compaction/files_written": o.files_written,
             "compaction/ranges_compacted": o.ranges_compacted, "compaction/live_files_before": o.files_before,
             "compaction/live_files": o.files_after},
        ),
    )


@dg.job(
    name=SILVER_COMPACTION_JOB,
    executor_def=dg.in_process_executor,
    description="Rewrite the small files the stream batches leave in each key range of the Silver stream tables "
    "as files of about 2 MiB, one commit per table (the rows and their order are unchanged).",
)
def silver_compaction_job():
    compact_silver_tables()


silver_compaction_schedule = dg.ScheduleDefinition(
    name="silver_compaction_hourly",
    job=silver_compaction_job,
    cron_schedule="45 * * * *",
    execution_timezone="America/New_York",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Compact the Silver stream tables' small files every hour; a table with fewer small files per "
    "key range than the job's threshold is left as it is.",
)
