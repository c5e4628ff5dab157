"""Offset arithmetic for the stream's batch partitions. Pure: no Kafka client, no Dagster.

A batch is a fixed set of half-open offset ranges ``[start, end)``, one per topic
partition with new records. The sensor plans batches from three readings (where
the previous batch stopped, where the log starts, where it ends) and a batching
policy; the plan also carries anomalies the sensor must report: offsets that went
backwards (topic recreated, or a broker that lost its log), retention gaps
(records deleted before we landed them) and partitions that disappeared.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, order=True)
class OffsetRange:
    partition: int
    start: int
    end: int  # exclusive

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid offset range for partition {self.partition}: [{self.start}, {self.end})")

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Gap:
    """Offsets ``[start, end)`` of a partition that the log no longer holds."""

    partition: int
    start: int
    end: int


@dataclass(frozen=True)
class BatchManifest:
    """What a batch partition means, written to the lake before the partition exists,
    so the batch's ranges are recoverable from the lake alone."""

    batch_id: str
    seq: int
    topic: str
    created_at: str  # ISO-8601 UTC
    ranges: tuple[OffsetRange, ...]
    gaps: tuple[Gap, ...] = ()

    @property
    def records(self) -> int:
        return sum(r.size for r in self.ranges)

    def next_offsets(self, previous: dict[int, int] | None = None) -> dict[int, int]:
        """Where the batch after this one starts, per partition."""
        out = dict(previous or {})
        for r in self.ranges:
            out[r.partition] = max(out.get(r.partition, 0), r.end)
        return out

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> BatchManifest:
        d = json.loads(text)
        return cls(
            batch_id=d["batch_id"],
            seq=int(d["seq"]),
            topic=d["topic"],
            created_at=d["created_at"],
            ranges=tuple(OffsetRange(int(r["partition"]), int(r["start"]), int(r["end"])) for r in d["ranges"]),
            gaps=tuple(Gap(int(g["partition"]), int(g["start"]), int(g["end"])) for g in d.get("gaps", [])),
        )


@dataclass(frozen=True)
class BatchingPolicy:
    """When a batch is cut. Defaults keep the partition count sane for a year:

    - ``min_records`` and ``min_interval_s``: under steady load at most one batch per
      ``min_interval_s`` (30 s -> 2,880 a day at the very most, only while load lasts);
    - ``max_wait_s``: a trickle below ``min_records`` waits up to this long, so an
      idle-ish stream makes at most one batch per 15 min (35,040 a year, worst case);
    - ``max_records``: a backlog is split into batches of at most this many records,
      each processed in bounded memory;
    - ``max_runs_in_flight``: backpressure. While this many batch runs are queued or
      running, no new batch is cut; what waits goes into the next, bigger batch. Runs
      slower than ``min_interval_s`` then make fewer, larger batches instead of a queue
      that grows (and a latency that grows with it). 0 turns it off.
    """

    min_records: int = 1_000
    min_interval_s: float = 30.0
    max_wait_s: float = 900.0
    max_records: int = 250_000
    max_batches_per_tick: int = 4
    max_runs_in_flight: int = 2

    def __post_init__(self) -> None:
        if self.min_records < 1 or self.max_records < self.min_records:
            raise ValueError("need 1 <= min_records <= max_records")
        if self.max_runs_in_flight < 0:
            raise ValueError("need max_runs_in_flight >= 0 (0: no limit)")
        if self.min_interval_s < 0 or self.max_wait_s < self.min_interval_s:
            raise ValueError("need 0 <= min_interval_s <= max_wait_s")


@dataclass(frozen=True)
class Anomaly:
    kind: str  # offsets_backwards | retention_gap | partition_missing
    partition: int
    expected: int
    observed: int
    blocking: bool

    def describe(self) -> str:
        if self.kind == "offsets_backwards":
            return (f"partition {self.partition}: log end offset {self.observed} is below offset {self.expected} "
                    f"already landed (topic recreated or broker lost its log); no batch is cut until an "
                    f"operator resets the stream")
        if self.kind == "retention_gap":
            return (f"partition {self.partition}: offsets [{self.expected}, {self.observed}) are no longer "
                    f"retained and were never landed ({self.observed - self.expected} records lost)")
        return (f"partition {self.partition} was landed up to offset {self.expected} but the topic no longer "
                f"has it (topic recreated with fewer partitions?)")


@dataclass(frozen=True)
class LogOffsets:
    """One reading of the topic: per partition, first retained offset and end offset."""

    start: dict[int, int]
    end: dict[int, int]


@dataclass
class Plan:
    ranges: list[list[OffsetRange]] = field(default_factory=list)  # one list per batch to cut
    gaps: list[Gap] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    pending: int = 0
    reason: str = ""

    @property
    def blocked(self) -> bool:
        return any(a.blocking for a in self.anomalies)


def pending_ranges(next_start: dict[int, int], log: LogOffsets) -> tuple[list[OffsetRange], list[Gap], list[Anomaly]]:
    """The ranges not yet in any batch, with gaps and anomalies found on the way."""
    ranges: list[OffsetRange] = []
    gaps: list[Gap] = []
    anomalies: list[Anomaly] = []
    for p, expected in sorted(next_start.items()):
        if p not in log.end:
            anomalies.append(Anomaly("partition_missing", p, expected, -1, blocking=True))
    for p in sorted(log.end):
        end = log.end[p]
        first = log.start.get(p, 0)
        start = next_start.get(p, first)  # a partition never seen starts at its first retained offset
        if end < start:
            anomalies.append(Anomaly("offsets_backwards", p, start, end, blocking=True))
            continue
        if first > start:
            gaps.append(Gap(p, start, first))
            anomalies.append(Anomaly("retention_gap", p, start, first, blocking=False))
            start = first
        if end > start:
            ranges.append(OffsetRange(p, start, end))
    return ranges, gaps, anomalies


def split_ranges(ranges: list[OffsetRange], max_records: int) -> list[list[OffsetRange]]:
    """Cut ranges into batches of at most ``max_records``, taking a fair share of each
    partition per batch so that no partition's records wait behind another's backlog."""
    batches: list[list[OffsetRange]] = []
    remaining = [r for r in ranges if r.size > 0]
    while remaining:
        budget = max_records
        batch: list[OffsetRange] = []
        rest: list[OffsetRange] = []
        for i, r in enumerate(remaining):
            share = max(1, math.ceil(budget / (len(remaining) - i)))
            take = min(r.size, share, budget)
            if take > 0:
                batch.append(OffsetRange(r.partition, r.start, r.start + take))
                budget -= take
            if r.start + take < r.end:
                rest.append(OffsetRange(r.partition, r.start + take, r.end))
        batches.append(batch)
        remaining = rest
    return batches


def plan_batches(
    next_start: dict[int, int],
    log: LogOffsets,
    *,
    now: float,
    last_batch_at: float | None,
    policy: BatchingPolicy,
) -> Plan:
    """Decide which batches to cut now (possibly none, with the reason)."""
    ranges, gaps, anomalies = pending_ranges(next_start, log)
    plan = Plan(gaps=gaps, anomalies=anomalies, pending=sum(r.size for r in ranges))
    if plan.blocked:
        plan.reason = "; ".join(a.describe() for a in anomalies if a.blocking)
        return plan
    if plan.pending == 0:
        plan.reason = "no new records"
        return plan
    since = math.inf if last_batch_at is None else max(0.0, now - last_batch_at)
    backlog = plan.pending >= policy.max_records
    ready = (plan.pending >= policy.min_records and since >= policy.min_interval_s) or since >= policy.max_wait_s
    if not (backlog or ready):
        if plan.pending < policy.min_records:
            plan.reason = (f"{plan.pending} new records, waiting for {policy.min_records} or "
                           f"{policy.max_wait_s - since:.0f}s more")
        else:
            plan.reason = f"{plan.pending} new records, next batch in {policy.min_interval_s - since:.0f}s"
        return plan
    plan.ranges = split_ranges(ranges, policy.max_records)[: policy.max_batches_per_tick]
    plan.reason = f"cut {len(plan.ranges)} batch(es) over {plan.pending} pending records"
    return plan


def lag_is_growing(history: list[int], window: int = 6) -> bool:
    """True when the landing lag rose at every one of the last ``window`` readings:
    the pipeline is falling behind the producers, not merely busy."""
    if len(history) < window + 1:
        return False
    tail = history[-(window + 1):]
    return all(b > a for a, b in zip(tail, tail[1:], strict=False)) and tail[-1] > 0
