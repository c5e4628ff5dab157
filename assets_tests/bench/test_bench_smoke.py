"""The benchmark code runs on tiny sizes and measures what it says it measures, so it does
not rot between full runs. No timed assertions: only counts, parity and bookkeeping."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import bench.common as common
from bench import kafka_bronze, load_tick, memory, run, silver_merge
from bench.common import Figure, Section, interleave, percentile


@pytest.fixture(autouse=True)
def tiny_stream_cache(tmp_path, monkeypatch):
    """Generated streams go to the test's directory, not to bench/out/."""
    monkeypatch.setattr(common, "STREAM_CACHE", tmp_path / "streams")


def test_percentile_is_nearest_rank_and_interleave_rotates_order():
    assert percentile([5.0], 95) == 5.0
    assert percentile(list(map(float, range(1, 21))), 95) == 19.0
    assert percentile(list(map(float, range(1, 101))), 50) == 50.0
    seen: list[str] = []
    out = interleave({"a": lambda: seen.append("a") or 1.0, "b": lambda: seen.append("b") or 2.0}, 2,
                     log=lambda _: None)
    assert seen == ["a", "b", "b", "a"]
    assert out == {"a": [1.0, 1.0], "b": [2.0, 2.0]}


def test_stream_file_is_cached_and_realistic():
    path = common.stream_file(300, seed=3, log=lambda _: None)
    again = common.stream_file(300, seed=3, log=lambda _: None)
    assert path == again
    table = common.read_stream(path)
    assert table.num_rows == 300
    sizes = [len(v) for v in table.column("value").to_pylist()]
    # the brief's realistic size: survey events of about 300-500 bytes of JSON
    assert 280 <= sorted(sizes)[len(sizes) // 2] <= 500


def test_kafka_bronze_every_reader_reads_exactly_the_topic():
    sec = kafka_bronze.run(1500, reps=1, log=lambda _: None)
    assert sec.raw["events"] == 1500
    assert set(sec.raw["seconds"]) == {
        "project landing (land_batch)", "(a) kafka-python raw range read",
        "(a') kafka-python raw range read, collector paused", "(b) confluent-kafka consume",
        "(c) naive json.loads + rows + one Parquet write", "(d) Fetch requests alone, batches not decoded"}
    targets = {f.target: f for f in sec.figures if f.target}
    assert set(targets) == {">= 0.8x", ">= 5x"}
    # one landing is profiled: by py-spy from outside where it can attach, else
    # in-process, saying why
    (profile,) = [n for n in sec.notes if n.startswith("Profile of one landing")]
    assert "school_equity/bronze/landing.py:land_batch" in profile
    assert "(py-spy, 200 samples a second" in profile or "so it ran in-process" in profile


def test_silver_merge_without_spark_counts_the_batch():
    sec = silver_merge.run(1500, reps=1, spark=False, log=lambda _: None)
    stats = sec.raw["stages"][0]["_stats"]
    assert stats["records"] == 1500
    assert stats["valid_records"] + stats["quarantined"] == 1500
    # the batch adds submissions to the existing tables
    assert sec.raw["after"]["submissions"] > sec.raw["before"]["submissions"]
    assert sec.figures[0].target == ">= 250k rows/s"
    # a small batch misses the target, so the merge is profiled, the files it rewrote included
    assert any(n.startswith("Existing data files the merge rewrote") for n in sec.notes)
    (profile,) = [n for n in sec.notes if n.startswith("Profile of one project merge")]
    assert "pyinstrument" in profile and "school_equity/silver/merge.py:merge_batch" in profile
    # the lines of the project where the merge spends its time, each with the call beneath it
    assert re.search(r"school_equity/silver/merge\.py:\d+ \(\w+\) \d+\.\d\ds \(\d+%; ", profile)
    # the decode floor ran as a case of its own, and every stage's CPU time is reported
    assert len(sec.raw["seconds"][silver_merge.DECODE_FLOOR]) == 1
    assert len(sec.raw["seconds"][silver_merge.ROWS_FLOOR]) == 1 and len(sec.raw["rows_floor_cpu"]) == 1
    assert any(f.name.startswith("merge vs the rows floor") for f in sec.figures)
    assert any(f.name.startswith("merge vs the decode floor") for f in sec.figures)
    # the path without the answers table merged the same submissions and left the answers alone
    assert len(sec.raw["no_answers_stages"]) == 1
    assert sec.raw["no_answers_after"]["submissions"] == sec.raw["after"]["submissions"]
    assert sec.raw["no_answers_after"]["quarantine"] == sec.raw["after"]["quarantine"]
    assert sec.raw["no_answers_after"]["answers"] == sec.raw["before"]["answers"] < sec.raw["after"]["answers"]
    assert any(f.name.startswith("merge vs the project's own path with the answers table left out")
               for f in sec.figures)
    stage = sec.raw["stages"][0]
    assert all(stage[f"cpu_{s}"] > 0 for s in ("read", "parse", "validate", "merge"))
    assert any(n.startswith("CPU per stage") for n in sec.notes)


def test_decode_floor_decodes_every_payload(tmp_path, monkeypatch):
    """The floor json.loads each payload of the files (malformed ones included) and times
    only that: a payload count the timer's loop never reached would fail here."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    values = [json.dumps({"i": i}).encode() for i in range(50)] + [b"{not json", None]
    pq.write_table(pa.table({"value": pa.array(values, pa.binary())}), tmp_path / "b.parquet")
    seen = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda v: seen.append(v) or real(v))
    assert silver_merge.json_decode_floor([str(tmp_path / "b.parquet")]) >= 0
    assert seen == values


def test_rows_floor_writes_every_layout_record_and_exactly_its_answers(tmp_path):
    """The rows floor writes one submission row for each payload in the documented layout
    and one answer row for each member of its answers object, with the values the payload
    holds (json.loads), and reports the CPU it took: a floor that dropped or duplicated rows
    would be a cheaper, false floor."""
    import json

    import polars as pl

    from bench.common import read_stream, stream_file
    from school_equity.silver.parse import _LAYOUT

    stream = read_stream(stream_file(600, 5, log=lambda _: None), 0, 600)
    table, _ = silver_merge.bronze_batch(stream, "b000000001", {}, 1_700_000_000_000)
    files = silver_merge.write_bronze(tmp_path / "lake", table, "b000000001")
    cpu: list[float] = []
    assert silver_merge.rows_floor(files, tmp_path / "floor", cpu) > 0
    assert len(cpu) == 1 and cpu[0] > 0
    subs = pl.read_parquet(tmp_path / "floor" / "submissions-*.parquet")
    answers = pl.read_parquet(tmp_path / "floor" / "answers-*.parquet")
    values = pl.read_parquet(files).get_column("value")
    laid_out = [json.loads(v) for v, ok in zip(values.to_list(), values.cast(pl.String, strict=False)
                                                .str.contains(_LAYOUT).fill_null(False).to_list(), strict=True)
                if ok]
    assert 0 < len(laid_out) < 600  # the stream's malformed records are not in the layout
    assert sorted(subs.get_column("submission_id").to_list()) == sorted(p["submission_id"] for p in laid_out)
    expected = sorted((p["submission_id"], q, v) for p in laid_out for q, v in p["answers"].items())
    assert sorted(answers.select("submission_id", "question_id", "answer_value").iter_rows()) == expected


@pytest.mark.spark
def test_spark_baseline_reaches_the_same_tables_as_the_project():
    sec = silver_merge.run(400, reps=1, spark=True, log=lambda _: None)
    spark, project = sec.raw["spark_counts"], sec.raw["after"]
    for table in ("submissions", "answers", "quarantine"):
        assert spark[table] == project[table], table
    assert spark["batch_quarantined"] == sec.raw["stages"][0]["_stats"]["quarantined"]
    # the Spark JVM is ended with the case, not left idle for the benchmarks after it
    import psutil

    assert [c.name() for c in psutil.Process().children(recursive=True) if "java" in c.name()] == []


@pytest.mark.spark
def test_a_failing_spark_baseline_leaves_the_merge_figures_and_says_why(monkeypatch):
    """Local Spark is a baseline: when it fails (a JVM out of memory in a 1M run), the
    section keeps the project's figures and its other baselines, names the error, and
    gives no Spark figure; the JVM is still ended."""
    from bench import spark_silver

    def out_of_memory(*_args, **_kwargs):
        raise RuntimeError("java.lang.OutOfMemoryError: Java heap space\nat somewhere")

    monkeypatch.setattr(spark_silver, "transform", out_of_memory)
    sec = silver_merge.run(400, reps=1, spark=True, log=lambda _: None)
    names = [f.name for f in sec.figures]
    assert "merge vs local Spark, same transformation" not in names
    assert any(n.startswith("merge of a ") for n in names) and len(names) == 5
    # the batch and tables I/O floors, the decode and rows floors, the path without the answers table
    assert sec.raw["seconds"][silver_merge.SPARK_CASE] == []
    assert any("Local Spark, the same transformation, failed" in n
               and "RuntimeError: java.lang.OutOfMemoryError: Java heap space" in n
               and "somewhere" not in n for n in sec.notes)
    import psutil

    assert [c.name() for c in psutil.Process().children(recursive=True) if "java" in c.name()] == []


def test_sensor_tick_bench_on_a_small_ledger(monkeypatch):
    monkeypatch.setattr(load_tick, "EXISTING_BATCHES", 15)
    monkeypatch.setattr(load_tick, "EXTRA_RECORDS", load_tick.NEW_RECORDS_PER_TICK * 4)
    sec = load_tick.run_tick(2, log=lambda _: None)
    cases = sec.raw["seconds"]
    assert all(len(v) == 2 for v in cases.values())
    assert any(f.target == "<= 250 ms" for f in sec.figures)
    (profile,) = [n for n in sec.notes if n.startswith("Profile of")]
    # the tick holds (nearly) all the profiled time; the sensor's evaluation is a part of it
    share = {n: int(pct) for n, pct in re.findall(r"([\w/.]+:\w+) (\d+)%", profile)}
    assert share["school_equity/pipeline.py:tick"] >= 90
    assert 0 < share["school_equity/kafka/sensor.py:evaluate"] < share["school_equity/pipeline.py:tick"]


def test_import_helpers_run_in_a_fresh_interpreter(tmp_path):
    empty = tmp_path / "pycache"
    env = load_tick._isolated_env(tmp_path / "home", empty)
    out = load_tick._py(load_tick._IMPORT_LIBS, env, '["json", "no_such_module_here"]')
    assert out["import_s"] >= 0 and out["collector_on"] is True
    paused = load_tick._py(load_tick._IMPORT_LIBS, env, '["json"]', "paused")
    assert paused["collector_on"] is False
    # nothing is written in either case; the no-bytecode case looks only in an empty directory
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONPYCACHEPREFIX"] == str(empty)
    assert not any(empty.rglob("*.pyc"))
    installed = load_tick._isolated_env(tmp_path / "home", None)
    assert installed["PYTHONDONTWRITEBYTECODE"] == "1" and "PYTHONPYCACHEPREFIX" not in installed


def test_make_setup_ships_bytecode():
    """Shells here run Python with PYTHONDONTWRITEBYTECODE=1: unless the install compiled
    bytecode, every run worker and dbt process compiles its imports from source (2-3 s)."""
    assert load_tick.installed_bytecode() == {"dagster": True, "school_equity": True}


def test_tree_sampler_sees_a_child_process_memory():
    code = "import time; x = bytearray(150 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(1.5)"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"])
    sampler = memory.TreeSampler(parent.pid, interval=0.05).start()
    parent.wait(timeout=60)
    sampler.stop()
    assert sampler.peak_total >= 150 * 2**20
    # no broker in this tree: the pipeline's peak is the whole tree's
    assert sampler.peak_pipeline == sampler.peak_total


def test_tree_sampler_leaves_the_broker_out_of_the_pipeline_peak(monkeypatch):
    code = "import time; x = bytearray(150 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(1.5)"
    child = subprocess.Popen([sys.executable, "-c", code])
    # the child plays the broker: every process the sampler classifies is "the broker"
    monkeypatch.setattr(memory, "_kind", lambda cmdline: memory.BROKER)
    sampler = memory.TreeSampler(child.pid, interval=0.05).start()
    child.wait(timeout=60)
    sampler.stop()
    assert sampler.peak_total >= 150 * 2**20
    assert sampler.peak_pipeline == 0


def test_render_lists_every_figure_with_its_verdict():
    meta = {"date": "2026-01-01 00:00 UTC", "revision": "abc", "elapsed_s": 60, "command": "python -m bench.run",
            "machine": {"cores": 2, "memory_gib": 8, "cpu_model": "cpu", "os": "Linux", "python": "3.11"},
            "load_before": (1.0, 1.0, 1.0), "load_after": (2.0, 2.0, 2.0), "versions": {"polars": "2.1.0"}}
    secs = [Section("one", figures=[Figure("1. x", "fast thing", 1234.5, "events/s", "base", 2.0, ">= 5x", False)],
                    notes=["a note"]),
            Section("two", notes=["FAILED: boom"])]
    text = run.render(meta, secs)
    assert "| 1. x | fast thing | 1,234 events/s | base | 2.00x | >= 5x | **missed** |" in text
    assert "did not run" in text and "FAILED: boom" in text and "polars 2.1.0" in text
    assert "Project settings in its environment: none (the defaults)" in text
    meta["settings"] = run.project_settings({
        "SCHOOL_EQUITY_DBT_PREWARM": "0", "SCHOOL_EQUITY_LAKE": "/somewhere/lake", "HOME": "x"})
    assert meta["settings"] == {"SCHOOL_EQUITY_DBT_PREWARM": "0"}
    assert "Project settings in its environment: `SCHOOL_EQUITY_DBT_PREWARM=0`" in run.render(meta, secs)


def test_partial_runs_do_not_replace_the_committed_results():
    args = run.parse_args(["--events", "1000", "--only", "tick"])
    assert args.only == ["tick"] and args.events == 1000
    assert run.PARTIAL_RESULTS != run.FULL_RESULTS


def test_profiles_name_files_without_this_machines_paths():
    import json.decoder
    import sysconfig

    import dagster

    import school_equity.lake

    names = [common.short_path(m.__file__) for m in (json.decoder, dagster, school_equity.lake)]
    assert names == ["stdlib/json/decoder.py", "dagster/__init__.py", "school_equity/lake.py"]
    assert not any(sysconfig.get_paths()["stdlib"] in n or str(common.PROJECT_DIR) in n for n in names)


def _spin(seconds: float) -> int:
    n = 0
    end = common.time.perf_counter() + seconds
    while common.time.perf_counter() < end:
        n += 1
    return n


def test_sampling_profile_splits_the_time_between_callers_and_running_code():
    def work() -> str:
        _spin(0.15)
        common.time.sleep(0.15)
        return "done"

    result, samples = common.sample_call(work)
    assert result == "done"
    here = common.short_path(__file__)
    cumulative = dict(samples.cumulative(lambda s: s.path == __file__))
    assert cumulative[f"{here}:work"] >= 0.25
    # the spin and the sleep each hold about half the time, counted where they ran
    running = dict(samples.leaves())
    assert running[f"{here}:_spin"] / samples.total > 0.25
    assert running["sleep"] / samples.total > 0.25
    # test code is not the project's own: only the school_equity package is
    assert samples.own_lines() == []
    assert not any(str(common.PROJECT_DIR) in n for n in cumulative)


def test_out_of_process_sampling_counts_running_and_waiting_time_of_the_main_thread():
    # 1 s of work: on a loaded machine py-spy falls behind its rate for a moment (0.29 s
    # sampled of a 0.6 s call in one CI run), which the bounds below must not mistake for
    # waits left uncounted; the shares are what show that both halves are counted
    def work() -> str:
        _spin(0.5)
        common.time.sleep(0.5)
        return "done"

    try:
        result, samples = common.spy_call(work)
    except common.SpyUnavailable as e:
        pytest.skip(f"py-spy cannot sample this process here: {e}")
    assert result == "done"
    assert 0.4 < samples.total < 2.0
    # py-spy names functions by their qualified name (test_....<locals>.work)
    running = {name.rpartition(":")[2].rpartition(".")[2]: t for name, t in samples.leaves()}
    # the spin runs in _spin; the sleep (native, and idle) counts in the frame that called it
    assert running["_spin"] / samples.total > 0.25
    assert running["work"] / samples.total > 0.25
    assert samples.own_lines() == []  # test code is not the project's


def test_a_profile_falls_back_to_in_process_sampling_and_says_why(monkeypatch):
    def unavailable(fn, **_):
        raise common.SpyUnavailable("py-spy could not attach: ptrace not permitted")

    monkeypatch.setattr(common, "spy_call", unavailable)
    runs = []

    def work() -> int:
        runs.append(1)
        return _spin(0.1)

    result, text = common.profile_call(work, pure_python=True)
    assert result > 0 and runs == [1]  # profiled once, in-process
    assert "pyinstrument" in text and "ptrace not permitted, so it ran in-process" in text
