"""Headless driving of the asset graph, as the Dagster daemon would drive it: sensor
ticks, then the requested batch runs, then the batch sources and the unpartitioned
Gold models. Used by `school-equity demo`, the end-to-end tests and bench/."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dagster as dg

from school_equity.kafka.partitions import SURVEY_BATCHES
from school_equity.kafka.sensor import SENSOR_NAME

STREAM_JOB = "survey_batch_job"
LOG_LEVEL_ENV = "SCHOOL_EQUITY_RUN_LOG_LEVEL"


def run_log_config() -> dict:
    """Run config setting the console log level of in-process runs from
    SCHOOL_EQUITY_RUN_LOG_LEVEL (the demo sets WARNING so its summary is readable;
    unset, Dagster's default DEBUG stream is kept)."""
    import os

    level = os.environ.get(LOG_LEVEL_ENV)
    return {"loggers": {"console": {"config": {"log_level": level.upper()}}}} if level else {}


@dataclass
class StreamRun:
    batches: list[str] = field(default_factory=list)
    ticks: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    cursor: str | None = None


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None, resources: dict | None = None):
    """One sensor evaluation, with its dynamic partition requests applied to the instance.

    As the daemon does it: only the resources the sensor asks for are built (the others,
    e.g. Gold's dbt with its warm process, have no business in a tick), inside the
    context's scope, so resources with a teardown are torn down after the tick."""
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    available = {**(defs.resources or {}), **(resources or {})}
    with (
        dg.build_sensor_context(
            instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
            repository_def=defs.get_repository_def(),
            resources={k: v for k, v in available.items() if k in sensor.required_resource_keys},
        ) as ctx,
        dg.partition_loading_context(dynamic_partitions_store=instance),
    ):
        data = sensor.evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return data


def run_batch(defs: dg.Definitions, instance: dg.DagsterInstance, key: str, job: str = STREAM_JOB):
    result = defs.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance,
                                                          run_config=run_log_config(),
                                                          tags={"school_equity/trigger": "headless"})
    if not result.success:
        raise RuntimeError(f"batch {key}: run {result.run_id} failed")
    return result


def drain_stream(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None,
                 *, max_ticks: int = 1000, settle_s: float = 0.0) -> StreamRun:
    """Tick and run until the sensor has nothing more to cut (twice in a row when
    ``settle_s`` > 0, to let a producer's last records arrive)."""
    out = StreamRun(cursor=cursor)
    quiet = 0
    for _ in range(max_ticks):
        data = tick(defs, instance, out.cursor)
        out.ticks += 1
        out.cursor = data.cursor or out.cursor
        if data.run_requests:
            quiet = 0
            for req in data.run_requests:
                run_batch(defs, instance, req.partition_key)
                out.batches.append(req.partition_key)
            continue
        out.skip_reasons.append(data.skip_message or "")
        quiet += 1
        if settle_s <= 0 or quiet >= 2:
            return out
        time.sleep(settle_s)
    raise RuntimeError(f"the sensor kept cutting batches after {max_ticks} ticks")


def batch_keys(instance: dg.DagsterInstance) -> list[str]:
    return sorted(instance.get_dynamic_partitions(SURVEY_BATCHES))


def build_batch_sources(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, int]:
    """Land the shipped vintages of the public sources and build their Silver tables."""
    from school_equity.sources import materialize_shipped_vintages

    return materialize_shipped_vintages(instance, dict(defs.resources or {}))


def build_unpartitioned_gold(defs: dg.Definitions, instance: dg.DagsterInstance):
    from school_equity.location import GOLD_MARTS_JOB

    result = defs.resolve_job_def(GOLD_MARTS_JOB).execute_in_process(instance=instance, run_config=run_log_config())
    if not result.success:
        raise RuntimeError(f"{GOLD_MARTS_JOB}: run {result.run_id} failed")
    return result
