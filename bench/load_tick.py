"""4. Code location load time and sensor tick time.

Load: a cold `import school_equity.definitions` in a fresh interpreter, repeated,
against a fresh interpreter importing exactly the same third-party packages and
nothing of the project (the libraries' floor). Target <= 5 s.

Tick: the survey batch sensor on a topic with 12 partitions and a lake holding
1,000 batch manifests (and 1,000 dynamic partitions in the instance), against the
Kafka reads a tick cannot avoid (`read_log_offsets` on a warm consumer). Target
<= 250 ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    PROJECT_DIR,
    Figure,
    Samples,
    Section,
    Timer,
    interleave,
    median,
    percentile,
    sample_call,
    scratch_dir,
)

TICK_PARTITIONS = 12
EXISTING_BATCHES = 1000
RECORDS_PER_PARTITION_PER_BATCH = 2
NEW_RECORDS_PER_TICK = TICK_PARTITIONS * 10
EXTRA_RECORDS = NEW_RECORDS_PER_TICK * 200  # for the ticks that cut a batch

_IMPORT_DEFS = """
import time, sys
t = time.perf_counter()
import school_equity.definitions as d
t_import = time.perf_counter() - t
t = time.perf_counter()
d.defs.get_repository_def()
t_repo = time.perf_counter() - t
std = set(sys.stdlib_module_names)
third = sorted({m.split('.')[0] for m in sys.modules} - std - {'school_equity', '__main__', '_distutils_hack'})
import json
print(json.dumps({"import_s": t_import, "repo_s": t_repo, "third_party": third}))
"""

_IMPORT_LIBS = """
import time, json, importlib, sys, gc
mods = json.loads(sys.argv[1])
if len(sys.argv) > 2 and sys.argv[2] == "paused":
    gc.disable()
t = time.perf_counter()
for m in mods:
    try:
        importlib.import_module(m)
    except Exception:
        pass
print(json.dumps({"import_s": time.perf_counter() - t, "collector_on": gc.isenabled()}))
"""


def _isolated_env(home: Path, empty_pycache: Path | None) -> dict[str, str]:
    """A child environment with no SCHOOL_EQUITY_* leaking in, run as this machine's shells
    run Python (PYTHONDONTWRITEBYTECODE=1: nothing is written). Without `empty_pycache`,
    the interpreter reads the bytecode `make setup` compiled into the venv and the package;
    with it, bytecode is looked up only in that empty directory, so every module is
    compiled from source (an install that shipped no bytecode)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHOOL_EQUITY_")}
    env.update({"SCHOOL_EQUITY_ENV": "local", "SCHOOL_EQUITY_HOME": str(home), "PYTHONWARNINGS": "ignore",
                "PYTHONDONTWRITEBYTECODE": "1"})
    if empty_pycache is None:
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        empty_pycache.mkdir(parents=True, exist_ok=True)
        env["PYTHONPYCACHEPREFIX"] = str(empty_pycache)
    return env


def installed_bytecode() -> dict[str, bool]:
    """Whether the venv's packages and the project's package carry compiled bytecode."""
    import dagster

    import school_equity

    def has(pkg_file: str) -> bool:
        d = Path(pkg_file).parent / "__pycache__"
        return d.is_dir() and any(d.glob("*.pyc"))

    return {"dagster": has(dagster.__file__), "school_equity": has(school_equity.__file__)}


def _py(code: str, env: dict, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=PROJECT_DIR, env=env, capture_output=True,
                         text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"import failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_profile(env: dict, top: int = 12) -> list[tuple[str, float]]:
    """`python -X importtime`: the slowest top-level imports, cumulative seconds."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import school_equity.definitions"],
                         cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300)
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _self_us, cumulative_us, name = (p for p in line[len("import time:"):].split("|"))
        try:
            us = int(cumulative_us.strip())
        except ValueError:
            continue
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1 or name.strip().startswith("school_equity"):
            rows.append((name.strip(), us / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


DEFS_CACHED = "import school_equity.definitions (as installed: bytecode from make setup)"
LIBS_CACHED = "import the same third-party packages only (as installed)"
LIBS_PAUSED = "import the same third-party packages only, cyclic collector paused (as installed)"
DEFS_COLD = "import school_equity.definitions (no bytecode: every module compiled from source)"


def run_load(reps: int, log=print) -> Section:
    sec = Section("Code location load time")
    started = time.perf_counter()
    with scratch_dir("load") as tmp:
        cached = _isolated_env(tmp / "home", None)
        uncached = _isolated_env(tmp / "home", tmp / "empty_pycache")
        bytecode = installed_bytecode()
        first = _py(_IMPORT_DEFS, cached)  # warms the OS file cache
        libs = json.dumps(first["third_party"])
        _py(_IMPORT_LIBS, cached, libs)
        repo_s: list[float] = []

        def defs_case(env):
            def go() -> float:
                r = _py(_IMPORT_DEFS, env)
                repo_s.append(r["repo_s"])
                return r["import_s"]
            return go

        times = interleave({DEFS_CACHED: defs_case(cached),
                            LIBS_CACHED: lambda: _py(_IMPORT_LIBS, cached, libs)["import_s"],
                            LIBS_PAUSED: lambda: _py(_IMPORT_LIBS, cached, libs, "paused")["import_s"],
                            DEFS_COLD: defs_case(uncached)}, reps, log=log)
        profile = import_profile(cached)
    d = median(times[DEFS_CACHED])
    floor = median(times[LIBS_CACHED])
    floor_paused = median(times[LIBS_PAUSED])
    cold = median(times[DEFS_COLD])
    m = "4. Load + tick"
    sec.figures += [
        Figure(m, "cold import of school_equity.definitions, as installed (bytecode compiled by make setup)",
               d, "s", f"the same libraries alone {floor:.2f} s", d / floor, "<= 5 s", d <= 5.0),
        Figure(m, "cold import vs the same libraries alone with the cyclic collector paused", d, "s",
               f"the same libraries alone, paused, {floor_paused:.2f} s", d / floor_paused,
               note="information: school_equity.definitions loads with the collector paused "
               "(school_equity.collector); the libraries alone import with it on, as any import does"),
        Figure(m, "cold import of school_equity.definitions, no bytecode at all (information)", cold, "s",
               f"as installed {d:.2f} s", cold / d),
        Figure(m, "resolving the repository after import (defs.get_repository_def())", median(repo_s), "s",
               note="information: the code server does this next"),
    ]
    sec.notes.append(
        f"{reps} interleaved fresh interpreters per case, medians, each run as this machine runs Python "
        f"(PYTHONDONTWRITEBYTECODE=1, so nothing an interpreter compiles is kept). `make setup` compiles "
        f"the venv's packages (`uv pip sync --compile-bytecode`, as pip does by default) and the "
        f"project's package (`compileall`); bytecode present in this venv: {bytecode}. Without it every "
        f"process (the code server, each run worker, each dbt process) compiles ~2,000 modules from "
        f"source. The import less the libraries alone with the collector paused as it is for the "
        f"definitions (as installed): {d - floor_paused:.2f} s of {d:.2f} s; the rest is its third-party packages: {', '.join(first['third_party'])}.")
    sec.notes.append("Slowest imports, as installed (`python -X importtime`, cumulative): " + "; ".join(
        f"{name} {s:.2f}s" for name, s in profile))
    sec.raw = {"seconds": times, "repo_s": repo_s, "importtime": profile, "bytecode": bytecode}
    sec.elapsed_s = time.perf_counter() - started
    return sec


# -- sensor tick ------------------------------------------------------------------------------

def _stage_stream(tmp: Path, bootstrap: str, topic: str, group: str):
    """A topic of 12 partitions whose first 1,000 batches are already cut (manifests in the
    lake, dynamic partitions in the instance, the group's offsets committed to their end)."""
    from bench.common import load_topic, read_stream, stream_file
    from school_equity.kafka.client import commit_if_ahead, make_consumer
    from school_equity.kafka.ledger import new_manifest, write_manifest
    from school_equity.kafka.offsets import OffsetRange
    from school_equity.lake import Lake

    per_part = EXISTING_BATCHES * RECORDS_PER_PARTITION_PER_BATCH
    n = per_part * TICK_PARTITIONS
    records = read_stream(stream_file(n + EXTRA_RECORDS, seed=11), 0, n)
    load_topic(bootstrap, topic, records, TICK_PARTITIONS, explicit_partitions=[i % TICK_PARTITIONS for i in range(n)])
    lake = Lake(str(tmp / "lake"))
    t0 = time.time() - 3600
    ids = []
    for seq in range(EXISTING_BATCHES):
        lo = seq * RECORDS_PER_PARTITION_PER_BATCH
        ranges = [OffsetRange(p, lo, lo + RECORDS_PER_PARTITION_PER_BATCH) for p in range(TICK_PARTITIONS)]
        m = new_manifest(seq, topic, ranges, [], t0 + seq)
        write_manifest(lake, m)
        ids.append(m.batch_id)
    c = make_consumer(bootstrap, group)
    try:
        commit_if_ahead(c, topic, {p: per_part for p in range(TICK_PARTITIONS)})
    finally:
        c.close(autocommit=False)
    return lake, ids


def run_tick(reps: int, log=print) -> Section:
    import dagster as dg

    from bench.common import running_broker

    started = time.perf_counter()
    topic = "bench_tick_survey_submissions"
    group = "bench.tick.bronze"
    saved = {k: v for k, v in os.environ.items() if k.startswith("SCHOOL_EQUITY_")}
    with scratch_dir("tick") as tmp, running_broker(tmp) as broker:
        try:
            os.environ.update({
                "SCHOOL_EQUITY_ENV": "local", "SCHOOL_EQUITY_HOME": str(tmp / "home"),
                "SCHOOL_EQUITY_LAKE": str(tmp / "lake"), "SCHOOL_EQUITY_WAREHOUSE": str(tmp / "warehouse.duckdb"),
                "SCHOOL_EQUITY_KAFKA": broker.bootstrap, "SCHOOL_EQUITY_TOPIC": topic,
                "SCHOOL_EQUITY_CONSUMER_GROUP": group,
                # a tick with new records cuts a batch at once: the expensive kind of tick
                "SCHOOL_EQUITY_BATCH_MIN_RECORDS": "1", "SCHOOL_EQUITY_BATCH_MIN_INTERVAL_S": "0",
            })
            log(f"  staging {TICK_PARTITIONS} partitions and {EXISTING_BATCHES} batch manifests")
            lake, ids = _stage_stream(tmp, broker.bootstrap, topic, group)
            sec = _tick_cases(dg, tmp, broker, topic, lake, ids, reps)
        finally:
            for k in [k for k in os.environ if k.startswith("SCHOOL_EQUITY_")]:
                del os.environ[k]
            os.environ.update(saved)
    sec.elapsed_s = time.perf_counter() - started
    return sec


def _tick_cases(dg, tmp, broker, topic, lake, ids, reps) -> Section:
    from bench.common import load_topic, read_stream, stream_file
    from school_equity.kafka.client import make_consumer, read_log_offsets
    from school_equity.kafka.ledger import rebuild_cursor
    from school_equity.kafka.partitions import SURVEY_BATCHES
    from school_equity.location import build_definitions
    from school_equity.pipeline import tick
    from school_equity.resources.kafka import KafkaResource
    from school_equity.settings import load_settings

    sec = Section("Sensor tick time")
    settings = load_settings()
    defs = build_definitions(settings)
    first = EXISTING_BATCHES * RECORDS_PER_PARTITION_PER_BATCH * TICK_PARTITIONS
    extra = read_stream(stream_file(first + EXTRA_RECORDS, seed=11), first)
    pos = {"i": 0}
    state = {"cursor": rebuild_cursor(lake, topic).to_json(), "cut": 0, "skips": []}

    def add_records() -> None:
        if pos["i"] + NEW_RECORDS_PER_TICK > extra.num_rows:
            pos["i"] = 0  # the same records again: the sensor counts offsets, not contents
        chunk = extra.slice(pos["i"], NEW_RECORDS_PER_TICK)
        pos["i"] += NEW_RECORDS_PER_TICK
        load_topic(broker.bootstrap, topic, chunk, TICK_PARTITIONS,
                   explicit_partitions=[i % TICK_PARTITIONS for i in range(chunk.num_rows)])

    (tmp / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp / "dagster_home")) as instance:
        instance.add_dynamic_partitions(SURVEY_BATCHES, ids)
        tick(defs, instance, state["cursor"])  # warm: the sensor's cached consumers connect once per process
        floor_consumer = make_consumer(broker.bootstrap)
        read_log_offsets(floor_consumer, topic)

        def idle_tick() -> float:
            with Timer() as t:
                data = tick(defs, instance, state["cursor"])
            if data.run_requests:
                raise RuntimeError("an idle tick cut a batch")
            state["cursor"] = data.cursor or state["cursor"]
            return t.s

        def cutting_tick() -> float:
            add_records()  # outside the timer
            with Timer() as t:
                data = tick(defs, instance, state["cursor"])
            if len(data.run_requests or []) != 1:
                raise RuntimeError(f"expected one batch cut, got {data.run_requests}: {data.skip_message}")
            state["cursor"] = data.cursor
            state["cut"] += 1
            return t.s

        def lost_cursor_tick() -> float:
            with Timer() as t:
                data = tick(defs, instance, None)
            if data.run_requests:
                raise RuntimeError("a tick without cursor cut a batch")
            return t.s

        def floor() -> float:
            with Timer() as t:
                read_log_offsets(floor_consumer, topic)
            return t.s

        cases = {"idle tick (no new records)": idle_tick, "tick that cuts a batch": cutting_tick,
                 "tick that rebuilds a lost cursor from 1,000 manifests": lost_cursor_tick,
                 "floor: read_log_offsets alone": floor}
        times = interleave(cases, reps, log=lambda s: None)
        profile = _profile_tick(defs, instance, state, add_records)
        floor_consumer.close()
        KafkaResource(bootstrap_servers=broker.bootstrap, topic=topic, consumer_group="x").forget_cached()
        n_parts = len(instance.get_dynamic_partitions(SURVEY_BATCHES))

    m = "4. Load + tick"
    fl = median(times["floor: read_log_offsets alone"])
    for name, target in (("idle tick (no new records)", True), ("tick that cuts a batch", True),
                         ("tick that rebuilds a lost cursor from 1,000 manifests", False)):
        med, p95 = median(times[name]), percentile(times[name], 95)
        sec.figures.append(Figure(
            m, f"sensor {name}", med * 1000, "ms (median)", f"Kafka offset reads alone {fl * 1000:.0f} ms",
            med / fl, "<= 250 ms" if target else None, (med <= 0.25) if target else None,
            note=f"p95 {p95 * 1000:.0f} ms" + ("" if target else "; information: once per lost cursor")))
    sec.notes.append(
        f"{TICK_PARTITIONS} topic partitions, {EXISTING_BATCHES} existing batch manifests and dynamic partitions "
        f"({n_parts} at the end, after the ticks that cut batches), group offsets committed; {reps} interleaved "
        "ticks per case; a tick here is `school_equity.pipeline.tick` (evaluate the sensor, then add the dynamic "
        "partitions it requests), the daemon's work minus launching the run.")
    sec.notes.append("Per-case samples (ms): " + "; ".join(
        f"{k}: {', '.join(f'{x * 1000:.0f}' for x in v)}" for k, v in times.items()))
    if profile:
        sec.notes.append(
            f"Profile of {PROFILED_TICKS} cutting ticks (pyinstrument samples every 0.2 ms, pooled; cumulative "
            "share of the profiled time, top entries): " + profile)
    sec.raw = {"seconds": times}
    return sec


PROFILED_TICKS = 5


def _profile_tick(defs, instance, state, add_records) -> str:
    """Where cutting ticks spend their time: pyinstrument samples every 0.2 ms of
    PROFILED_TICKS cutting ticks, pooled; each function's cumulative share. The profiler's
    hook on every call slows dagster's call-heavy code, so the shares count, not the ms."""
    from school_equity.pipeline import tick

    pooled = Samples([])
    for _ in range(PROFILED_TICKS):
        add_records()
        data, samples = sample_call(lambda: tick(defs, instance, state["cursor"]), interval=0.0002)
        state["cursor"] = data.cursor or state["cursor"]
        pooled.stacks += samples.stacks
    total = pooled.total
    rows = pooled.cumulative(lambda s: s.own or "kafka/" in s.path or "dagster/_core" in s.path)
    return f"{total / PROFILED_TICKS * 1000:.0f} ms a tick profiled; " + "; ".join(
        f"{name} {100 * t / total:.0f}%" for name, t in rows[:10])
