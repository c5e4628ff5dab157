"""Helpers for tests that drive the stream the way Dagster's daemon would."""

from __future__ import annotations

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from school_equity.pipeline import batch_keys, drain_stream, run_batch, tick

__all__ = ["batch_keys", "create_topic", "drain", "produce_raw", "run_batch", "tick"]


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


def drain(defs, instance, cursor=None):
    run = drain_stream(defs, instance, cursor, max_ticks=50)
    return run.batches, run.cursor
