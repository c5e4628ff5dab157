"""3. Event -> Silver and event -> Gold latency under `dagster dev`: the real code location,
daemon and run workers, the sensor on, and the project's producer sending at a steady
rate to the embedded broker.

Latency of an event = the materialization time of the batch that holds it (the last
Silver stream asset, the last Gold stream model of that partition) minus its Kafka
record timestamp (the producer's send time; event times are simulated). p50/p95 over
every event of the measured batches, after the first WARMUP_BATCHES (the first run
also pays for pools and caches being set up). Target: p95 event -> Gold <= 60 s.

Each batch is also decomposed (send -> batch cut -> run start -> Bronze -> Silver ->
Gold) so a miss can be attributed; the baseline of the ratio is the part of the
latency the batching policy alone imposes (send -> cut).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

from bench.common import Figure, Section, median, percentile, scratch_dir

SENSOR = "survey_batch_sensor"
STREAM_JOB = "survey_batch_job"
WARMUP_BATCHES = 2
RATE_PER_S = 200  # a busy hour of the survey window (the 2019 survey: ~1M responses over ~10 weeks)

# What a latency-sensitive deployment sets (school_equity/location.py reads them):
# the sensor looks every 5 s and cuts a batch of whatever arrived, but at most one per
# 15 s so that a batch run (three steps, ~3 s of process start each, dbt's start) keeps up.
LATENCY_ENV = {
    "SCHOOL_EQUITY_SENSOR_INTERVAL_S": "5",
    "SCHOOL_EQUITY_BATCH_MIN_RECORDS": "1",
    "SCHOOL_EQUITY_BATCH_MIN_INTERVAL_S": "15",
    "SCHOOL_EQUITY_BATCH_MAX_WAIT_S": "15",
}


def _stream_assets(gql) -> dict[str, list[str]]:
    """The stream job's assets by group (bronze, silver, gold)."""
    out: dict[str, list[str]] = {}
    for n in gql.asset_nodes():
        if STREAM_JOB in n["jobs"] and n["partitioned"]:
            out.setdefault(n["group"], []).append(n["key"])
    return out


def _first_materializations(gql, keys: list[str]) -> dict[str, dict[str, float]]:
    """{asset key: {partition: first materialization time (s)}}."""
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        per: dict[str, float] = {}
        for m in gql.materializations(key, limit=5000):
            if m["partition"] is not None:
                t = float(m["timestamp"]) / 1000
                per[m["partition"]] = min(per.get(m["partition"], t), t)
        out[key] = per
    return out


def _done(mats: dict[str, dict[str, float]], keys: list[str], partition: str) -> float | None:
    """When every asset of `keys` had materialized `partition` (None if one has not)."""
    times = [mats.get(k, {}).get(partition) for k in keys]
    return None if not times or any(t is None for t in times) else max(times)


def _step_stats(gql, run_id: str) -> dict[str, tuple[float | None, float | None]]:
    """{step key: (start, end)} of a run, from the GraphQL API."""
    data = gql.query(
        """query($id: ID!) { runOrError(runId: $id) { __typename
             ... on Run { stepStats { stepKey startTime endTime } } } }""",
        {"id": run_id},
    )["runOrError"]
    return {st["stepKey"]: (st["startTime"], st["endTime"]) for st in data.get("stepStats") or []}


# (Dagster 1.13 logs no dequeue event: the queue's wait and the launcher are one stage here.)
LIFECYCLE = ("RunEnqueuedEvent", "RunStartingEvent", "RunStartEvent")


def _lifecycle(gql, run_id: str) -> dict[str, float]:
    """{event type: timestamp} of a run's queue and launch events (enqueued; starting: the
    queue's daemon dequeued it and the launcher handed it to the code server; start: the
    run worker has loaded the code and begins), from the GraphQL API."""
    data = gql.query(
        """query($id: ID!) { logsForRun(runId: $id, limit: 200) { __typename
             ... on EventConnection { events { __typename ... on MessageEvent { timestamp } } } } }""",
        {"id": run_id},
    )["logsForRun"]
    out: dict[str, float] = {}
    for ev in data.get("events") or []:
        if ev["__typename"] in LIFECYCLE and ev.get("timestamp"):
            out.setdefault(ev["__typename"], float(ev["timestamp"]) / 1000)
    return out


def _gold_step(steps: dict[str, tuple[float | None, float | None]]) -> tuple[float | None, float | None]:
    """(start, end) of the stream run's dbt step."""
    for key, (start, end) in steps.items():
        if "gold_stream" in key:
            return start, end
    return None, None


def _batch_timestamps(lake_root: str, batch_id: str) -> list[float]:
    import polars as pl

    files = sorted(Path(lake_root, "bronze", "survey_events", f"batch={batch_id}").glob("*.parquet"))
    if not files:
        return []
    ts = pl.read_parquet(files, columns=["timestamp"]).get_column("timestamp")
    return (ts.dt.epoch("ms") / 1000).to_list()


def run(
    batches: int, log=print, module: str = "school_equity.definitions", extra_env: dict | None = None
) -> Section:
    from assets_tests.dagster_dev.harness import start_dagster_dev
    from bench.common import running_broker
    from school_equity.kafka.offsets import BatchManifest
    from school_equity.kafka.producer import ensure_topic, produce

    sec = Section("Event -> Silver / Gold latency under dagster dev")
    started = time.perf_counter()
    topic = "bench_latency_survey_submissions"
    with scratch_dir("latency") as tmp, running_broker(tmp) as broker:
        lake_root = str(tmp / "lake")
        env = {
            "SCHOOL_EQUITY_ENV": "local",
            "SCHOOL_EQUITY_HOME": str(tmp / "home"),
            "SCHOOL_EQUITY_LAKE": lake_root,
            "SCHOOL_EQUITY_WAREHOUSE": str(tmp / "warehouse" / "warehouse.duckdb"),
            "SCHOOL_EQUITY_KAFKA": broker.bootstrap,
            "SCHOOL_EQUITY_TOPIC": topic,
            "SCHOOL_EQUITY_CONSUMER_GROUP": "bench.latency.bronze",
            **LATENCY_ENV,
            **(extra_env or {}),
        }
        Path(lake_root).mkdir(parents=True)
        ensure_topic(broker.bootstrap, topic, 3)
        log("  starting dagster dev")
        t_dev = time.perf_counter()
        with start_dagster_dev(module, home=tmp / "dagster_home", env=env) as dev:
            ready_s = time.perf_counter() - t_dev
            gql = dev.client
            assets = _stream_assets(gql)
            silver, gold = sorted(assets.get("silver", [])), sorted(assets.get("gold", []))
            if not silver or not gold:
                raise RuntimeError(f"the stream job has no Silver or no Gold assets: {assets}")
            stop = threading.Event()
            produced: dict = {}

            def producer() -> None:
                try:
                    produced["report"] = produce(
                        broker.bootstrap,
                        topic,
                        10_000_000,
                        seed=21,
                        rate_per_s=RATE_PER_S,
                        stop_event=stop,
                        create_topic=False,
                    )
                except Exception as e:  # reported below; the wait loop notices no progress
                    produced["error"] = e

            thread = threading.Thread(target=producer, daemon=True)
            thread.start()
            gql.start_sensor(SENSOR)
            log(
                f"  dagster dev ready in {ready_s:.0f}s; sensor on, producing {RATE_PER_S} events/s; "
                f"waiting for {batches + WARMUP_BATCHES} batches in Gold"
            )
            deadline = time.monotonic() + 60 + (batches + WARMUP_BATCHES) * 45
            done_parts: list[str] = []
            while time.monotonic() < deadline:
                mats = _first_materializations(gql, gold)
                done_parts = sorted(
                    p for p in gql.partition_keys(gold[0]) if _done(mats, gold, p) is not None
                )
                if len(done_parts) >= batches + WARMUP_BATCHES or "error" in produced:
                    break
                time.sleep(3)
            stop.set()
            gql.stop_sensor(SENSOR)
            thread.join(timeout=60)
            keys = [*assets.get("bronze", []), *silver, *gold]
            mats = _first_materializations(gql, keys)
            runs = {r["tags"].get("dagster/partition"): r for r in gql.runs(job_name=STREAM_JOB, limit=500)}
            # per batch: the run's status, then its timestamps, named as the rows below name them
            run_info: dict[str, tuple[str, dict[str, float | None]]] = {}
            for part, r in runs.items():
                if part:
                    info = gql.run(r["runId"])
                    step_start, step_end = _gold_step(_step_stats(gql, r["runId"]))
                    run_info[part] = (info["status"], {
                        "run_start": info.get("startTime"), "gold_step_start": step_start,
                        "gold_step_end": step_end, **_lifecycle(gql, r["runId"]),
                    })
            failed = {p: status for p, (status, _) in run_info.items() if status in ("FAILURE", "CANCELED")}
            diagnosis = ""
            if len(done_parts) < batches + WARMUP_BATCHES:
                ticks = gql.sensor_ticks(SENSOR, limit=5)
                statuses: dict[str, int] = {}
                for r in runs.values():
                    statuses[r["status"]] = statuses.get(r["status"], 0) + 1
                errors = [
                    gql.run_failure_messages(r["runId"])[:2]
                    for r in runs.values()
                    if r["status"] == "FAILURE"
                ][:2]
                diagnosis = (
                    f"Runs by status: {statuses}; last sensor ticks: "
                    + "; ".join(
                        f"{t['status']} {t.get('skipReason') or ''} {(t.get('error') or {}).get('message', '')[:300]}"
                        for t in ticks
                    )
                    + (f"; failures: {errors}" if errors else "")
                    + f"; dagster dev log tail: {dev.log_tail(15)[-1500:]}"
                )
        if "error" in produced:
            raise RuntimeError(f"producer failed: {produced['error']}")

        rows = []
        measured = done_parts[WARMUP_BATCHES:]
        for part in measured:
            ts = _batch_timestamps(lake_root, part)
            manifest = BatchManifest.from_json(
                Path(lake_root, "_manifests", "survey_batches", f"{part}.json").read_text()
            )
            rows.append(
                {
                    "batch": part,
                    "records": len(ts),
                    "ts": ts,
                    "cut": datetime.fromisoformat(manifest.created_at).timestamp(),
                    "run_start": None,
                    "bronze": _done(mats, assets.get("bronze", []), part),
                    "silver": _done(mats, silver, part),
                    "gold": _done(mats, gold, part),
                    "gold_step_start": None,
                    "gold_step_end": None,
                    **run_info.get(part, ("", {}))[1],
                }
            )

    m = "3. Latency"
    silver_lat = [r["silver"] - t for r in rows for t in r["ts"]]
    gold_lat = [r["gold"] - t for r in rows for t in r["ts"]]
    wait_lat = [r["cut"] - t for r in rows for t in r["ts"]]
    if len(rows) < batches:
        sec.notes.append(f"Only {len(rows)} batches reached Gold in time (wanted {batches}). {diagnosis}")
    w50 = median(wait_lat)
    sec.figures += [
        Figure(
            m,
            "event -> Silver p50",
            median(silver_lat),
            "s",
            f"send -> batch cut p50 {w50:.1f} s",
            median(silver_lat) / w50 if w50 else None,
        ),
        Figure(m, "event -> Silver p95", percentile(silver_lat, 95), "s"),
        Figure(
            m,
            "event -> Gold p50",
            median(gold_lat),
            "s",
            f"send -> batch cut p50 {w50:.1f} s",
            median(gold_lat) / w50 if w50 else None,
        ),
        Figure(
            m,
            "event -> Gold p95",
            percentile(gold_lat, 95),
            "s",
            None,
            None,
            "<= 60 s",
            percentile(gold_lat, 95) <= 60 and len(rows) >= batches,
        ),
    ]

    def stage(a: str, b: str) -> float:
        xs = [r[b] - r[a] for r in rows if r.get(a) is not None and r.get(b) is not None]
        return median(xs)

    for r in rows:
        r["oldest"] = min(r["ts"]) if r["ts"] else r["cut"]
    sec.notes.append(
        f"{len(rows)} batches measured ({sum(r['records'] for r in rows):,} events) after {WARMUP_BATCHES} "
        f"warm-up batches; producer at {RATE_PER_S} events/s; batching: "
        + ", ".join(f"{k}={v}" for k, v in LATENCY_ENV.items())
        + f"; dagster dev ready in {ready_s:.0f}s; failed runs: {failed or 'none'}."
    )
    sec.notes.append(
        "Per batch, medians (s): oldest record -> batch cut "
        f"{stage('oldest', 'cut'):.1f}; cut -> run start {stage('cut', 'run_start'):.1f}; run start -> Bronze "
        f"{stage('run_start', 'bronze'):.1f}; Bronze -> Silver {stage('bronze', 'silver'):.1f}; Silver -> Gold "
        f"{stage('silver', 'gold'):.1f}. Per-batch worst event -> Gold: p50 "
        f"{median([r['gold'] - r['oldest'] for r in rows]):.1f}, p95 "
        f"{percentile([r['gold'] - r['oldest'] for r in rows], 95):.1f}."
    )
    sec.notes.append(
        "Batch cut -> run start, split (medians, s): cut -> run enqueued (the rest of the sensor "
        f"tick, the run's creation) {stage('cut', 'RunEnqueuedEvent'):.1f}; enqueued -> starting (the "
        f"queue: its daemon's interval, the limit of runs in flight; then the launcher) "
        f"{stage('RunEnqueuedEvent', 'RunStartingEvent'):.1f}; starting -> started (the code server "
        f"spawns a run worker, which imports the definitions) "
        f"{stage('RunStartingEvent', 'RunStartEvent'):.1f}."
    )
    sec.notes.append(
        "Silver -> Gold, split (medians, s): last Silver materialization -> dbt step start "
        f"(the Silver checks, then the wait for the `duckdb_warehouse` pool while an earlier run's "
        f"dbt step holds it) {stage('silver', 'gold_step_start'):.1f}; dbt step start -> its last "
        f"Gold materialization {stage('gold_step_start', 'gold'):.1f}; the whole dbt step "
        f"{stage('gold_step_start', 'gold_step_end'):.1f}."
    )
    sec.notes.append(
        "Batches (records, event -> Gold of their oldest record, s): "
        + ", ".join(f"{r['batch']} {r['records']} {r['gold'] - r['oldest']:.0f}" for r in rows)
    )
    sec.raw = {"batches": [{k: v for k, v in r.items() if k != "ts"} for r in rows]}
    sec.elapsed_s = time.perf_counter() - started
    return sec
