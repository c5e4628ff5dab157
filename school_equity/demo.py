"""`school-equity demo`: the main job, headless, on the embedded defaults.

Starts the local broker on a free loopback port, produces a realistic stream of
survey submissions, lets the sensor cut batch partitions and materializes Bronze,
Silver and the stream's Gold models per batch (as the daemon would), lands the
public batch sources and builds the equity marts, then prints a summary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

from school_equity.settings import PROJECT_DIR


def _demo_env(home: Path, bootstrap: str) -> dict[str, str]:
    return {
        "SCHOOL_EQUITY_ENV": "local",
        "SCHOOL_EQUITY_HOME": str(home),
        "SCHOOL_EQUITY_LAKE": str(home / "lake"),
        "SCHOOL_EQUITY_WAREHOUSE": str(home / "warehouse.duckdb"),
        "SCHOOL_EQUITY_KAFKA": bootstrap,
        # the demo cuts a batch as soon as records are there; dagster dev uses the defaults
        "SCHOOL_EQUITY_BATCH_MIN_RECORDS": "1",
        "SCHOOL_EQUITY_BATCH_MIN_INTERVAL_S": "0",
    }


@contextlib.contextmanager
def _run_output(path: Path, *, verbose: bool):
    """Send run logs (Dagster's console logger, dbt's re-emitted output) to `path` so the
    demo's own lines and summary stay readable; --verbose keeps them on the terminal.
    Progress lines of the demo itself go to the real stdout via `_say`."""
    if verbose:
        yield
        return
    import logging

    with open(path, "a", encoding="utf-8") as fh:
        handler = logging.StreamHandler(fh)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                yield
        finally:
            root.removeHandler(handler)


def _say(*parts) -> None:
    print(*parts, file=sys.__stdout__, flush=True)


def run_demo(args) -> int:
    import dagster as dg

    from school_equity.kafka.broker import start_broker, stop_pid
    from school_equity.summary import print_summary

    base = Path(os.environ.get("SCHOOL_EQUITY_HOME", PROJECT_DIR / ".school_equity")).resolve()
    home = base / "demo"
    if home.exists() and not args.keep:
        shutil.rmtree(home)  # the embedded broker keeps its log in memory: a new broker means a new stream
    home.mkdir(parents=True, exist_ok=True)
    broker, proc = start_broker(log_path=str(home / "broker.log"))

    def stop_broker() -> None:
        if proc.poll() is None:  # once: after the drain, or on the way out after an error
            stop_pid(broker.pid)
            proc.wait(timeout=10)

    timings: dict[str, float] = {}
    try:
        os.environ.update(_demo_env(home, broker.bootstrap))
        from school_equity.cli import produce_events
        from school_equity.location import build_definitions
        from school_equity.pipeline import build_batch_sources, build_unpartitioned_gold, drain_stream
        from school_equity.settings import load_settings

        settings = load_settings()
        t = time.perf_counter()
        report = produce_events(broker.bootstrap, settings.topic, args)
        timings["produce"] = time.perf_counter() - t
        print(f"produced {args.events} events to {settings.topic} at {broker.bootstrap} "
              f"in {timings['produce']:.1f}s")

        run_log = home / "run.log"
        try:
            with _run_output(run_log, verbose=getattr(args, "verbose", False)):
                defs = build_definitions(settings)
                (home / "dagster_home").mkdir(parents=True, exist_ok=True)
                with dg.DagsterInstance.local_temp(tempdir=str(home / "dagster_home")) as instance:
                    _say(f"running the graph (run logs: {run_log})")
                    t = time.perf_counter()
                    build_batch_sources(defs, instance)
                    timings["batch sources"] = time.perf_counter() - t
                    t = time.perf_counter()
                    run = drain_stream(defs, instance, settle_s=1.0)
                    timings["stream batches"] = time.perf_counter() - t
                    _say(f"sensor: {run.ticks} ticks, {len(run.batches)} batch partition(s): "
                          f"{', '.join(run.batches[:5])}{' ...' if len(run.batches) > 5 else ''}")
                    # The stream is in the lake (the system of record): the broker, which
                    # holds the whole topic in memory (~0.13 GiB for 1M zstd events), is not needed
                    # for the marts and the summary.
                    stop_broker()
                    t = time.perf_counter()
                    build_unpartitioned_gold(defs, instance)
                    timings["gold marts"] = time.perf_counter() - t
        except Exception:
            if not getattr(args, "verbose", False):
                tail = run_log.read_text(errors="replace").splitlines()[-40:]
                print(f"the run failed; last lines of {run_log}:", *tail, sep="\n", file=sys.stderr)
            raise
        print_summary(settings, report, timings)
    finally:
        stop_broker()
    return 0
