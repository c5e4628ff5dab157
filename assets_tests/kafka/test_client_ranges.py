"""Reading a batch's offset ranges from the real broker: all partitions at once, exactly
the ranges, nothing past their ends, and a loud error when the log cannot fill a range."""

from __future__ import annotations

import pytest

from assets_tests.helpers import create_topic, produce_raw
from school_equity.kafka.client import make_consumer, read_log_offsets
from school_equity.kafka.offsets import OffsetRange

pytestmark = pytest.mark.e2e


def _read(consumer, topic, ranges, **kw) -> dict[int, list[int]]:
    from school_equity.kafka.client import iter_range_columns

    got: dict[int, list[int]] = {}
    for r, cols in iter_range_columns(consumer, topic, ranges, **kw):
        assert cols.partition == r.partition and all(r.start <= o < r.end for o in cols.offset.tolist())
        got.setdefault(r.partition, []).extend(cols.offset.tolist())
    return got


def test_ranges_of_every_partition_read_together_and_exactly(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=3)
    produce_raw(broker.bootstrap, topic_name, [(f"k{i}".encode(), b"x" * 50) for i in range(3000)])
    consumer = make_consumer(broker.bootstrap)
    try:
        ends = read_log_offsets(consumer, topic_name).end
        assert sum(ends.values()) == 3000
        # a middle slice of each partition, one empty range, and small fetches (many a range)
        ranges = [OffsetRange(p, e // 4, e - e // 4) for p, e in ends.items()] + [OffsetRange(9, 5, 5)]
        produce_raw(broker.bootstrap, topic_name, [(f"late{i}".encode(), b"y") for i in range(300)])
        fetches: list = []
        got: dict[int, list[int]] = {}
        from school_equity.kafka.client import iter_range_columns
        for r, cols in iter_range_columns(consumer, topic_name, ranges, partition_bytes=2048):
            fetches.append(r.partition)
            got.setdefault(r.partition, []).extend(cols.offset.tolist())
        for r in ranges[:-1]:
            assert got[r.partition] == list(range(r.start, r.end))
        assert 9 not in got
        assert len(fetches) > 3  # a range took several fetches
        # the consumer's own assignment and positions are left alone
        assert not consumer.assignment() and not consumer.paused()
    finally:
        consumer.close(autocommit=False)


def test_a_range_the_log_cannot_fill_raises(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=1)
    produce_raw(broker.bootstrap, topic_name, [(b"k", b"v")] * 10)
    consumer = make_consumer(broker.bootstrap)
    try:
        with pytest.raises(RuntimeError, match=r"range \[0, 25\) stalled at offset 10"):
            _read(consumer, topic_name, [OffsetRange(0, 0, 25)], stall_timeout_s=1.0)
        with pytest.raises(ValueError, match="more than one range per partition"):
            _read(consumer, topic_name, [OffsetRange(0, 0, 5), OffsetRange(0, 5, 10)])
    finally:
        consumer.close(autocommit=False)


def test_a_lost_connection_is_retried_until_the_stall_timeout(broker, topic_name, monkeypatch):
    import kafka.errors

    import school_equity.kafka.client as client

    create_topic(broker.bootstrap, topic_name, partitions=1)
    produce_raw(broker.bootstrap, topic_name, [(b"k", b"v")] * 10)
    consumer = make_consumer(broker.bootstrap)
    real_fetch, calls = client._fetch, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1 or fail_always:
            raise kafka.errors.KafkaConnectionError("connection reset")
        return real_fetch(*args)

    try:
        fail_always = False
        monkeypatch.setattr(client, "_fetch", flaky)
        assert _read(consumer, topic_name, [OffsetRange(0, 0, 10)]) == {0: list(range(10))}
        assert len(calls) >= 2
        fail_always = True
        with pytest.raises(RuntimeError, match=r"stalled at offset 0 .*the broker did not serve it "
                                               r"\(last error: KafkaConnectionError"):
            _read(consumer, topic_name, [OffsetRange(0, 0, 10)], stall_timeout_s=0.5)
    finally:
        consumer.close(autocommit=False)
