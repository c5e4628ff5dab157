"""5. Peak resident memory of the headless run: `school-equity demo --events N`, its
children included (the embedded broker, dbt processes), sampled from /proc every
0.2 s, as the peak of the summed RSS of the process tree.

Baseline: the resident memory of an idle interpreter that has loaded the code
location (`import school_equity.definitions`), the fixed cost every run pays.
Target: <= 1.5 GiB for 1M events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench.common import PROJECT_DIR, Figure, Section, scratch_dir

TARGET_BYTES = int(1.5 * 2**30)
BROKER = "broker (Tansu)"
# Settings that trade throughput for memory: smaller batches (the Silver step's working set
# grows with the batch) and a smaller DuckDB buffer pool for the dbt builds.
BOUNDED_ENV = {"SCHOOL_EQUITY_BATCH_MAX_RECORDS": "100000", "SCHOOL_EQUITY_DUCKDB_MEMORY_LIMIT": "128MB"}


def _kind(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if "tansu" in text or (cmdline and cmdline[0].endswith("/calfkit")) or " broker --listener-url" in text:
        return BROKER
    if "dbt" in text and "school-equity" not in text:
        return "dbt"
    if "school-equity" in text or "school_equity" in text:
        return "demo (main Python process)"
    return "other child"


class TreeSampler:
    """Samples a process tree's RSS until stopped: peak of the sum, peak per kind of process."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_total = 0
        self.peak_at = 0.0
        self.peak_breakdown: dict[str, int] = {}
        self.peak_by_kind: dict[str, int] = defaultdict(int)
        # the same without the broker: the pipeline's own processes (demo, dbt, children)
        self.peak_pipeline = 0
        self.peak_pipeline_breakdown: dict[str, int] = {}
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        import psutil

        kinds: dict[int, str] = {}
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            by_kind: dict[str, int] = defaultdict(int)
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    if p.pid not in kinds:
                        kinds[p.pid] = _kind(p.cmdline())
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
                total += rss
                by_kind[kinds[p.pid]] += rss
            for k, v in by_kind.items():
                self.peak_by_kind[k] = max(self.peak_by_kind[k], v)
            if total > self.peak_total:
                self.peak_total = total
                self.peak_at = time.monotonic() - self._t0
                self.peak_breakdown = dict(by_kind)
            pipeline = total - by_kind.get(BROKER, 0)
            if pipeline > self.peak_pipeline:
                self.peak_pipeline = pipeline
                self.peak_pipeline_breakdown = dict(by_kind)
            self._stop.wait(self.interval)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHOOL_EQUITY_")}
    env.update({"SCHOOL_EQUITY_HOME": str(home), "PYTHONWARNINGS": "ignore"})
    return env


def idle_location_rss(home: Path) -> int:
    code = ("import school_equity.definitions, psutil, os; "
            "print(psutil.Process(os.getpid()).memory_info().rss)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=_env(home), capture_output=True,
                         text=True, timeout=300)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0


def demo_command(events: int) -> list[str]:
    exe = Path(sys.executable).parent / "school-equity"
    return [str(exe), "demo", "--events", str(events)]


def _measure(tmp: Path, events: int, extra_env: dict[str, str], log) -> dict:
    cmd = demo_command(events)
    log(f"  running {' '.join(cmd[1:])} {' '.join(f'{k}={v}' for k, v in extra_env.items())}".rstrip())
    out_path = tmp / "demo.log"
    with open(out_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=PROJECT_DIR, env={**_env(tmp / "home"), **extra_env}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        sampler = TreeSampler(proc.pid).start()
        try:
            rc = proc.wait(timeout=3600)
        finally:
            sampler.stop()
            if proc.poll() is None:
                proc.kill()
        wall = time.perf_counter() - t0
    return {"sampler": sampler, "rc": rc, "wall": wall, "text": out_path.read_text(errors="replace")}


def _mib(breakdown: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in sorted(breakdown.items()))


def run(events: int, log=print) -> Section:
    sec = Section("Peak memory of the headless run")
    started = time.perf_counter()
    with scratch_dir("memory") as tmp:
        idle = idle_location_rss(tmp / "idle")
        runs = {}
        for case, extra in (("default", {}), ("bounded", BOUNDED_ENV)):
            (tmp / case).mkdir()
            runs[case] = _measure(tmp / case, events, extra, log)
    m = "5. Peak memory"
    base = f"idle code location {idle / 2**30:.2f} GiB"
    sec.raw = {"idle": idle}
    for case, r in runs.items():
        sampler, rc, wall, text = r["sampler"], r["rc"], r["wall"], r["text"]
        settings = "default settings" if case == "default" else ", ".join(f"{k}={v}" for k, v in BOUNDED_ENV.items())
        failed = "" if rc == 0 else f"the demo FAILED (exit {rc}); see the notes"
        sec.figures.append(Figure(
            m, f"peak RSS of `school-equity demo --events {events:,}` (process tree), {settings}",
            sampler.peak_total / 2**30, "GiB", base, sampler.peak_total / idle if idle else None,
            "<= 1.5 GiB" if case == "default" else None,
            sampler.peak_total <= TARGET_BYTES and rc == 0 if case == "default" else None, note=failed))
        sec.figures.append(Figure(
            m, f"the same, the pipeline's processes only (the broker left out), {settings}",
            sampler.peak_pipeline / 2**30, "GiB", base, sampler.peak_pipeline / idle if idle else None,
            note="information"))
        summary = _demo_timings(text)
        sec.notes.append(
            f"{settings}: demo wall time {wall:.0f}s (exit {rc}){'; its own timings: ' + summary if summary else ''}. "
            f"Tree peak {sampler.peak_at:.0f}s in; at that moment: {_mib(sampler.peak_breakdown)}. Peak of the "
            f"pipeline's processes: {_mib(sampler.peak_pipeline_breakdown)}. Peak of each kind over the run: "
            f"{_mib(sampler.peak_by_kind)}.")
        if rc != 0:
            tail = "\n".join(line for line in text.splitlines() if "Warning" not in line)[-1500:]
            sec.notes.append(f"Demo output (tail):\n\n```\n{tail}\n```")
        sec.raw[case] = {"peak_total": sampler.peak_total, "peak_breakdown": sampler.peak_breakdown,
                         "peak_pipeline": sampler.peak_pipeline,
                         "peak_pipeline_breakdown": sampler.peak_pipeline_breakdown,
                         "peak_by_kind": dict(sampler.peak_by_kind), "rc": rc, "wall_s": wall}
    d, b = runs["default"], runs["bounded"]
    sec.notes.append(
        f"The bounded settings cost {b['wall'] / d['wall']:.2f}x the default's wall time "
        f"({b['wall']:.0f} s vs {d['wall']:.0f} s): more batches, each with its own dbt build.")
    sec.elapsed_s = time.perf_counter() - started
    return sec


def _demo_timings(text: str) -> str:
    """The demo's own summary lines that carry timings, when it printed them."""
    keep = [line.strip() for line in text.splitlines()
            if line.strip().startswith(("produced ", "sensor:")) or " took " in line]
    return "; ".join(keep[:6])
