"""1. Kafka -> Bronze throughput: the project's landing (`land_batch` over a manifest that
covers the whole topic) against readers of exactly the same offsets:

(a) kafka-python raw range read, no decoding beyond what the client itself does
    (the limit of the client's own reader; the landing uses the client's connections
    and decodes the Fetch responses itself, school_equity.kafka.records);
(b) confluent-kafka (librdkafka, C) consuming the same offsets (a C client, one Python
    message object a record);
(c) a tutorial-style consumer: kafka-python with its default settings, one
    `json.loads` and one row append per message, then a single Parquet write;
(d) the Fetch requests alone, record batches skipped by their headers (the broker's
    and the network's limit).

Targets: landing >= 0.8x (a) and >= 5x (c).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

from bench.common import Figure, Section, Timer, interleave, load_topic, median, profile_call, scratch_dir

TOPIC = "bench_survey_submissions"
PARTITIONS = 3  # the producer's default


def manifest_for(topic: str, ends: dict[int, int]):
    from school_equity.kafka.offsets import BatchManifest, OffsetRange

    return BatchManifest(
        batch_id="b000000000",
        seq=0,
        topic=topic,
        created_at="1970-01-01T00:00:00+00:00",
        ranges=tuple(OffsetRange(p, 0, e) for p, e in sorted(ends.items()) if e > 0),
    )


# -- the four readers; each returns (records read, seconds) -----------------------------------


def project_landing(bootstrap: str, topic: str, ends: dict[int, int], lake_dir: Path) -> tuple[int, float]:
    from school_equity.bronze.landing import land_batch
    from school_equity.kafka.client import make_consumer
    from school_equity.lake import Lake

    if lake_dir.exists():
        shutil.rmtree(lake_dir)  # landed files are never rewritten: every repetition needs a fresh lake
    lake = Lake(str(lake_dir))
    consumer = make_consumer(bootstrap, f"bench.bronze.{uuid.uuid4().hex[:8]}")
    try:
        with Timer() as t:
            result = land_batch(lake, consumer, manifest_for(topic, ends))
    finally:
        consumer.close(autocommit=False)
    return result.rows, t.s


def kafka_python_raw(bootstrap: str, topic: str, ends: dict[int, int], *, collector_paused: bool = False
                     ) -> tuple[int, float]:
    """Assign every partition, seek to the start, poll until each reaches its end; count only.

    ``collector_paused``: read with Python's cyclic collector paused, as the landing
    reads (information: how much of the landing's margin over (a) is that pause)."""
    import contextlib

    from kafka import TopicPartition

    from school_equity.collector import collector_paused as paused
    from school_equity.kafka.client import make_consumer

    consumer = make_consumer(bootstrap)  # the project's client settings: the same client, its best case
    tps = {p: TopicPartition(topic, p) for p, e in ends.items() if e > 0}
    try:
        with paused() if collector_paused else contextlib.nullcontext(), Timer() as t:
            consumer.assign(list(tps.values()))
            for tp in tps.values():
                consumer.seek(tp, 0)
            remaining = dict(ends)
            n = 0
            while any(remaining[p] > 0 for p in tps):
                for tp, msgs in consumer.poll(timeout_ms=200, max_records=20_000).items():
                    end = ends[tp.partition]
                    for m in msgs:
                        if m.offset < end:
                            n += 1
                    if msgs:
                        remaining[tp.partition] = end - min(msgs[-1].offset + 1, end)
    finally:
        consumer.close(autocommit=False)
    return n, t.s


def confluent_consume(bootstrap: str, topic: str, ends: dict[int, int]) -> tuple[int, float]:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench.confluent.{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        with Timer() as t:
            consumer.assign([TopicPartition(topic, p, 0) for p, e in ends.items() if e > 0])
            open_parts = {p for p, e in ends.items() if e > 0}
            n = 0
            while open_parts:
                for m in consumer.consume(num_messages=10_000, timeout=1.0):
                    err = m.error()
                    p = m.partition()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            if m.offset() >= ends[p]:
                                open_parts.discard(p)
                            continue
                        raise RuntimeError(f"confluent-kafka: {err}")
                    if m.offset() < ends[p]:
                        m.value()
                        n += 1
                    if m.offset() + 1 >= ends[p]:
                        open_parts.discard(p)
    finally:
        consumer.close()
    return n, t.s


def raw_fetch(bootstrap: str, topic: str, ends: dict[int, int]) -> tuple[int, float]:
    """The landing's Fetch requests for the same offsets, each response's record batches
    walked by their headers only: nothing decompressed, no record decoded (the broker's
    and the network's limit, whatever the client)."""
    from kafka import TopicPartition

    from school_equity.kafka.client import FETCH_PARTITION_BYTES, _fetch, fetch_request, make_consumer
    from school_equity.kafka.records import _BATCH_HEADER, _LOG_OVERHEAD

    consumer = make_consumer(bootstrap)
    consumer.partitions_for_topic(topic)
    cluster = consumer._manager.cluster
    position = {p: 0 for p, e in ends.items() if e > 0}
    n = 0
    try:
        with Timer() as t:
            while open_parts := {p: position[p] for p in position if position[p] < ends[p]}:
                leader = cluster.leader_for_partition(TopicPartition(topic, min(open_parts)))
                response = _fetch(consumer, leader, fetch_request(consumer, topic, open_parts, FETCH_PARTITION_BYTES))
                for answer in response.responses:
                    for data in answer.partitions:
                        buf, i, p = data.records or b"", 0, data.partition_index
                        while i + _BATCH_HEADER.size <= len(buf):
                            h = _BATCH_HEADER.unpack_from(buf, i)
                            if i + _LOG_OVERHEAD + h[1] > len(buf):
                                break
                            after = min(h[0] + h[6] + 1, ends[p])
                            n += max(0, after - max(h[0], position[p]))
                            position[p] = max(position[p], after)
                            i += _LOG_OVERHEAD + h[1]
    finally:
        consumer.close(autocommit=False)
    return n, t.s


def naive_consumer(bootstrap: str, topic: str, ends: dict[int, int], out_dir: Path) -> tuple[int, float]:
    """What tutorials show: default client settings, iterate the consumer, json.loads and
    a dict per message, then one Parquet write of all rows. Bad JSON is skipped (a
    tutorial that crashed on it could not read this stream at all)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10_000
    )
    tps = [TopicPartition(topic, p) for p, e in ends.items() if e > 0]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with Timer() as t:
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, 0)
            open_parts = {tp.partition for tp in tps}
            rows = []
            for msg in consumer:
                if msg.offset < ends[msg.partition]:
                    try:
                        event = json.loads(msg.value)
                    except ValueError:
                        event = None
                    rows.append(
                        {
                            "topic": msg.topic,
                            "partition": msg.partition,
                            "offset": msg.offset,
                            "timestamp": msg.timestamp,
                            "key": msg.key,
                            "value": msg.value,
                            "submission_id": event.get("submission_id") if isinstance(event, dict) else None,
                        }
                    )
                if msg.offset + 1 >= ends[msg.partition]:
                    open_parts.discard(msg.partition)
                    if not open_parts:
                        break
            schema = pa.schema(
                [
                    ("topic", pa.string()),
                    ("partition", pa.int32()),
                    ("offset", pa.int64()),
                    ("timestamp", pa.int64()),
                    ("key", pa.binary()),
                    ("value", pa.binary()),
                    ("submission_id", pa.string()),
                ]
            )
            # a non-string submission_id in a malformed record would break the typed column
            for r in rows:
                if not isinstance(r["submission_id"], str):
                    r["submission_id"] = None
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), out_dir / "naive.parquet")
    finally:
        consumer.close(autocommit=False)
    return len(rows), t.s


# -- the benchmark ------------------------------------------------------------------------------


def _preload() -> None:
    """Import what every reader uses before any timer starts: the first case of the
    first repetition would otherwise pay for it."""
    import confluent_kafka  # noqa: F401
    import kafka  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import school_equity.bronze.landing  # noqa: F401
    import school_equity.kafka.client  # noqa: F401


def run(events: int, reps: int, seed: int = 7, log=print) -> Section:
    from bench.common import read_stream, running_broker, stream_file

    sec = Section("Kafka -> Bronze throughput")
    started = time.perf_counter()
    _preload()
    path = stream_file(2 * events, seed, log=log)  # the merge benchmark uses both halves
    with scratch_dir("bronze") as tmp, running_broker(tmp) as broker:
        table = read_stream(path, 0, events)
        sizes = table.column("value").to_pylist()
        sizes = [len(v) for v in sizes]
        with Timer() as load:
            ends = load_topic(broker.bootstrap, TOPIC, table, PARTITIONS)
        del table
        total = sum(ends.values())
        payload_mb = sum(sizes) / 1e6
        log(f"  {TOPIC} loaded in {load.s:.0f}s: {total:,} records, {payload_mb:.0f} MB of payload")
        counts: dict[str, int] = {}

        def case(name, fn):
            def go() -> float:
                n, s = fn()
                if n != total:
                    raise RuntimeError(f"{name} read {n:,} records, expected {total:,}")
                counts[name] = n
                return s

            return go

        cases = {
            "project landing (land_batch)": case(
                "landing", lambda: project_landing(broker.bootstrap, TOPIC, ends, tmp / "lake")
            ),
            "(a) kafka-python raw range read": case(
                "raw", lambda: kafka_python_raw(broker.bootstrap, TOPIC, ends)
            ),
            "(a') kafka-python raw range read, collector paused": case(
                "raw_paused", lambda: kafka_python_raw(broker.bootstrap, TOPIC, ends, collector_paused=True)
            ),
            "(d) Fetch requests alone, batches not decoded": case(
                "fetch", lambda: raw_fetch(broker.bootstrap, TOPIC, ends)
            ),
            "(b) confluent-kafka consume": case(
                "confluent", lambda: confluent_consume(broker.bootstrap, TOPIC, ends)
            ),
            "(c) naive json.loads + rows + one Parquet write": case(
                "naive", lambda: naive_consumer(broker.bootstrap, TOPIC, ends, tmp / "naive")
            ),
        }
        times = interleave(cases, reps, log=log)
        bronze_bytes = sum(f.stat().st_size for f in (tmp / "lake").rglob("*.parquet"))
        ratio_raw = median(times["(a) kafka-python raw range read"]) / median(
            times["project landing (land_batch)"]
        )
        ratio_naive = median(times["(c) naive json.loads + rows + one Parquet write"]) / median(
            times["project landing (land_batch)"]
        )
        # profiled whether or not a target is missed: where its time goes is the evidence either way
        log("  profiling one landing")
        _, profile = profile_call(lambda: project_landing(broker.bootstrap, TOPIC, ends, tmp / "lake"),
                                  pure_python=True)

    rate = {name: total / median(ts) for name, ts in times.items()}
    proj = rate["project landing (land_batch)"]
    raw = rate["(a) kafka-python raw range read"]
    raw_paused = rate["(a') kafka-python raw range read, collector paused"]
    conf = rate["(b) confluent-kafka consume"]
    naive = rate["(c) naive json.loads + rows + one Parquet write"]
    fetch = rate["(d) Fetch requests alone, batches not decoded"]
    m = "1. Kafka -> Bronze"
    sec.figures += [
        Figure(m, "project landing (land_batch)", proj, "events/s"),
        Figure(
            m,
            "landing vs (a) kafka-python raw range read",
            proj,
            "events/s",
            "(a) " + f"{raw:,.0f}/s",
            proj / raw,
            ">= 0.8x",
            proj / raw >= 0.8,
        ),
        Figure(
            m,
            "landing vs (a') raw range read with the collector paused",
            proj,
            "events/s",
            "(a') " + f"{raw_paused:,.0f}/s",
            proj / raw_paused,
            note="information: kafka-python's reader at its best; (a) reads with the collector on, "
            "as any reader does by default",
        ),
        Figure(
            m,
            "landing vs (c) naive consumer",
            proj,
            "events/s",
            "(c) " + f"{naive:,.0f}/s",
            proj / naive,
            ">= 5x",
            proj / naive >= 5,
        ),
        Figure(
            m,
            "landing vs (b) confluent-kafka",
            proj,
            "events/s",
            "(b) " + f"{conf:,.0f}/s",
            proj / conf,
            note="information: librdkafka's consumer, one Python message object a record",
        ),
        Figure(
            m,
            "landing vs (d) the Fetch requests alone",
            proj,
            "events/s",
            "(d) " + f"{fetch:,.0f}/s",
            proj / fetch,
            note="information: the broker's and the network's limit; the same offsets fetched, each "
            "record batch skipped by its header, nothing decompressed or decoded",
        ),
    ]
    sec.notes.append(
        f"{total:,} events, {PARTITIONS} partitions, payload mean {sum(sizes) / len(sizes):.0f} B "
        f"(min {min(sizes)}, max {max(sizes)}), {payload_mb:.0f} MB; {reps} interleaved repetitions, medians. "
        f"Bronze written: {bronze_bytes / 1e6:.0f} MB of zstd Parquet."
    )
    sec.notes.append(
        "Median seconds per reader: "
        + "; ".join(
            f"{name} {median(ts):.2f}s (all: {', '.join(f'{x:.2f}' for x in ts)})"
            for name, ts in times.items()
        )
    )
    if profile:
        why = "every target met: where its time goes" if ratio_raw >= 0.8 and ratio_naive >= 5 \
            else "a target was missed"
        sec.notes.append(f"Profile of one landing ({why}): " + profile)
    sec.raw = {"events": total, "seconds": times, "events_per_s": rate}
    sec.elapsed_s = time.perf_counter() - started
    return sec
