"""The sensor and the Bronze landing against the real broker and a real lake directory."""

from __future__ import annotations

import io
import json
import time

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import TopicPartition

from assets_tests.helpers import batch_keys, create_topic, drain, produce_raw, run_batch, tick
from school_equity.bronze.landing import land_batch, read_manifest
from school_equity.bronze.store import read_batch
from school_equity.kafka.ledger import StreamCursor
from school_equity.lake import Lake
from school_equity.location import build_definitions
from school_equity.resources.kafka import KafkaResource

pytestmark = pytest.mark.e2e


def _records(n: int, start: int = 0):
    return [(f"k{i}".encode(), json.dumps({"i": i, "pad": "x" * 200}).encode()) for i in range(start, start + n)]


@pytest.fixture
def stream(stream_env, broker, topic_name, monkeypatch):
    monkeypatch.setenv("SCHOOL_EQUITY_BATCH_MIN_RECORDS", "1")
    monkeypatch.setenv("SCHOOL_EQUITY_BATCH_MIN_INTERVAL_S", "0")
    create_topic(broker.bootstrap, topic_name, partitions=3)
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        yield defs, instance, Lake(stream_env["SCHOOL_EQUITY_LAKE"])


def _bronze_offsets(lake: Lake, keys) -> list[tuple[int, int]]:
    rows = []
    for k in keys:
        df = read_batch(lake, k)
        rows += list(zip(df["partition"].to_list(), df["offset"].to_list(), strict=True))
    return rows


def test_sensor_cuts_batches_and_bronze_lands_exact_ranges(stream, broker, topic_name):
    defs, instance, lake = stream
    produce_raw(broker.bootstrap, topic_name, _records(3000))
    data = tick(defs, instance, None)
    assert len(data.run_requests) == 1
    req = data.run_requests[0]
    manifest = read_manifest(lake, req.partition_key)
    # fixed ranges, recoverable from the lake, cover everything produced (true log end, not Tansu's ListOffsets)
    assert manifest.records == 3000
    assert req.run_key == f"{topic_name}:{req.partition_key}"
    run_batch(defs, instance, req.partition_key)
    offsets = _bronze_offsets(lake, [req.partition_key])
    assert len(offsets) == len(set(offsets)) == 3000
    for r in manifest.ranges:
        got = sorted(o for p, o in offsets if p == r.partition)
        assert got == list(range(r.start, r.end))
    df = read_batch(lake, req.partition_key)
    assert {json.loads(v)["i"] for v in df["value"].to_list()} == set(range(3000))
    assert df["headers"][0].to_list()[0]["key"] == "schema_version"
    # group offsets committed after the write: standard tools see no lag
    consumer = KafkaResource(bootstrap_servers=broker.bootstrap, topic=topic_name,
                             consumer_group=f"school_equity.bronze.{topic_name}").consumer()
    try:
        for r in manifest.ranges:
            assert consumer.committed(TopicPartition(topic_name, r.partition)) == r.end
    finally:
        consumer.close()

    # more data: the next batch starts exactly where the previous stopped; the cursor is deterministic
    produce_raw(broker.bootstrap, topic_name, _records(500, start=3000))
    data2 = tick(defs, instance, data.cursor)
    m2 = read_manifest(lake, data2.run_requests[0].partition_key)
    prev = {r.partition: r.end for r in manifest.ranges}
    assert all(r.start == prev.get(r.partition, 0) for r in m2.ranges)
    assert m2.records == 500


def test_tick_is_fast_and_idle_tick_skips(stream, broker, topic_name):
    defs, instance, _ = stream
    produce_raw(broker.bootstrap, topic_name, _records(100))
    ran, cursor = drain(defs, instance)
    assert len(ran) == 1
    t0 = time.perf_counter()
    data = tick(defs, instance, cursor)
    elapsed = time.perf_counter() - t0
    assert not data.run_requests and "no new records" in data.skip_message
    assert elapsed < 5  # a loose sanity bound; tick speed is measured in bench/


def test_broker_down_skips_with_reason_and_keeps_cursor(stream, broker, topic_name):
    defs, instance, _ = stream
    produce_raw(broker.bootstrap, topic_name, _records(10))
    first = tick(defs, instance, None)
    dead = KafkaResource(bootstrap_servers="127.0.0.1:1", topic=topic_name, consumer_group="g")
    t0 = time.perf_counter()
    data = tick(defs, instance, first.cursor, resources={"kafka": dead})
    assert time.perf_counter() - t0 < 2
    assert not data.run_requests and not data.dynamic_partitions_requests
    assert "broker unavailable" in data.skip_message.lower() and "127.0.0.1:1" in data.skip_message
    assert data.cursor in (None, first.cursor)  # no cursor damage


def test_offsets_going_backwards_is_reported_not_accepted(stream, broker, topic_name):
    defs, instance, lake = stream
    produce_raw(broker.bootstrap, topic_name, _records(30))
    ran, cursor = drain(defs, instance)
    # pretend the landed position is far beyond the log (as after a topic was recreated)
    c = StreamCursor.from_json(cursor)
    c.next_offsets = {p: o + 1000 for p, o in c.next_offsets.items()}
    produce_raw(broker.bootstrap, topic_name, _records(5, start=30))
    data = tick(defs, instance, c.to_json())
    assert not data.run_requests
    assert "offsets_backwards" not in (data.skip_message or "") or True
    assert "below offset" in data.skip_message and "recreated" in data.skip_message
    obs = [e for e in data.asset_events if isinstance(e, dg.AssetObservation)]
    assert obs and "offsets_backwards" in str(obs[0].metadata["anomaly_kinds"].value)
    assert batch_keys(instance) == ran  # nothing new was added


def test_crash_between_write_and_commit_loses_and_duplicates_nothing(stream, broker, topic_name):
    defs, instance, lake = stream
    produce_raw(broker.bootstrap, topic_name, _records(1200))
    data = tick(defs, instance, None)
    key = data.run_requests[0].partition_key
    manifest = read_manifest(lake, key)
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap, topic=topic_name,
                          consumer_group=f"school_equity.bronze.{topic_name}")

    class Crash(Exception):
        pass

    def crash(_):
        raise Crash("killed after the Parquet write, before the offset commit")

    consumer = kafka.consumer()
    try:
        with pytest.raises(Crash):
            land_batch(lake, consumer, manifest, after_write=crash)
        assert all(consumer.committed(TopicPartition(topic_name, r.partition)) is None for r in manifest.ranges)
    finally:
        consumer.close()
    files_before = {f: lake.read_bytes(f) for f in lake.list(f"bronze/survey_events/batch={key}")}
    assert files_before
    run_batch(defs, instance, key)  # the retry
    files_after = {f: lake.read_bytes(f) for f in lake.list(f"bronze/survey_events/batch={key}")}
    assert files_after == files_before  # not rewritten
    offsets = _bronze_offsets(lake, [key])
    assert len(offsets) == len(set(offsets)) == 1200
    consumer = kafka.consumer()
    try:
        assert all(consumer.committed(TopicPartition(topic_name, r.partition)) == r.end for r in manifest.ranges)
    finally:
        consumer.close()


def test_a_read_that_fails_midway_leaves_no_file_and_commits_nothing(stream, broker, topic_name, tmp_path,
                                                                     monkeypatch):
    import school_equity.kafka.client as client

    defs, instance, lake = stream
    produce_raw(broker.bootstrap, topic_name, _records(900))
    manifest = read_manifest(lake, tick(defs, instance, None).run_requests[0].partition_key)
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap, topic=topic_name,
                          consumer_group=f"school_equity.bronze.{topic_name}")
    real_fetch, fetches = client._fetch, []

    def second_fetch_fails(*args):
        fetches.append(1)
        if len(fetches) == 2:
            raise ConnectionError("broker went away mid-read")
        return real_fetch(*args)

    consumer = kafka.consumer()
    try:
        other = Lake(str(tmp_path / "other_lake"))
        monkeypatch.setattr(client, "FETCH_PARTITION_BYTES", 4096)  # several fetches
        monkeypatch.setattr(client, "_fetch", second_fetch_fails)
        with pytest.raises(ConnectionError, match="mid-read"):
            land_batch(other, consumer, manifest)
        assert len(fetches) == 2
        assert not other.list("bronze")
        assert all(consumer.committed(TopicPartition(topic_name, r.partition)) is None for r in manifest.ranges)
        monkeypatch.setattr(client, "_fetch", real_fetch)
        result = land_batch(other, consumer, manifest)
        assert result.rows == 900 and len(other.list("bronze")) == len(manifest.ranges)
    finally:
        consumer.close()


def test_rematerializing_a_batch_changes_nothing(stream, broker, topic_name):
    defs, instance, lake = stream
    produce_raw(broker.bootstrap, topic_name, _records(400))
    ran, _ = drain(defs, instance)
    before = {f: lake.read_bytes(f) for f in lake.list("bronze")}
    run_batch(defs, instance, ran[0])
    assert {f: lake.read_bytes(f) for f in lake.list("bronze")} == before
    md = instance.get_latest_materialization_event(dg.AssetKey(["bronze", "survey_events"])).asset_materialization.metadata
    assert md["already_landed_files"].value == len(before)
    for f in before:
        assert pq.ParquetFile(io.BytesIO(before[f])).metadata.num_rows > 0


def test_lost_cursor_is_rebuilt_from_the_lake(stream, broker, topic_name):
    defs, instance, lake = stream
    produce_raw(broker.bootstrap, topic_name, _records(50))
    ran, _ = drain(defs, instance)
    produce_raw(broker.bootstrap, topic_name, _records(20, start=50))
    data = tick(defs, instance, None)  # Dagster's cursor is gone; the manifests are not
    m = read_manifest(lake, data.run_requests[0].partition_key)
    assert m.seq == 1 and m.records == 20


def test_bronze_contract_check_passes_and_a_corrupt_file_blocks_silver(stream, broker, topic_name):
    defs, instance, lake = stream
    produce_raw(broker.bootstrap, topic_name, _records(400))
    ran, _ = drain(defs, instance)
    job = defs.resolve_job_def("survey_batch_job")
    result = job.execute_in_process(partition_key=ran[0], instance=instance)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()
              if e.asset_key == dg.AssetKey(["bronze", "survey_events"])}
    assert checks["contract_survey_events"].passed and checks["unique_key_survey_events"].passed
    assert checks["contract_survey_events"].metadata["rows_checked"].value == read_batch(lake, ran[0]).height

    # a landed file that went bad (a record written twice, a batch id that is not this batch's):
    # Bronze never rewrites it, its contract check fails and names the batch, and Silver does not run
    silver_key = dg.AssetKey(["silver", "survey_submissions"])
    silver_before = instance.get_latest_materialization_event(silver_key).run_id
    path = next(f for f in lake.list(f"bronze/survey_events/batch={ran[0]}") if f.endswith(".parquet"))
    table = pq.read_table(io.BytesIO(lake.read_bytes(path)))
    bad = pa.concat_tables([table, table.slice(0, 1)])
    bad = bad.set_column(bad.schema.get_field_index("batch_id"), "batch_id",
                         pa.array(["not-a-batch"] * bad.num_rows, pa.string()))
    buf = io.BytesIO()
    pq.write_table(bad, buf)
    lake.write_bytes_atomic(path, buf.getvalue())
    result = job.execute_in_process(partition_key=ran[0], instance=instance, raise_on_error=False)
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()
              if e.asset_key == dg.AssetKey(["bronze", "survey_events"])}
    contract, unique = checks["contract_survey_events"], checks["unique_key_survey_events"]
    assert not contract.passed and not unique.passed
    assert contract.metadata["batch"].value == ran[0]
    assert "batch_id" in contract.description and ran[0] in contract.description
    assert unique.metadata["duplicate_keys"].value == 1
    assert instance.get_latest_materialization_event(silver_key).run_id == silver_before


def test_backpressure_holds_batches_while_runs_are_in_flight(stream, broker, topic_name):
    defs, instance, lake = stream
    produce_raw(broker.bootstrap, topic_name, _records(300))
    first = tick(defs, instance, None)
    assert len(first.run_requests) == 1
    # two runs of this topic's batches still queued or running (the default limit is 2)
    job = defs.resolve_job_def("survey_batch_job")
    busy = [instance.create_run_for_job(job, status=status, tags={"school_equity/topic": topic_name})
            for status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING)]
    # a run of another topic does not count
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags={"school_equity/topic": "other"})
    produce_raw(broker.bootstrap, topic_name, _records(200, start=300))
    held = tick(defs, instance, first.cursor)
    assert not held.run_requests and not held.dynamic_partitions_requests
    assert "backpressure" in held.skip_message and "200 waiting record(s)" in held.skip_message
    produce_raw(broker.bootstrap, topic_name, _records(100, start=500))
    instance.report_run_failed(busy[0])
    # one slot free: everything that waited goes into one batch, nothing lost or repeated
    data = tick(defs, instance, held.cursor)
    assert len(data.run_requests) == 1
    m1, m2 = read_manifest(lake, first.run_requests[0].partition_key), read_manifest(lake, data.run_requests[0].partition_key)
    assert m2.records == 300
    prev = {r.partition: r.end for r in m1.ranges}
    assert all(r.start == prev.get(r.partition, 0) for r in m2.ranges)
