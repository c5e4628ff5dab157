"""Helpers for tests that drive the stream the way Dagster's daemon would."""

from __future__ import annotations

import dagster as dg
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from school_equity.kafka.partitions import SURVEY_BATCHES


def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def produce_raw(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value, headers=[("schema_version", b"1")])
        producer.flush()
    finally:
        producer.close()


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None, resources: dict | None = None):
    """One sensor evaluation, applied to the instance as the daemon would apply it."""
    sensor = defs.resolve_sensor_def("survey_batch_sensor")
    ctx = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor, repository_def=defs.get_repository_def(),
                                  resources={**(defs.resources or {}), **(resources or {})})
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        data = sensor.evaluate_tick(ctx)
    for req in data.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return data


def batch_keys(instance: dg.DagsterInstance) -> list[str]:
    return sorted(instance.get_dynamic_partitions(SURVEY_BATCHES))


def run_batch(defs: dg.Definitions, instance: dg.DagsterInstance, key: str, job: str = "survey_batch_job"):
    result = defs.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance)
    assert result.success
    return result


def drain(defs, instance, cursor=None, max_ticks: int = 50) -> tuple[list[str], str | None]:
    """Tick until the sensor cuts nothing more; run every requested batch in order."""
    ran = []
    for _ in range(max_ticks):
        data = tick(defs, instance, cursor)
        cursor = data.cursor or cursor
        if not data.run_requests:
            return ran, cursor
        for req in data.run_requests:
            run_batch(defs, instance, req.partition_key)
            ran.append(req.partition_key)
    raise AssertionError("sensor kept cutting batches")
