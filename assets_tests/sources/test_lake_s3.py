"""Bronze batches read back the same from a local lake and from S3 (moto on loopback), and
the landing writes the same records to both."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from school_equity.bronze.store import BRONZE_SCHEMA, range_file, read_batch
from school_equity.lake import Lake


def _range(partition: int, start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "topic": ["t"] * n,
            "partition": [partition] * n,
            "offset": list(range(start, start + n)),
            "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)] * n,
            "timestamp_type": [0] * n,
            "key": [f"k{partition}-{i}".encode() for i in range(n)],
            "value": [b'{"i": %d}' % i if i % 7 else None for i in range(n)],
            "headers": [[{"key": "h", "value": b"v"}]] * n,
            "batch_id": ["b000000003"] * n,
            "ingested_at": [datetime(2026, 1, 1, 0, 1, tzinfo=UTC)] * n,
        }
    ).cast(BRONZE_SCHEMA)


def test_read_batch_same_on_s3_and_local(s3_lake_root, tmp_path):
    ranges = [(2, 40, 5), (0, 10, 7), (1, 0, 3)]  # written out of partition order
    frames = {}
    for name, lake in (("local", Lake(str(tmp_path / "lake"))), ("s3", Lake(s3_lake_root))):
        for p, start, n in ranges:
            buf = io.BytesIO()
            pq.write_table(_range(p, start, n), buf)
            lake.write_bytes_atomic(range_file("b000000003", "t", p, start, start + n), buf.getvalue())
        frames[name] = read_batch(lake, "b000000003")
    local, s3 = frames["local"], frames["s3"]
    assert local.schema == pl.from_arrow(BRONZE_SCHEMA.empty_table()).schema
    assert local.height == 15
    assert local.select("partition", "offset").rows() == sorted(local.select("partition", "offset").rows())
    assert local.get_column("value").null_count() == 3  # null payloads stay null
    assert s3.equals(local)


def test_silver_merge_same_on_s3_and_local(s3_lake_root, tmp_path):
    """The Silver writes (new keys appended, held keys merged with their kafka_offset bound,
    a v2 column added) give the same tables on S3 as on local disk."""
    from polars.testing import assert_frame_equal

    from assets_tests.silver.test_silver_merge import batch_frame, merge_all, state
    from school_equity.silver.merge import SilverTables

    first = [{"sid": f"{c}{n}-x", "minute": n, "answers": {"P01": 1 + n % 4, "P02": 2}, "partition": 0,
              "offset": 2 * n + (c == "a")} for c in "0a" for n in range(4)]
    second = [
        {**first[3], "minute": 9, "answers": {"P03": 4}, "offset": 20},  # a correction: P01/P02 go
        {**first[6], "minute": 9, "answers": {"P01": 3, "P02": 2}, "offset": 21, "version": 2},
        {"sid": "f-new", "minute": 9, "answers": {"P04": 1}, "partition": 0, "offset": 22},
    ]
    states = {}
    for name, root in (("local", str(tmp_path / "lake")), ("s3", s3_lake_root)):
        tables = SilverTables.in_lake(Lake(root))
        merge_all(tables, [batch_frame(first, 0), batch_frame(second, 1)])
        states[name] = state(tables)
    subs, answers, _ = states["local"]
    assert subs.height == 9 and "language" in subs.columns
    assert answers.filter(pl.col("submission_id") == first[3]["sid"]).get_column("question_id").to_list() == ["P03"]
    for x, y in zip(states["local"], states["s3"], strict=True):
        assert_frame_equal(x, y)


def test_silver_vacuum_on_s3_deletes_only_unreferenced_objects(s3_lake_root):
    """The Silver VACUUM through the object store: the objects no current version references
    go, the live ones stay, and the tables read the same."""
    from deltalake import DeltaTable
    from polars.testing import assert_frame_equal

    from assets_tests.silver.test_silver_maintenance import revised_batches
    from assets_tests.silver.test_silver_merge import merge_all, state
    from school_equity.silver.merge import ANSWERS_TABLE, SUBMISSIONS_TABLE, SilverTables, vacuum_table

    lake = Lake(s3_lake_root)
    tables = SilverTables.in_lake(lake)
    merge_all(tables, revised_batches(4))
    before = state(tables)
    so = lake.storage_options()
    for table in (SUBMISSIONS_TABLE, ANSWERS_TABLE):
        def objects(t: str = table) -> set[str]:
            return {p.rsplit("/", 1)[-1] for p in lake.list(t) if p.endswith(".parquet") and "_delta_log" not in p}

        live = {u.rsplit("/", 1)[-1] for u in DeltaTable(lake.uri(table), storage_options=so).file_uris()}
        assert objects() > live
        outcome = vacuum_table(lake.uri(table), 0, so)
        assert outcome is not None and outcome.files_expired > 0 and outcome.live_files == len(live)
        assert objects() == live
    for b, a in zip(before, state(tables), strict=True):
        assert_frame_equal(b, a)


def test_landing_from_the_broker_on_s3_equals_local_and_kafka_pythons_reading(s3_lake_root, broker, topic_name,
                                                                              tmp_path, monkeypatch):
    """The columnar landing end to end: records a kafka-python producer sent (zstd batches,
    null keys and values, headers), landed in small fetches to S3 and to a local lake, read
    back the same, and the same as kafka-python's own consumer reads them."""
    from kafka import KafkaProducer, TopicPartition

    import school_equity.kafka.client as client
    from assets_tests.helpers import create_topic
    from school_equity.bronze.landing import land_batch
    from school_equity.kafka.client import make_consumer, read_log_offsets
    from school_equity.kafka.offsets import BatchManifest, OffsetRange

    create_topic(broker.bootstrap, topic_name, partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="zstd", linger_ms=5, acks="all")
    try:
        for i in range(2000):
            producer.send(topic_name, partition=i % 2, key=None if i % 5 == 0 else f"k{i}".encode(),
                          value=None if i % 10 == 3 else b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i % 300)),
                          headers=[("schema_version", b"1"), ("trace", f"t{i}".encode())] if i % 3 else [])
        producer.flush()
    finally:
        producer.close()
    monkeypatch.setattr(client, "FETCH_PARTITION_BYTES", 4096)  # many fetches and chunks a range
    consumer = make_consumer(broker.bootstrap)
    try:
        ends = read_log_offsets(consumer, topic_name).end
        assert sum(ends.values()) == 2000
        manifest = BatchManifest(batch_id="b000000007", seq=7, topic=topic_name, created_at="2026-01-01T00:00:00+00:00",
                                 ranges=tuple(OffsetRange(p, 0, e) for p, e in sorted(ends.items())))
        at = datetime(2026, 1, 2, tzinfo=UTC)
        on_s3, local = Lake(s3_lake_root), Lake(str(tmp_path / "lake"))
        assert land_batch(on_s3, consumer, manifest, ingested_at=at, commit=False).rows == 2000
        assert land_batch(local, consumer, manifest, ingested_at=at, commit=False).rows == 2000
        landed = read_batch(on_s3, "b000000007")
        assert landed.equals(read_batch(local, "b000000007"))

        tps = [TopicPartition(topic_name, p) for p in sorted(ends)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        records = []
        while len(records) < 2000:
            for msgs in consumer.poll(timeout_ms=500).values():
                records.extend(msgs)
        consumer.assign([])
    finally:
        consumer.close(autocommit=False)
    records.sort(key=lambda m: (m.partition, m.offset))
    assert landed.select("partition", "offset", "key", "value", "timestamp_type").rows() == [
        (m.partition, m.offset, m.key, m.value, m.timestamp_type) for m in records]
    assert [int(t.timestamp() * 1000) for t in landed.get_column("timestamp")] == [m.timestamp for m in records]
    assert [[(h["key"], h["value"]) for h in hs] for hs in landed.get_column("headers").to_list()] == [
        list(m.headers) for m in records]
    assert landed.get_column("key").null_count() == 400 and landed.get_column("value").null_count() == 200
