"""As a user would: `dagster dev` on the real definitions, the sensor turned on through
GraphQL while the producer writes to the real broker, runs succeed, Silver rows appear,
and a backfill over the batch partitions changes nothing."""

from __future__ import annotations

import polars as pl
import pytest

from school_equity.kafka.producer import produce
from school_equity.lake import Lake

pytestmark = [pytest.mark.dagster_dev, pytest.mark.e2e]

SENSOR = "survey_batch_sensor"
STREAM_ASSETS = [
    ["bronze", "survey_events"],
    ["silver", "survey_submissions"],
    ["silver", "survey_answers"],
    ["silver", "survey_quarantine"],
]


def _silver(lake: Lake) -> pl.DataFrame:
    return pl.read_delta(lake.uri("silver", "survey_submissions")).sort("submission_id")


def test_sensor_runs_and_backfill_through_dagster_dev(dagster_dev_factory, stream_env, broker, topic_name):
    env = {
        **stream_env,
        "SCHOOL_EQUITY_BATCH_MIN_RECORDS": "1",
        "SCHOOL_EQUITY_BATCH_MIN_INTERVAL_S": "0",
        "SCHOOL_EQUITY_SENSOR_INTERVAL_S": "1",
    }
    report = produce(broker.bootstrap, topic_name, 1500, seed=7, partitions=2)
    dev = dagster_dev_factory("school_equity.definitions", env=env)
    gql = dev.client
    assert "survey_batch_job" in str(gql.repositories())

    gql.start_sensor(SENSOR)
    run_ids = gql.wait_for_run_ids(tags={"dagster/sensor_name": SENSOR}, count=1, timeout=120)
    assert gql.wait_for_run(run_ids[0], timeout=300) == "SUCCESS", gql.run_failure_messages(run_ids[0])

    # more events while the sensor is on: a second batch partition and run, with no other action
    report2 = produce(broker.bootstrap, topic_name, 500, seed=8, partitions=2)
    run_ids = gql.wait_for_run_ids(tags={"dagster/sensor_name": SENSOR}, count=2, timeout=120)
    for rid in run_ids:
        assert gql.wait_for_run(rid, timeout=300) == "SUCCESS", gql.run_failure_messages(rid)
    gql.stop_sensor(SENSOR)

    partitions = gql.partition_keys(["bronze", "survey_events"])
    assert len(partitions) >= 2
    assert gql.materialized_partitions(["silver", "survey_submissions"]) >= set(partitions[:2])

    lake = Lake(stream_env["SCHOOL_EQUITY_LAKE"])
    before = _silver(lake)
    # exactly one row per valid distinct submission the producer reports
    assert before.height == before["submission_id"].n_unique()
    assert before.height == report.stream.valid_submissions + report2.stream.valid_submissions

    # a backfill over the batch range from the UI re-materializes and changes nothing
    backfill_id = gql.launch_backfill(STREAM_ASSETS, partitions)
    assert gql.wait_for_backfill(backfill_id, timeout=400) in {"COMPLETED", "COMPLETED_SUCCESS"}
    after = _silver(lake)
    assert after.equals(before)
