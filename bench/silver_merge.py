"""2. Bronze -> Silver merge throughput: one N-row Bronze batch merged into Silver tables
that already hold the previous N records (N = 1M by default), against

- the I/O floor: reading the same rows as plain Parquet (the Bronze batch and the
  existing tables' current files) and writing them back as plain Parquet;
- the same transformation in local Spark (bench/spark_silver.py; Parquet in and out,
  no Delta jars offline);
- for information, the decode floor (``json.loads`` of every payload, one thread) and the
  rows floor (``rows_floor``: the batch's Silver rows decoded by the parse's layout regex
  and written as new Parquet files, with no rule, no table read and no file rewritten),
  the least a merge of these rows into these tables costs with this decoder and writer.

The project's path is what the Silver asset (school_equity/silver/assets.py, `_process`)
does with a batch: read and validate the Bronze files (`read_batch`, `validate_or_raise`),
parse (`parse_batch`), validate the three frames against their contracts, merge
(`merge_batch`). The asset's metadata afterwards (table row counts) is not included.
Target >= 250k rows/s.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    Figure,
    Section,
    Timer,
    interleave,
    median,
    profile_call,
    read_stream,
    scratch_dir,
    stream_file,
)

PARTITIONS = 3
TOPIC = "survey_submissions"
SPARK_CASE = "local Spark: the same transformation (Parquet in/out)"
PROJECT_CASE = "project: read_batch + parse_batch + validate + merge_batch"
FLOOR_BATCH = "I/O floor: plain Parquet read + write of the batch's rows"
FLOOR_TABLES = "I/O floor: plain Parquet read + write of the batch's and the existing tables' rows"
DECODE_FLOOR = "decode floor: json.loads of every payload, one thread, nothing else"
ROWS_FLOOR = "rows floor: the batch's Silver rows decoded by the layout regex alone and written as new Parquet files"
NO_ANSWERS = "project without the answers table: read_batch + parse_batch + validate + merge of submissions and quarantine"
TARGET_ROWS_PER_S = 250_000


def bronze_batch(stream, batch_id: str, first_offsets: dict[int, int], t0_ms: int):
    """Stream records -> Bronze rows as the landing writes them: keys hashed to partitions,
    consecutive offsets per partition, send-time timestamps one millisecond apart."""
    import polars as pl
    import pyarrow as pa

    from school_equity.bronze.store import BRONZE_SCHEMA

    df = pl.from_arrow(stream).with_row_index("_i")
    df = df.with_columns(partition=(pl.col("key").hash(seed=0) % PARTITIONS).cast(pl.Int32))
    df = df.with_columns(
        offset=(pl.col("_i").cum_count().over("partition") - 1).cast(pl.Int64)
        + pl.col("partition").replace_strict(first_offsets, default=0, return_dtype=pl.Int64)
    )
    n = df.height
    out = (
        pa.table(
            {
                "topic": pa.array([TOPIC] * n, pa.string()),
                "partition": df["partition"].to_arrow(),
                "offset": df["offset"].to_arrow(),
                "timestamp": pa.array(range(t0_ms, t0_ms + n), pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
                "timestamp_type": pa.array([0] * n, pa.int8()),
                "key": stream.column("key"),
                "value": stream.column("value"),
                "headers": stream.column("headers").cast(BRONZE_SCHEMA.field("headers").type),
                "batch_id": pa.array([batch_id] * n, pa.string()),
                "ingested_at": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            }
        )
        .select(BRONZE_SCHEMA.names)
        .cast(BRONZE_SCHEMA)
    )
    ends = df.group_by("partition").agg(pl.col("offset").max() + 1)
    return out, {int(p): int(e) for p, e in ends.iter_rows()}


def write_bronze(lake_dir: Path, table, batch_id: str) -> list[str]:
    """One file per partition range, at the landing's paths."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from school_equity.bronze.store import range_file

    paths = []
    for p in sorted(set(table.column("partition").to_pylist())):
        part = table.filter(pc.equal(table.column("partition"), p))
        offs = part.column("offset")
        rel = range_file(batch_id, TOPIC, p, pc.min(offs).as_py(), pc.max(offs).as_py() + 1)
        (lake_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, lake_dir / rel, compression="zstd")
        paths.append(str(lake_dir / rel))
    return paths


def project_merge(lake_dir: Path, batch_id: str, answers: bool = True) -> dict[str, float]:
    """The Silver asset's work on one batch; returns the seconds of each stage and the total.

    ``answers=False``: the same work with the answers table left out (its contract and its
    merge); the parse is unchanged, so every answer is still split and checked."""
    from school_equity.bronze.store import read_batch
    from school_equity.contracts.checks import validate_or_raise, validate_parts_or_raise
    from school_equity.contracts.stream import (
        BronzeSurveyEvents,
        SilverSurveyAnswers,
        SilverSurveyQuarantine,
        SilverSurveySubmissions,
    )
    from school_equity.lake import Lake
    from school_equity.silver.merge import SilverTables, merge_batch, merge_quarantine, merge_submissions
    from school_equity.silver.parse import parse_batch

    lake = Lake(str(lake_dir))
    out = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    clock = [t0, cpu0]

    def stage(name: str) -> None:
        """Wall and CPU (all threads) seconds since the previous stage ended."""
        now, cpu = time.perf_counter(), time.process_time()
        out[name], out[f"cpu_{name}"] = now - clock[0], cpu - clock[1]
        clock[:] = [now, cpu]

    bronze = validate_or_raise(read_batch(lake, batch_id), BronzeSurveyEvents)
    stage("read")
    parsed = parse_batch(bronze)
    stage("parse")
    validate_or_raise(parsed.submissions, SilverSurveySubmissions)
    if answers:
        validate_parts_or_raise(parsed.answer_rows.parts(), SilverSurveyAnswers)
    validate_or_raise(parsed.quarantine, SilverSurveyQuarantine)
    stage("validate")
    tables = SilverTables.in_lake(lake)
    if answers:
        merge_batch(tables, parsed)
    else:  # merge_batch without its last step
        merge_quarantine(tables.quarantine, parsed.quarantine)
        merge_submissions(tables.submissions, parsed.submissions)
    stage("merge")
    out["total"] = time.perf_counter() - t0
    out["cpu"] = time.process_time() - cpu0
    out["_stats"] = parsed.stats._asdict()
    return out


def merge_steps(lake_dir: Path, batch_id: str) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    """merge_batch's three table merges timed one by one (what merge_batch calls, in its order),
    and for submissions and answers (existing data files, files the merges rewrote)."""
    from deltalake import DeltaTable

    from school_equity.bronze.store import read_batch
    from school_equity.lake import Lake
    from school_equity.silver.merge import SilverTables, merge_answers, merge_quarantine, merge_submissions
    from school_equity.silver.parse import parse_batch

    lake = Lake(str(lake_dir))
    tables = SilverTables.in_lake(lake)
    parsed = parse_batch(read_batch(lake, batch_id))
    out = {}
    files_before = {k: len(DeltaTable(u).file_uris()) for k, u in (("submissions", tables.submissions),
                                                                  ("answers", tables.answers))}
    t = time.perf_counter()
    merge_quarantine(tables.quarantine, parsed.quarantine)
    out["merge_quarantine"] = time.perf_counter() - t
    t = time.perf_counter()
    subs = merge_submissions(tables.submissions, parsed.submissions)
    out["merge_submissions"] = time.perf_counter() - t
    t = time.perf_counter()
    answers = merge_answers(
        tables.answers, parsed.answer_rows, submissions_uri=tables.submissions, batch_versions=parsed.submissions
    )
    out["merge_answers"] = time.perf_counter() - t
    files = {k: (files_before[k], o.files_rewritten) for k, o in (("submissions", subs), ("answers", answers))}
    return out, files


def table_files(lake_dir: Path) -> dict[str, list[str]]:
    """The current data files of each Silver stream table (what Spark reads as Parquet)."""
    from deltalake import DeltaTable

    out = {}
    for name in ("submissions", "answers", "quarantine"):
        uris = DeltaTable(str(lake_dir / "silver" / f"survey_{name}")).file_uris()
        out[name] = [u.removeprefix("file://") for u in uris]
    return out


def io_floor(bronze_files: list[str], existing: dict[str, list[str]], out_dir: Path) -> float:
    """Read rows as plain Parquet and write them back: the batch's Bronze rows, and when
    `existing` is given the existing tables' rows too (a merge that updates submissions
    spread over the whole table rewrites nearly every file of it)."""
    import pyarrow.parquet as pq

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    with Timer() as t:
        pq.write_table(pq.read_table(bronze_files), out_dir / "bronze.parquet", compression="zstd")
        for name, files in existing.items():
            pq.write_table(pq.read_table(files), out_dir / f"{name}.parquet", compression="zstd")
    return t.s


def json_decode_floor(bronze_files: list[str]) -> float:
    """Seconds to ``json.loads`` every payload of the batch in one thread, nothing else (no
    rule, no frame, no write; the payloads are read before the timer): what any decoder of
    the records in Python costs at least, one core each."""
    import json

    import pyarrow.parquet as pq

    values = pq.read_table(bronze_files, columns=["value"]).column("value").to_pylist()
    with Timer() as t:
        for v in values:
            try:
                json.loads(v)
            except (ValueError, TypeError):  # the malformed records: still a decode attempt
                pass
    return t.s


def rows_floor(bronze_files: list[str], out_dir: Path, cpu: list[float]) -> float:
    """Seconds to write the batch as this data model's rows and nothing more: read the Bronze
    files, capture every field with the parse's layout regex (no rule, no catalog, no
    newest-version choice, no quarantine), split each answers object into its rows with the
    submission columns the answers table repeats, and write both as new Parquet files of
    about the append's size with its writer settings. No table is read, no file rewritten,
    no contract checked. The least a merge of these rows into these tables costs with this
    decoder and writer; the CPU it took (all threads) is appended to ``cpu``."""
    import polars as pl

    from school_equity.silver.merge import FILE_BYTES, _BatchCommit
    from school_equity.silver.parse import _payload_text, answer_members, layout_captures

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    c0 = time.process_time()
    with Timer() as t:
        bronze = pl.read_parquet(bronze_files)
        versions = (
            layout_captures(
                bronze.lazy(), pl.lit(_payload_text(bronze.get_column("value"))),
                *(pl.col(c).alias(f"kafka_{c}") for c in ("topic", "partition", "offset", "timestamp")),
                "batch_id", "ingested_at",
            )
            .with_columns(pl.col("schema_version", "survey_year").cast(pl.Int32),
                          batch_seq=pl.col("batch_id").str.slice(1).cast(pl.Int64))
            .collect()
        )
        del bronze
        answers = (
            answer_members(versions.lazy(), "submission_id", "dbn", "survey_year", "respondent_type", "event_time",
                           "kafka_partition", "kafka_offset", "batch_id", "batch_seq")
            .with_columns(pl.col("answer_value").cast(pl.Int16))
            .collect()
        )
        for name, rows in (("submissions", versions.drop("answers")), ("answers", answers)):
            sample = rows.head(8192)
            step = max(1, int(FILE_BYTES / (len(_BatchCommit._parquet(sample)) / max(sample.height, 1))))
            for i, start in enumerate(range(0, rows.height, step)):
                (out_dir / f"{name}-{i:05d}.parquet").write_bytes(_BatchCommit._parquet(rows.slice(start, step)))
    cpu.append(time.process_time() - c0)
    return t.s


def run(events: int, reps: int, seed: int = 7, spark: bool = True, spark_reps: int = 1, log=print) -> Section:
    import polars as pl

    from school_equity.lake import Lake
    from school_equity.silver.merge import SilverTables, merge_batch, read_table
    from school_equity.silver.parse import parse_batch

    sec = Section("Bronze -> Silver merge throughput")
    started = time.perf_counter()
    path = stream_file(2 * events, seed, log=log)
    with scratch_dir("silver") as tmp:
        t0_ms = int(time.time() * 1000) - 2 * events
        first, ends = bronze_batch(read_stream(path, 0, events), "b000000000", {}, t0_ms)
        second, _ = bronze_batch(read_stream(path, events, 2 * events), "b000000001", ends, t0_ms + events)
        base = tmp / "base"
        with Timer() as setup:
            existing_parsed = parse_batch(pl.from_arrow(first))
            merge_batch(SilverTables.in_lake(Lake(str(base))), existing_parsed)
        del first, existing_parsed
        write_bronze(base, second, "b000000001")
        n_batch = second.num_rows
        del second
        before = {
            k: read_table(str(base / "silver" / f"survey_{k}")).height
            for k in ("submissions", "answers", "quarantine")
        }
        log(f"  existing tables built in {setup.s:.0f}s: {before}")
        existing = table_files(base)
        bronze_files = sorted(str(p) for p in (base / "bronze").rglob("*.parquet"))
        work = tmp / "work"
        stages: list[dict] = []
        spark_counts: dict = {}
        spark_errors: list[str] = []
        rows_floor_cpu: list[float] = []

        def fresh_copy(_name: str) -> None:
            if work.exists():
                shutil.rmtree(work)
            shutil.copytree(base, work)

        after: dict[str, int] = {}
        no_answers_after: dict[str, int] = {}
        no_answers_stages: list[dict] = []

        def table_rows() -> dict[str, int]:
            return {
                k: read_table(str(work / "silver" / f"survey_{k}")).height
                for k in ("submissions", "answers", "quarantine")
            }

        def project() -> float:
            r = project_merge(work, "b000000001")
            stages.append(r)
            after.update(table_rows())
            return r["total"]

        def no_answers() -> float:
            r = project_merge(work, "b000000001", answers=False)
            no_answers_stages.append(r)
            no_answers_after.update(table_rows())
            return r["total"]

        cases = {
            PROJECT_CASE: project,
            FLOOR_BATCH: lambda: io_floor(bronze_files, {}, tmp / "floor"),
            FLOOR_TABLES: lambda: io_floor(bronze_files, existing, tmp / "floor"),
            DECODE_FLOOR: lambda: json_decode_floor(bronze_files),
            ROWS_FLOOR: lambda: rows_floor(bronze_files, tmp / "floor", rows_floor_cpu),
            NO_ANSWERS: no_answers,
        }
        session = None
        if spark:
            from bench.spark_silver import parity_counts, quiet, spark_session, stop_jvm, transform

            with Timer() as boot:
                session = quiet(spark_session())
                session.range(1).count()
            spark_out = str(tmp / "spark_out")

            def spark_case() -> float:
                # a baseline that fails (the JVM out of memory, say) is reported as failed; the
                # project's figures and the other baselines of the run still stand
                try:
                    with Timer() as t:
                        frame = transform(session, bronze_files, existing, spark_out)
                    spark_counts.clear()
                    spark_counts.update(parity_counts(session, frame, spark_out))
                except Exception as e:  # noqa: BLE001 - any failure of the baseline
                    first_line = (str(e).strip().splitlines() or [""])[0][:300]
                    spark_errors.append(f"{type(e).__name__}: {first_line}")
                    log(f"  local Spark failed: {spark_errors[-1]}")
                    return math.nan
                return t.s

            cases[SPARK_CASE] = spark_case
        try:
            times = interleave(
                cases, reps, log=log, before_each=fresh_copy, max_reps={SPARK_CASE: spark_reps}
            )
        finally:
            if session is not None:
                try:
                    stop_jvm(session)
                except Exception as e:  # noqa: BLE001 - a JVM that died with the failed case
                    log(f"  stopping local Spark: {type(e).__name__}: {e}")
        if spark:  # the failed run, if any, has no time
            times[SPARK_CASE] = [x for x in times[SPARK_CASE] if not math.isnan(x)]
        profile = tables_profile = files_profile = None
        if n_batch / median(times[PROJECT_CASE]) < TARGET_ROWS_PER_S:
            log("  the target is missed: profiling one merge")
            fresh_copy("profile")
            tables_profile, files_profile = merge_steps(work, "b000000001")
            fresh_copy("profile")
            _, profile = profile_call(lambda: project_merge(work, "b000000001"))

    m = "2. Bronze -> Silver"
    proj = n_batch / median(times[PROJECT_CASE])
    floor = n_batch / median(times[FLOOR_BATCH])
    floor_t = n_batch / median(times[FLOOR_TABLES])
    sec.figures += [
        Figure(
            m,
            f"merge of a {n_batch:,}-row batch into {before['submissions']:,}-row tables",
            proj,
            "rows/s",
            f"I/O floor, batch rows {floor:,.0f} rows/s",
            proj / floor,
            ">= 250k rows/s",
            proj >= TARGET_ROWS_PER_S,
        ),
        Figure(
            m,
            "merge vs the I/O floor with the existing tables read and rewritten",
            proj,
            "rows/s",
            f"I/O floor, batch + table rows {floor_t:,.0f} batch rows/s",
            proj / floor_t,
            note=f"information: {sum(before.values()):,} table rows read and written besides the batch, what a "
            "merge that rewrites every file holding a key of the batch costs at least",
        ),
    ]
    decode = n_batch / median(times[DECODE_FLOOR])
    cores = os.cpu_count() or 1
    # the CPU a row may take, every stage together, for the target on this machine's cores
    budget_us = cores * 1e6 / TARGET_ROWS_PER_S
    sec.figures.append(
        Figure(
            m,
            "merge vs the decode floor: json.loads of every payload alone, one thread",
            proj,
            "rows/s",
            f"json.loads alone {decode:,.0f} rows/s",
            proj / decode,
            note=f"information: no rule, no frame, no write; {1e6 / decode:.1f} us of CPU a record, so the "
            f"{cores} cores here decode at most {decode * cores:,.0f} records/s in Python, while "
            f"{TARGET_ROWS_PER_S:,} rows/s leaves {budget_us:.1f} us of CPU a row for "
            "the whole path",
        )
    )
    rows = n_batch / median(times[ROWS_FLOOR])
    sec.figures.append(
        Figure(
            m,
            "merge vs the rows floor: the batch's Silver rows decoded and written, nothing else",
            proj,
            "rows/s",
            f"rows floor {rows:,.0f} rows/s",
            proj / rows,
            note=f"information: the layout regex's captures, the answers split into rows, new Parquet files "
            f"({median(rows_floor_cpu) * 1e6 / n_batch:.1f} us of CPU a row, all threads); no rule, no "
            "newest-version choice, no contract, no table read, no file rewritten. The least a merge of "
            "these rows into these tables costs with this decoder and writer",
        )
    )
    bare = n_batch / median(times[NO_ANSWERS])
    bare_cpu_us = median([r["cpu"] for r in no_answers_stages]) * 1e6 / n_batch
    sec.figures.append(
        Figure(
            m,
            "merge vs the project's own path with the answers table left out",
            proj,
            "rows/s",
            f"without the answers table {bare:,.0f} rows/s",
            proj / bare,
            note=f"information: the same read, parse and rules, the submissions and quarantine contracts and "
            f"merges, no answers contract or merge ({bare_cpu_us:.1f} us of CPU a row, all threads, against "
            f"the {budget_us:.1f} us the target leaves). The parse still splits every answer and checks it "
            "against the catalog, as the rules require whatever the table layout, so keeping the answers "
            "in the submission row instead of a table of their own would cost at least this, plus writing "
            "and checking them",
        )
    )
    if spark and spark_errors:
        sec.notes.append(f"Local Spark, the same transformation, failed, so there is no Spark figure in this run: "
                         f"{'; '.join(spark_errors)}")
    if spark and times[SPARK_CASE]:
        sp = n_batch / median(times[SPARK_CASE])
        sec.figures.append(
            Figure(
                m,
                "merge vs local Spark, same transformation",
                proj,
                "rows/s",
                f"Spark {sp:,.0f} rows/s",
                proj / sp,
                note=f"information; {len(times[SPARK_CASE])} Spark run(s), session start {boot.s:.0f}s not included",
            )
        )
    stage_names = ("read", "parse", "validate", "merge")
    sec.notes.append(
        f"Batch: {n_batch:,} Bronze rows (events {events:,}..{2 * events:,} of the seeded stream, "
        f"so it holds corrections and duplicates of submissions already in the tables). Tables before: "
        f"{before}; after the project's merge: {after}. Parse stats: {stages[-1]['_stats']}. "
        f"{reps} interleaved repetitions on a fresh copy of the tables, medians."
    )
    sec.notes.append(
        "Project stages, median seconds: "
        + ", ".join(f"{s} {median([r[s] for r in stages]):.2f}" for s in stage_names)
        + f"; total {median([r['total'] for r in stages]):.2f} wall, {median([r['cpu'] for r in stages]):.2f} CPU "
        "(all threads; above the wall time when polars and delta-rs use both cores, below it when the "
        "machine is busy with other work)."
    )
    cpu = {st: median([r[f"cpu_{st}"] for r in stages]) for st in stage_names}
    sec.notes.append(
        "CPU per stage, median seconds (all threads) and microseconds a batch row: "
        + ", ".join(f"{st} {c:.2f} ({c * 1e6 / n_batch:.1f} us)" for st, c in cpu.items())
        + f"; total {sum(cpu.values()) * 1e6 / n_batch:.1f} us a row. {TARGET_ROWS_PER_S:,} rows/s on the "
        f"{cores} cores here is {budget_us:.1f} us of CPU a row at most, for every stage "
        "together."
    )
    bare_cpu = {st: median([r[f"cpu_{st}"] for r in no_answers_stages]) for st in stage_names}
    sec.notes.append(
        "Without the answers table, CPU per stage, median seconds and microseconds a batch row: "
        + ", ".join(f"{st} {c:.2f} ({c * 1e6 / n_batch:.1f} us)" for st, c in bare_cpu.items())
        + f"; total {sum(bare_cpu.values()) * 1e6 / n_batch:.1f} us a row. Tables after it: {no_answers_after}."
    )
    sec.notes.append(
        "All samples (s): " + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in times.items())
    )
    if spark and spark_counts:
        parity = {k: (spark_counts.get(k), after.get(k)) for k in ("submissions", "answers", "quarantine")}
        sec.notes.append(
            f"Spark parity (Spark, project) row counts after the merge: {parity}; Spark batch: "
            f"{spark_counts.get('batch_valid'):,} valid, {spark_counts.get('batch_quarantined'):,} quarantined "
            f"({spark_counts.get('reasons')}). Spark reads the Delta tables' current files and rewrites each "
            "table whole as Parquet (no Delta jars offline), on local[2] with 4 shuffle partitions."
        )
    if tables_profile:
        sec.notes.append(
            "merge_batch step by step (s): " + ", ".join(f"{k} {v:.2f}" for k, v in tables_profile.items())
        )
    if files_profile:
        sec.notes.append(
            "Existing data files the merge rewrote (new rows are appended in new files): " + "; ".join(
                f"{k} {rewritten} of {n}" for k, (n, rewritten) in files_profile.items())
        )
    if profile:
        sec.notes.append("Profile of one project merge (the target was missed): " + profile)
    sec.raw = {
        "seconds": times,
        "stages": stages,
        "before": before,
        "after": after,
        "spark_counts": spark_counts,
        "rows_floor_cpu": rows_floor_cpu,
        "no_answers_stages": no_answers_stages,
        "no_answers_after": no_answers_after,
    }
    sec.elapsed_s = time.perf_counter() - started
    return sec
