"""The producer against the real embedded broker (Tansu) and a real kafka-python consumer."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import pytest
from kafka import KafkaConsumer, TopicPartition

from school_equity.kafka.events import PRODUCER_ID, GeneratorConfig, SurveyStream, generate
from school_equity.kafka.producer import ensure_topic, produce

pytestmark = pytest.mark.e2e


def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    """Every record of the topic. Reads until `expected` records or the timeout: Tansu's
    end_offsets can under-report, so the end of the log is not asked for."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
                out.extend(batch)
        # anything beyond `expected` would be a bug too: one more short poll to see it
        for batch in consumer.poll(timeout_ms=300).values():
            out.extend(batch)
        return out
    finally:
        consumer.close()


def test_produce_5k_and_read_back(broker, topic_name):
    cfg = GeneratorConfig(seed=11, v2_after_fraction=0.5)
    report = produce(broker.bootstrap, topic_name, 5_000, config=cfg, partitions=3)
    assert (report.events, report.partitions, report.topic_created, report.stopped_early) == (5_000, 3, True, False)

    expected_records, expected_report = generate(5_000, cfg)
    assert report.stream.to_dict() == expected_report.to_dict()  # the report is the generator's truth

    got = read_all(broker.bootstrap, topic_name, 5_000)
    assert len(got) == 5_000
    assert Counter((m.key, m.value) for m in got) == Counter((r.key, r.value) for r in expected_records)

    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for m in got:
        headers = dict(m.headers)
        assert set(headers) == {"schema_version", "content-type", "producer"}
        assert headers["content-type"] == b"application/json" and headers["producer"] == PRODUCER_ID.encode()
        assert m.key is not None
        partition_of[m.key].add(m.partition)
    assert all(len(p) == 1 for p in partition_of.values()), "versions of one submission on several partitions"
    assert {m.partition for m in got} == {0, 1, 2}
    versions = Counter(int(dict(m.headers)["schema_version"]) for m in got)
    assert versions == Counter({int(k): v for k, v in report.stream.to_dict()["schema_versions"].items()})

    # within a partition, Kafka keeps the order the producer sent each submission's versions in
    sent_order = defaultdict(list)
    for r in expected_records:
        sent_order[r.key].append(r.value)
    log_order = defaultdict(list)
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        log_order[m.key].append(m.value)
    assert log_order == sent_order


def test_existing_topic_paced_and_stopped(broker, topic_name):
    assert ensure_topic(broker.bootstrap, topic_name, partitions=2) == (2, True)
    assert ensure_topic(broker.bootstrap, topic_name, partitions=5) == (2, False)  # never altered

    t0 = time.monotonic()
    paced = produce(broker.bootstrap, topic_name, 300, seed=1, rate_per_s=1_000)
    assert paced.events == 300 and paced.partitions == 2 and not paced.topic_created
    assert time.monotonic() - t0 >= 0.28  # 300 records at 1000/s

    stop = threading.Event()
    stopped = produce(broker.bootstrap, topic_name, 1_000_000, seed=2, stop_event=stop,
                      progress=lambda p: p["sent"] >= 200 and stop.set(), progress_every=200)
    assert stopped.stopped_early and stopped.stop_reason == "stop requested"
    assert 201 <= stopped.events <= 201 + GeneratorConfig().shuffle_window  # the held-back records still go

    timed = produce(broker.bootstrap, topic_name, 1_000_000, seed=3, rate_per_s=500, max_seconds=0.5)
    assert timed.stopped_early and "max_seconds" in timed.stop_reason and 0 < timed.events < 2_000

    total = paced.events + stopped.events + timed.events
    got = read_all(broker.bootstrap, topic_name, total)
    assert len(got) == total
    # a stopped stream sent exactly the records generated before the stop (seq < events), no fewer
    stream = SurveyStream(1_000_000, GeneratorConfig(seed=2))
    first = []
    for r in stream:
        if r.seq < stopped.events:
            first.append(r.value)
        if len(first) == stopped.events:
            break
    in_topic = Counter(m.value for m in got)
    assert all(in_topic[v] >= n for v, n in Counter(first).items())


def test_command_line_run(broker, topic_name, capsys):
    import argparse
    import json

    from school_equity.kafka.producer import add_producer_arguments, run_from_args

    parser = add_producer_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--bootstrap", broker.bootstrap, "--topic", topic_name, "-n", "400", "--seed", "8",
                              "--partitions", "1", "--json"])
    report = run_from_args(args)
    printed = json.loads(capsys.readouterr().out)
    assert printed["events"] == report.events == 400 and printed["partitions"] == 1
    assert printed["valid_submissions"] == report.stream.valid_submissions > 0
    assert len(read_all(broker.bootstrap, topic_name, 400)) == 400


def _batch_codecs(bootstrap: str, topic: str, expected: int, monkeypatch) -> Counter:
    """The compression codec of every record batch a consumer fetches from the topic, as
    the broker stores and serves them (kafka-python's fetcher sees the raw batches)."""
    import kafka.consumer.fetcher as fetcher
    from kafka.record import MemoryRecords

    codecs: Counter = Counter()

    def recording(buffer):
        scan = MemoryRecords(buffer)
        while (batch := scan.next_batch()) is not None:
            codecs[batch.compression_type] += 1
        return MemoryRecords(buffer)

    monkeypatch.setattr(fetcher, "MemoryRecords", recording)
    assert len(read_all(bootstrap, topic, expected)) == expected
    return codecs


def test_records_travel_zstd_compressed(broker, topic_name, monkeypatch):
    """The producer's default compression is zstd: the embedded broker keeps the topic in
    memory, about 4x less of it compressed. Overriding it still works (none here)."""
    from kafka.record.default_records import DefaultRecordBase

    produce(broker.bootstrap, topic_name, 2_000, partitions=2)
    codecs = _batch_codecs(broker.bootstrap, topic_name, 2_000, monkeypatch)
    assert codecs and set(codecs) == {DefaultRecordBase.CODEC_ZSTD}, codecs

    plain = topic_name + "_plain"
    produce(broker.bootstrap, plain, 2_000, partitions=2, producer_configs={"compression_type": None})
    assert set(_batch_codecs(broker.bootstrap, plain, 2_000, monkeypatch)) == {DefaultRecordBase.CODEC_NONE}
