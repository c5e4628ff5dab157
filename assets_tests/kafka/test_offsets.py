"""Unit tests of the pure offset planning."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from school_equity.kafka.offsets import (
    BatchingPolicy,
    BatchManifest,
    Gap,
    LogOffsets,
    OffsetRange,
    lag_is_growing,
    pending_ranges,
    plan_batches,
    split_ranges,
)

POLICY = BatchingPolicy(min_records=100, min_interval_s=30, max_wait_s=600, max_records=1000)


def test_offset_range_rejects_inverted():
    with pytest.raises(ValueError, match="partition 3"):
        OffsetRange(3, 10, 5)


def test_new_partitions_start_at_first_retained_offset():
    ranges, gaps, anomalies = pending_ranges({}, LogOffsets(start={0: 0, 1: 7}, end={0: 5, 1: 9}))
    assert ranges == [OffsetRange(0, 0, 5), OffsetRange(1, 7, 9)]
    assert gaps == [] and anomalies == []


def test_offsets_backwards_blocks_and_names_partition():
    plan = plan_batches({0: 50, 1: 10}, LogOffsets(start={0: 0, 1: 0}, end={0: 20, 1: 30}),
                        now=1000, last_batch_at=None, policy=POLICY)
    assert plan.blocked and plan.ranges == []
    assert [a.kind for a in plan.anomalies] == ["offsets_backwards"]
    assert "partition 0" in plan.reason and "50" in plan.reason


def test_missing_partition_blocks():
    plan = plan_batches({0: 5, 1: 5}, LogOffsets(start={0: 0}, end={0: 9}), now=0, last_batch_at=None, policy=POLICY)
    assert plan.blocked and plan.anomalies[0].kind == "partition_missing"


def test_retention_gap_reported_and_skipped_not_blocking():
    plan = plan_batches({0: 10}, LogOffsets(start={0: 40}, end={0: 500}), now=0, last_batch_at=None, policy=POLICY)
    assert not plan.blocked
    assert plan.gaps == [Gap(0, 10, 40)]
    assert plan.anomalies[0].kind == "retention_gap" and "30 records lost" in plan.anomalies[0].describe()
    assert plan.ranges == [[OffsetRange(0, 40, 500)]]


def test_waits_for_min_records_then_max_wait():
    log = LogOffsets(start={0: 0}, end={0: 50})
    early = plan_batches({0: 0}, log, now=100, last_batch_at=90, policy=POLICY)
    assert early.ranges == [] and "waiting for 100" in early.reason
    late = plan_batches({0: 0}, log, now=90 + 600, last_batch_at=90, policy=POLICY)
    assert late.ranges == [[OffsetRange(0, 0, 50)]]


def test_min_interval_between_batches():
    log = LogOffsets(start={0: 0}, end={0: 500})
    assert plan_batches({0: 0}, log, now=100, last_batch_at=80, policy=POLICY).ranges == []
    assert plan_batches({0: 0}, log, now=111, last_batch_at=80, policy=POLICY).ranges != []


def test_backlog_is_split_and_cut_at_once():
    log = LogOffsets(start={0: 0, 1: 0}, end={0: 3000, 1: 100})
    plan = plan_batches({}, log, now=100, last_batch_at=99, policy=POLICY)
    assert len(plan.ranges) == POLICY.max_batches_per_tick
    assert all(sum(r.size for r in b) <= POLICY.max_records for b in plan.ranges)
    # the small partition is not starved behind the big one
    assert any(r.partition == 1 for r in plan.ranges[0])


@given(
    sizes=st.dictionaries(st.integers(0, 11), st.tuples(st.integers(0, 10_000), st.integers(0, 5_000)), max_size=12),
    max_records=st.integers(1, 3_000),
)
@settings(max_examples=200, deadline=None)
def test_split_covers_every_offset_once(sizes, max_records):
    ranges = [OffsetRange(p, s, s + n) for p, (s, n) in sizes.items()]
    batches = split_ranges(ranges, max_records)
    for b in batches:
        assert 0 < sum(r.size for r in b) <= max_records
    per_partition: dict[int, list[OffsetRange]] = {}
    for b in batches:
        for r in b:
            per_partition.setdefault(r.partition, []).append(r)
    for r in ranges:
        got = per_partition.get(r.partition, [])
        if r.size == 0:
            assert not got
            continue
        # contiguous, in order, exactly [start, end)
        assert got[0].start == r.start and got[-1].end == r.end
        assert all(a.end == b.start for a, b in zip(got, got[1:], strict=False))


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 200)), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_consecutive_plans_never_overlap_or_skip(appends):
    """Simulate a log growing between ticks: the batches cut tile the log exactly."""
    end: dict[int, int] = {}
    next_start: dict[int, int] = {}
    landed: dict[int, list[OffsetRange]] = {}
    for t, (p, n) in enumerate(appends):
        end[p] = end.get(p, 0) + n
        plan = plan_batches(next_start, LogOffsets(start={q: 0 for q in end}, end=dict(end)),
                            now=t * 1000.0, last_batch_at=None, policy=POLICY)
        for batch in plan.ranges:
            m = BatchManifest("b", 0, "t", "", tuple(batch))
            next_start = m.next_offsets(next_start)
            for r in batch:
                landed.setdefault(r.partition, []).append(r)
    for p, rs in landed.items():
        assert rs[0].start == 0
        assert all(a.end == b.start for a, b in zip(rs, rs[1:], strict=False))
        assert rs[-1].end <= end[p]


def test_manifest_round_trip():
    m = BatchManifest("b000000003", 3, "topic", "2026-01-01T00:00:00+00:00",
                      (OffsetRange(0, 5, 9), OffsetRange(2, 0, 4)), (Gap(0, 1, 5),))
    assert BatchManifest.from_json(m.to_json()) == m
    assert m.records == 8
    assert m.next_offsets({1: 7, 0: 2}) == {0: 9, 1: 7, 2: 4}


def test_lag_growing_needs_a_sustained_rise():
    assert not lag_is_growing([1, 2, 3])
    assert lag_is_growing([0, 10, 20, 30, 40, 50, 60])
    assert not lag_is_growing([0, 10, 20, 15, 40, 50, 60])
    assert not lag_is_growing([5, 5, 5, 5, 5, 5, 5])
