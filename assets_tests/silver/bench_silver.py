"""Silver throughput on synthetic Bronze batches: parse (fast path vs reference only),
contract validation, and Delta merges (create, upsert into an existing table, re-merge).

    .venv/bin/python -m assets_tests.silver.bench_silver [records_per_batch]

Prints wall and CPU seconds per step (CPU time is the steadier number on a shared
machine) and records per second.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager

from assets_tests.silver.silver_events import bronze_frame, synthetic_payloads
from school_equity.contracts.checks import validate_or_raise
from school_equity.contracts.stream import (
    SilverSurveyAnswers,
    SilverSurveyQuarantine,
    SilverSurveySubmissions,
)
from school_equity.lake import Lake
from school_equity.silver.merge import SilverTables, merge_batch
from school_equity.silver.parse import parse_batch


@contextmanager
def timed(label: str, records: int):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    w, c = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<44} {w:7.2f} s wall {c:7.2f} s cpu {records / w:>10,.0f} rec/s")


def main(n: int = 200_000) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {n:,} records per batch")
    first_values = synthetic_payloads(n, seed=1)
    first = bronze_frame(first_values, batch_id="b000000001")
    # batch 2: new submissions, plus 3% of batch 1's records re-sent (duplicates, same event time)
    resent = first_values[: n * 3 // 100]
    second = bronze_frame(synthetic_payloads(n - len(resent), seed=2) + resent, batch_id="b000000002",
                          start_offset=n)
    # batch 3: the same submissions as batch 1 with other event times and answers (heavy update)
    third = bronze_frame(synthetic_payloads(n, seed=1, versions_per_submission=1.0), batch_id="b000000003",
                         start_offset=2 * n)
    parse_batch(first.head(1000))

    with timed("parse, fast path + reference for the rest", n):
        parsed = parse_batch(first)
    print("   ", parsed.stats)
    with timed("parse, reference only", n):
        parse_batch(first, fast_path=False)
    with timed("validate the three frames (contracts)", n):
        validate_or_raise(parsed.submissions, SilverSurveySubmissions)
        validate_or_raise(parsed.answers, SilverSurveyAnswers)
        validate_or_raise(parsed.quarantine, SilverSurveyQuarantine)
    with tempfile.TemporaryDirectory() as root:
        tables = SilverTables.in_lake(Lake(root))
        with timed("merge batch 1 (creates the tables)", n):
            merge_batch(tables, parsed)
        parsed2 = parse_batch(second)
        with timed("merge batch 2 into the existing tables", n):
            m = merge_batch(tables, parsed2)
        print(f"    submissions +{m.submissions.inserted} ~{m.submissions.updated}; answers +{m.answers.inserted} "
              f"~{m.answers.updated} -{m.answers.deleted}")
        with timed("re-merge batch 2 (no change)", n):
            m = merge_batch(tables, parsed2)
        assert not (m.submissions.committed or m.answers.committed or m.quarantine.committed)
        parsed3 = parse_batch(third)
        with timed("merge batch 3 (most submissions updated)", n):
            m = merge_batch(tables, parsed3)
        print(f"    submissions +{m.submissions.inserted} ~{m.submissions.updated}; answers +{m.answers.inserted} "
              f"~{m.answers.updated} -{m.answers.deleted}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
