"""The survey batch sensor: reads offsets, never messages.

Each tick: read the topic's offsets (fast; a broker that does not answer is a skip
with the reason), plan batches from where the last batch stopped, write each new
batch's manifest to the lake, then add its dynamic partition and request its run
with a deterministic run_key. If a tick dies after writing a manifest, the next
tick finds that manifest and re-issues the same partition and run (same run_key,
so Dagster never runs it twice).
"""


import time

import dagster as dg

from school_equity.kafka.assets import TOPIC_KEY
from school_equity.kafka.client import BrokerUnavailable, TopicMissing, committed_offsets, read_log_offsets
from school_equity.kafka.ledger import (
    StreamCursor,
    list_batch_ids,
    load_manifest,
    new_manifest,
    rebuild_cursor,
    reset_requested,
    write_manifest,
)
from school_equity.kafka.offsets import BatchingPolicy, BatchManifest, lag_is_growing, plan_batches
from school_equity.kafka.partitions import SURVEY_BATCHES, batch_id
from school_equity.lake import Lake
from school_equity.resources import LakeResource
from school_equity.resources.kafka import KafkaResource

SENSOR_NAME = "survey_batch_sensor"
LAG_HISTORY = 12
TOPIC_TAG = "school_equity/topic"
IN_FLIGHT_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def run_key(topic: str, bid: str) -> str:
    return f"{topic}:{bid}"


def batch_run_request(manifest: BatchManifest) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key(manifest.topic, manifest.batch_id),
        partition_key=manifest.batch_id,
        tags={"school_equity/batch_records": str(manifest.records), TOPIC_TAG: manifest.topic},
    )


def evaluate(
    context: dg.SensorEvaluationContext,
    kafka: KafkaResource,
    lake: Lake,
    policy: BatchingPolicy,
    now: float | None = None,
) -> dg.SensorResult | dg.SkipReason:
    now = time.time() if now is None else now
    cursor = StreamCursor.from_json(context.cursor)
    if cursor is None or cursor.topic != kafka.topic:
        cursor = rebuild_cursor(lake, kafka.topic)

    # Recovery: a previous tick wrote this manifest but died before its cursor update.
    pending_ids = [bid for bid in list_batch_ids(lake) if int(bid[1:]) > cursor.seq] if _needs_scan(lake, cursor) else []
    if pending_ids:
        manifests = [load_manifest(lake, bid) for bid in pending_ids]
        for m in manifests:
            cursor.next_offsets = m.next_offsets(cursor.next_offsets)
            cursor.seq = m.seq
        context.log.warning(f"re-issuing {len(manifests)} batch(es) written by an interrupted tick: {pending_ids}")
        return _result(cursor, manifests, now, "recovered")

    try:
        consumer = kafka.cached_consumer(with_group=False)
        log = read_log_offsets(consumer, kafka.topic)
    except BrokerUnavailable as e:
        kafka.forget_cached()
        return dg.SkipReason(f"Kafka broker unavailable, no batch cut and cursor unchanged: {e}")
    except TopicMissing as e:
        return dg.SkipReason(str(e))
    except Exception as e:  # a half-open connection: drop it, report, try again next tick
        kafka.forget_cached()
        return dg.SkipReason(f"reading offsets of {kafka.topic!r} failed ({type(e).__name__}: {e}); will retry")

    plan = plan_batches(cursor.next_offsets, log, now=now, last_batch_at=cursor.last_batch_at, policy=policy)
    if plan.blocked and reset_requested(lake, cursor.seq):
        context.log.warning(f"operator reset after batch {cursor.seq}: starting from the start of the new log")
        cursor.next_offsets = {}
        plan = plan_batches({}, log, now=now, last_batch_at=cursor.last_batch_at, policy=policy)

    events: list = []
    for a in plan.anomalies:
        context.log.error(f"[{a.kind}] {a.describe()}")
    if plan.anomalies:
        events.append(dg.AssetObservation(asset_key=TOPIC_KEY, metadata={
            "anomalies": dg.MetadataValue.json([a.describe() for a in plan.anomalies]),
            "anomaly_kinds": ",".join(sorted({a.kind for a in plan.anomalies})),
        }))

    # Landing lag, as standard Kafka tools see it: log end minus the group's committed offset.
    lag = _landing_lag(kafka, log.end)
    if lag is not None:
        cursor.lag_history = (cursor.lag_history + [lag])[-LAG_HISTORY:]
        if lag_is_growing(cursor.lag_history):
            msg = f"landing lag keeps growing: {cursor.lag_history[-7:]} records over the last ticks"
            context.log.warning(msg)
            events.append(dg.AssetObservation(asset_key=TOPIC_KEY, metadata={"lag_growing": True, "lag": lag,
                                                                              "warning": msg}))

    if plan.blocked or not plan.ranges:
        return dg.SensorResult(skip_reason=dg.SkipReason(plan.reason), cursor=cursor.to_json(), asset_events=events)

    limit = policy.max_runs_in_flight
    if limit and (in_flight := _runs_in_flight(context, kafka.topic)) >= limit:
        waiting = sum(r.size for batch in plan.ranges for r in batch)
        reason = (
            f"backpressure: {in_flight} batch run(s) of {kafka.topic!r} queued or running (limit "
            f"{limit}); {waiting} waiting record(s) go into the next batch"
        )
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor.to_json(), asset_events=events)

    manifests = []
    for ranges in plan.ranges:
        seq = cursor.seq + 1
        m = new_manifest(seq, kafka.topic, ranges, plan.gaps, now)
        write_manifest(lake, m)  # before the partition exists: the lake defines the batch
        cursor.seq = seq
        cursor.next_offsets = m.next_offsets(cursor.next_offsets)
        manifests.append(m)
    events.append(dg.AssetObservation(asset_key=TOPIC_KEY, metadata={
        "end_offsets": dg.MetadataValue.json({str(p): o for p, o in log.end.items()}),
        "landing_lag": lag if lag is not None else -1,
        "batches_cut": len(manifests),
    }))
    context.log.info(plan.reason)
    return _result(cursor, manifests, now, plan.reason, events)


def _runs_in_flight(context: dg.SensorEvaluationContext, topic: str) -> int:
    """Batch runs of this topic not finished yet (queued, starting or running)."""
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a context built without an instance (unit tests)
        return 0
    return instance.get_runs_count(dg.RunsFilter(tags={TOPIC_TAG: topic}, statuses=IN_FLIGHT_STATUSES))


def _needs_scan(lake: Lake, cursor: StreamCursor) -> bool:
    # one existence check per tick: is there a manifest beyond the cursor?
    from school_equity.bronze.landing import manifest_path

    return lake.exists(manifest_path(batch_id(cursor.seq + 1)))


def _landing_lag(kafka: KafkaResource, end: dict[int, int]) -> int | None:
    try:
        grouped = kafka.cached_consumer(with_group=True)
        committed = committed_offsets(grouped, kafka.topic, list(end))
    except Exception:
        return None
    return sum(max(0, e - (committed.get(p) or 0)) for p, e in end.items())


def _result(cursor: StreamCursor, manifests: list[BatchManifest], now: float, reason: str,
            events: list | None = None) -> dg.SensorResult:
    cursor.last_batch_at = now
    return dg.SensorResult(
        run_requests=[batch_run_request(m) for m in manifests],
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(SURVEY_BATCHES, [m.batch_id for m in manifests])],
        cursor=cursor.to_json(),
        asset_events=events or [],
    )


def build_survey_batch_sensor(job, policy: BatchingPolicy | None = None, minimum_interval_seconds: int = 15):
    policy = policy or BatchingPolicy()

    @dg.sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Reads the survey topic's offsets (never its messages) and, when there is new data, cuts a batch "
            f"partition of fixed offset ranges (manifest in the lake) and requests its run. Batching: "
            f"{policy.min_records} records or {policy.max_wait_s:.0f}s, at most one batch per "
            f"{policy.min_interval_s:.0f}s, at most {policy.max_records} records per batch."
        ),
    )
    def survey_batch_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource, lake: LakeResource):
        return evaluate(context, kafka, lake.get_lake(), policy)

    return survey_batch_sensor
