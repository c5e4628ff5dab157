"""The benchmark suite: `python -m bench.run [--events N] [--only NAME ...]` (or `make bench`).

Runs each benchmark with its baselines side by side, then writes the figures, the
machine and the versions to bench/RESULTS.md (a full default run) or to
bench/out/RESULTS.md (a partial or resized run, so it never replaces the committed
full results unless --output says so).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    PROJECT_DIR,
    Figure,
    Section,
    fmt_num,
    git_revision,
    load_average,
    machine_info,
    package_versions,
)

DEFAULT_EVENTS = 1_000_000
BENCHMARKS = ("kafka_bronze", "silver_merge", "latency", "load", "tick", "memory")
FULL_RESULTS = PROJECT_DIR / "bench" / "RESULTS.md"
PARTIAL_RESULTS = PROJECT_DIR / "bench" / "out" / "RESULTS.md"


def _run_one(name: str, args: argparse.Namespace, log) -> Section:
    if name == "kafka_bronze":
        from bench.kafka_bronze import run

        return run(args.events, args.reps, log=log)
    if name == "silver_merge":
        from bench.silver_merge import run

        return run(args.events, args.reps, spark=not args.no_spark, spark_reps=args.spark_reps, log=log)
    if name == "latency":
        from bench.latency import run

        return run(args.batches, log=log)
    if name == "load":
        from bench.load_tick import run_load

        return run_load(args.load_reps, log=log)
    if name == "tick":
        from bench.load_tick import run_tick

        return run_tick(args.tick_reps, log=log)
    if name == "memory":
        from bench.memory import run

        return run(args.events, log=log)
    raise ValueError(name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        help=f"events for throughput and memory (default {DEFAULT_EVENTS:,}; smaller for a quick run)",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of the throughput benchmarks")
    p.add_argument("--load-reps", type=int, default=5, help="fresh interpreters per load case")
    p.add_argument("--tick-reps", type=int, default=20, help="ticks per sensor case")
    p.add_argument("--batches", type=int, default=24, help="batches timed under dagster dev (>= 20)")
    p.add_argument("--no-spark", action="store_true", help="skip the local Spark baseline of the merge")
    p.add_argument(
        "--spark-reps",
        type=int,
        default=1,
        help="runs of the Spark baseline (default 1: ~5 min each at 1M events on 2 cores)",
    )
    p.add_argument("--output", type=Path, help="where to write the results (default: see above)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = args.only or list(BENCHMARKS)
    full = not args.only and args.events == DEFAULT_EVENTS
    output = args.output or (FULL_RESULTS if full else PARTIAL_RESULTS)
    logging.getLogger("dagster").setLevel(logging.WARNING)
    command = "python -m bench.run" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "versions": package_versions(),
        "revision": git_revision(),
        "command": command.strip(),
        "settings": project_settings(os.environ),
        "load_before": load_average(),
    }
    sections: list[Section] = []
    for name in selected:
        log(f"[{name}]")
        t = time.perf_counter()
        try:
            sec = _run_one(name, args, log)
        except Exception as e:
            sec = Section(
                name, notes=[f"FAILED: {type(e).__name__}: {e}\n\n```\n{traceback.format_exc()[-3000:]}```"]
            )
            log(traceback.format_exc())
        sec.elapsed_s = sec.elapsed_s or time.perf_counter() - t
        for f in sec.figures:
            log(
                f"  {f.name}: {fmt_num(f.value)} {f.unit}"
                + (f" = {f.ratio:.2f}x {f.baseline}" if f.ratio else "")
                + (f" [target {f.target}: {'met' if f.passed else 'MISSED'}]" if f.target else "")
            )
        log(f"  ({sec.elapsed_s:.0f}s)")
        sections.append(sec)
    meta["load_after"] = load_average()
    meta["elapsed_s"] = time.perf_counter() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(meta, sections, partial=not full))
    raw = output.with_suffix(".json") if output != FULL_RESULTS else PARTIAL_RESULTS.with_name("results.json")
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(
        json.dumps(
            {
                "meta": meta,
                "sections": [
                    {
                        "title": s.title,
                        "figures": [f.__dict__ for f in s.figures],
                        "notes": s.notes,
                        "raw": s.raw,
                        "elapsed_s": s.elapsed_s,
                    }
                    for s in sections
                ],
            },
            indent=1,
            default=str,
        )
    )
    log(f"wrote {output} (and raw figures to {raw}) in {meta['elapsed_s'] / 60:.1f} min")
    failed = [s.title for s in sections if not s.figures]
    return 1 if failed else 0


def _verdict(f: Figure) -> str:
    if f.target is None:
        return ""
    return "met" if f.passed else "**missed**"


def project_settings(environ) -> dict[str, str]:
    """The project's settings in the bench's environment (e.g. SCHOOL_EQUITY_DBT_PREWARM=0
    for an A/B), which every benchmark's processes inherit. Paths are left out: they say
    nothing about the run and would name this machine's folders."""
    return {k: v for k, v in sorted(environ.items())
            if k.startswith("SCHOOL_EQUITY_") and "/" not in v and os.sep not in v}


def render(meta: dict, sections: list[Section], partial: bool = False) -> str:
    m = meta["machine"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench.run` (`make bench`); do not edit by hand. "
        + ("This is a partial or resized run." if partial else "A full run with the default sizes."),
        "",
        f"- Date: {meta['date']}; revision {meta['revision']}; whole suite {meta['elapsed_s'] / 60:.1f} min",
        f"- Command: `{meta['command']}`",
        "- Project settings in its environment: "
        + (", ".join(f"`{k}={v}`" for k, v in meta.get("settings", {}).items()) or "none (the defaults)"),
        f"- Machine: {m['cores']} cores, {m['memory_gib']} GiB memory, {m['cpu_model']}; {m['os']}; "
        f"Python {m['python']}",
        "- Load average (1/5/15 min) before: "
        + "/".join(f"{x:.1f}" for x in meta["load_before"])
        + ", after: "
        + "/".join(f"{x:.1f}" for x in meta["load_after"])
        + " (a shared machine: only the ratios within one run are comparable)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        "## Figures against targets",
        "",
        "Ratios are the project's figure over the baseline's, measured in the same run (interleaved "
        "repetitions, medians): for a throughput above 1 means faster than the baseline, for a time or a "
        "memory above 1 means more than the baseline.",
        "",
        "| measure | figure | value | baseline | ratio | target | verdict |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for s in sections:
        if not s.figures:
            lines.append(f"| {s.title} | did not run (see below) | | | | | **failed** |")
        for f in s.figures:
            note = f" ({f.note})" if f.note else ""
            lines.append(
                f"| {f.measure} | {f.name}{note} | {fmt_num(f.value)} {f.unit} | {f.baseline or ''} | "
                f"{'' if f.ratio is None else f'{f.ratio:.2f}x'} | {f.target or ''} | {_verdict(f)} |"
            )
    for s in sections:
        lines += ["", f"## {s.title}", "", f"_{s.elapsed_s:.0f} s._", ""]
        for n in s.notes:
            lines += [n, ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
