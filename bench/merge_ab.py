"""A/B of the Silver merge module at another git revision against the working tree, on
the same small streaming batches (not part of `bench.run`; the README cites its figures).

    .venv/bin/python -m bench.merge_ab --rev fcb7d99 --base-events 100000 --batch-events 4000

Both modules write their own copy of the tables: first the base events as one batch, then
``--batches`` batches of ``--batch-events`` events each, timed one by one (``merge_batch``
only; the batches are parsed once, beforehand). Repetitions alternate the two modules;
the figure is the median seconds per batch of each repetition.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

MODULE = "school_equity/silver/merge.py"


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def module_at(rev: str, tmp: Path):
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{rev}:{MODULE}"], cwd=root, check=True, capture_output=True,
                            text=True).stdout
    path = tmp / f"merge_{rev}.py"
    path.write_text(source)
    return load_module(path, f"merge_at_{rev}")


def batches(base_events: int, batch_events: int, n: int, seed: int = 7):
    import polars as pl

    from bench.common import read_stream, stream_file
    from bench.silver_merge import bronze_batch
    from school_equity.silver.parse import parse_batch

    total = base_events + n * batch_events
    path = stream_file(max(total, 2_000_000), seed, log=lambda *_: None)
    t0_ms = int(time.time() * 1000) - total
    base, ends = bronze_batch(read_stream(path, 0, base_events), "b000000000", {}, t0_ms)
    out = [parse_batch(pl.from_arrow(base))]
    for i in range(n):
        lo = base_events + i * batch_events
        table, ends = bronze_batch(read_stream(path, lo, lo + batch_events), f"b{i + 1:09d}", ends, t0_ms + lo)
        out.append(parse_batch(pl.from_arrow(table)))
    return out


def seconds_per_batch(module, parsed: list, root: Path) -> tuple[float, float]:
    """Median seconds a batch, and the commits a batch writes to the answers table."""
    from deltalake import DeltaTable

    from school_equity.lake import Lake

    tables = module.SilverTables.in_lake(Lake(str(root)))
    module.merge_batch(tables, parsed[0])
    first = DeltaTable(tables.answers).version()
    times = []
    for p in parsed[1:]:
        t = time.perf_counter()
        module.merge_batch(tables, p)
        times.append(time.perf_counter() - t)
    return median(times), (DeltaTable(tables.answers).version() - first) / len(times)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="fcb7d99", help="the other revision of " + MODULE)
    ap.add_argument("--base-events", type=int, default=100_000)
    ap.add_argument("--batch-events", type=int, default=4_000)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    parsed = batches(args.base_events, args.batch_events, args.batches)
    with tempfile.TemporaryDirectory(prefix="merge_ab_") as d:
        tmp = Path(d)
        modules = {args.rev: module_at(args.rev, tmp), "working tree": load_module(
            Path(__file__).resolve().parent.parent / MODULE, "merge_working_tree")}
        results: dict[str, list[float]] = {name: [] for name in modules}
        commits: dict[str, float] = {}
        for rep in range(args.reps):
            for i, (name, module) in enumerate(modules.items()):
                seconds, commits[name] = seconds_per_batch(module, parsed, tmp / f"r{rep}-{i}")
                results[name].append(round(seconds, 3))
    print(f"{args.batch_events:,}-event batches into {args.base_events:,}-event tables, median s per batch "
          f"by repetition: " + "; ".join(f"{k}: {v}" for k, v in results.items())
          + "; commits a batch to the answers table: " + "; ".join(f"{k}: {v:.1f}" for k, v in commits.items()))
    return results


if __name__ == "__main__":
    main()
