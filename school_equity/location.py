"""What the one code location holds: every asset, check, sensor and job of school_equity,
with cross-cutting policy (freshness, code references) applied once here. The code
location's module is ``school_equity.definitions``, which builds them."""

from datetime import timedelta

import dagster as dg

from school_equity.bronze.assets import bronze_survey_events, offset_ranges_complete
from school_equity.gold.assets import dbt_resource, gold_models, gold_stream_models
from school_equity.kafka.assets import survey_topic, topic_readable
from school_equity.kafka.offsets import BatchingPolicy
from school_equity.kafka.partitions import survey_batches
from school_equity.kafka.sensor import build_survey_batch_sensor
from school_equity.resources import LakeResource
from school_equity.resources.kafka import KafkaResource
from school_equity.settings import Settings, load_settings
from school_equity.silver.assets import SILVER_ASSETS, SILVER_CHECKS
from school_equity.silver.maintenance import (
    silver_compaction_job,
    silver_compaction_schedule,
    silver_maintenance_job,
    silver_maintenance_schedule,
)
from school_equity.sources import (
    SOURCE_ASSETS,
    SOURCE_CHECKS,
    SOURCE_JOBS,
    SOURCE_RESOURCE_KEY,
    SOURCE_SENSORS,
    public_sources_resource,
)

GOLD_MARTS_JOB = "gold_marts_job"

# -- freshness: one rule per layer, applied to every asset that has none --------------------
# The stream is expected to land within minutes while the survey window is open; the
# batch sources publish once a year.
STREAM_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=6), warn_window=timedelta(hours=1))
BATCH_SOURCE_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=400),
                                                        warn_window=timedelta(days=370))
GOLD_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=24), warn_window=timedelta(hours=6))


def freshness_for(spec: dg.AssetSpec) -> dg.FreshnessPolicy:
    if spec.partitions_def is not None and spec.partitions_def != survey_batches:
        return BATCH_SOURCE_FRESHNESS
    if spec.group_name == "gold":
        return GOLD_FRESHNESS
    return STREAM_FRESHNESS


def _apply_policies(spec: dg.AssetSpec) -> dg.AssetSpec:
    if spec.freshness_policy is None:
        spec = spec.replace_attributes(freshness_policy=freshness_for(spec))
    return spec


def batching_policy_from_env() -> BatchingPolicy:
    import os

    def num(name: str, default: float) -> float:
        return float(os.environ.get(name, default))

    d = BatchingPolicy()
    return BatchingPolicy(
        min_records=int(num("SCHOOL_EQUITY_BATCH_MIN_RECORDS", d.min_records)),
        min_interval_s=num("SCHOOL_EQUITY_BATCH_MIN_INTERVAL_S", d.min_interval_s),
        max_wait_s=num("SCHOOL_EQUITY_BATCH_MAX_WAIT_S", d.max_wait_s),
        max_records=int(num("SCHOOL_EQUITY_BATCH_MAX_RECORDS", d.max_records)),
        max_runs_in_flight=int(num("SCHOOL_EQUITY_MAX_RUNS_IN_FLIGHT", d.max_runs_in_flight)),
    )


def resources_for(settings: Settings) -> dict:
    """Resources keyed by environment: embedded components locally, managed ones in branch/prod."""
    if settings.env == "local":
        kafka = KafkaResource(bootstrap_servers=settings.kafka_bootstrap, topic=settings.topic,
                              consumer_group=settings.consumer_group)
    else:
        kafka = KafkaResource(
            bootstrap_servers=dg.EnvVar("SCHOOL_EQUITY_KAFKA"),
            topic=settings.topic,
            consumer_group=settings.consumer_group,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=dg.EnvVar("SCHOOL_EQUITY_KAFKA_USERNAME"),
            sasl_password=dg.EnvVar("SCHOOL_EQUITY_KAFKA_PASSWORD"),
        )
    return {
        "kafka": kafka,
        "lake": LakeResource(root=settings.lake_root),
        "dbt": dbt_resource(settings),
        SOURCE_RESOURCE_KEY: public_sources_resource(settings),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    stream_assets = [bronze_survey_events, *SILVER_ASSETS, gold_stream_models]
    all_assets = [survey_topic, *stream_assets, *SOURCE_ASSETS, gold_models]
    checks = [topic_readable, offset_ranges_complete, *SILVER_CHECKS, *SOURCE_CHECKS]

    survey_batch_job = dg.define_asset_job(
        "survey_batch_job",
        selection=dg.AssetSelection.assets(*stream_assets),
        partitions_def=survey_batches,
        description="Land one batch of Kafka offset ranges: Bronze, then Silver and the stream's Gold models.",
        # One process per run, steps in order: a batch's steps are sequential anyway (each
        # waits for the previous one and its blocking checks), and the multiprocess
        # executor's subprocess start (~3 s per step, a dozen steps) was most of a small
        # batch's run time under `dagster dev`. Pools still apply (the executor claims slots).
        executor_def=dg.in_process_executor,
    )
    sensor = build_survey_batch_sensor(survey_batch_job, batching_policy_from_env(),
                                       minimum_interval_seconds=int(float(
                                           __import__("os").environ.get("SCHOOL_EQUITY_SENSOR_INTERVAL_S", 15))))
    gold_marts_job = dg.define_asset_job(
        GOLD_MARTS_JOB,
        selection=dg.AssetSelection.assets(gold_models),
        description="Rebuild the unpartitioned Gold models (seeds, snapshot, dimensions, equity marts).",
    )
    defs = dg.Definitions(
        assets=dg.with_source_code_references(all_assets),
        asset_checks=checks,
        jobs=[survey_batch_job, gold_marts_job, silver_maintenance_job, silver_compaction_job, *SOURCE_JOBS],
        schedules=[silver_maintenance_schedule, silver_compaction_schedule],
        sensors=[sensor, *SOURCE_SENSORS],
        resources=resources_for(settings),
    )
    return defs.map_asset_specs(func=_apply_policies)

