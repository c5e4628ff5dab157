"""A throw-away code location that exercises the `dagster dev` harness without the
real pipeline: one partitioned asset in the `silver_delta` pool (so the instance's
pool limit is visible), one job over it, one sensor that requests one run.

The asset writes a marker file under $TOY_OUT_DIR, so a test can see that a run
launched by the daemon really executed with the environment the harness passed.
"""

import os
from pathlib import Path

import dagster as dg

TOY_PARTITIONS = dg.StaticPartitionsDefinition(["a", "b"])
SENSOR_PARTITION = "a"  # the partition the sensor asks for; tests launch "b" themselves


@dg.asset(
    key=["toy", "numbers"],
    partitions_def=TOY_PARTITIONS,
    pool="silver_delta",
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"python"},
    owners=["team:data-eng"],
    group_name="toy",
    description="Three numbers per partition; one marker file per partition. Key: partition.",
)
def toy_numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    out_dir = Path(os.environ["TOY_OUT_DIR"])
    out_dir.mkdir(parents=True, exist_ok=True)
    # a single-run backfill hands the asset several partitions at once
    for key in context.partition_keys:
        (out_dir / f"{key}.txt").write_text("1\n2\n3\n")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": 3 * len(context.partition_keys),
            "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn("n", "int")]),
        }
    )


@dg.asset_check(asset=toy_numbers, description="The partition's marker file has three lines.")
def toy_numbers_has_three_rows(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    out_dir = Path(os.environ["TOY_OUT_DIR"])
    lines = sum(len(p.read_text().splitlines()) for p in out_dir.glob("*.txt"))
    return dg.AssetCheckResult(passed=lines >= 3, metadata={"lines": lines})


toy_job = dg.define_asset_job("toy_job", selection=[toy_numbers], partitions_def=TOY_PARTITIONS)


@dg.sensor(job=toy_job, minimum_interval_seconds=1, description="Requests partition 'a' once.")
def toy_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    # A fixed run_key: every later tick is deduplicated by the instance, as the real
    # Kafka sensor's deterministic run keys are.
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"toy-{SENSOR_PARTITION}", partition_key=SENSOR_PARTITION)]
    )


# In-process: one run worker process per run instead of one more per step; on 2
# cores the process starts, not the work, are what a `dagster dev` test waits for.
defs = dg.Definitions(
    executor=dg.in_process_executor,
    assets=[toy_numbers],
    asset_checks=[toy_numbers_has_three_rows],
    jobs=[toy_job],
    sensors=[toy_sensor],
)
