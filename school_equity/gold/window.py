"""The dbt batch window for a run over stream partitions. Pure: no Dagster context.

Dagster hands the window to dbt in environment variables, not ``--vars``: dbt discards
its partial-parse state whenever the command-line vars differ from the last parse, so a
new window per batch cost every stream build a full parse of the project (3 s of a 12 s
Gold step on a small batch). The stream models read the window only when they run
incrementally (macros/stream.sql: batch_window), never while parsing, so a new value in
the environment changes nothing dbt parsed. ``dbt build --vars`` still works by hand.
"""

from __future__ import annotations

from collections.abc import Iterable

from school_equity.kafka.partitions import batch_seq


def batch_window_vars(partition_keys: Iterable[str]) -> dict[str, int]:
    """The half-open window ``[min seq, max seq + 1)`` covering the given batch partitions,
    as the dbt vars the stream models filter on.

    Built from the keys' sequence numbers rather than from a key range's first and last
    key, so it does not depend on the order Dagster lists dynamic partitions in. A
    non-contiguous selection gives the window spanning it: the batches in between are
    re-applied, which is harmless because each re-applies exactly its current Silver rows.
    """
    seqs = [batch_seq(k) for k in partition_keys]
    if not seqs:
        raise ValueError("a stream dbt run needs at least one batch partition")
    return {"min_batch_seq": min(seqs), "max_batch_seq_exclusive": max(seqs) + 1}


# The environment variables macros/stream.sql reads, keyed by the dbt var each replaces.
WINDOW_ENV = {
    "min_batch_seq": "SCHOOL_EQUITY_MIN_BATCH_SEQ",
    "max_batch_seq_exclusive": "SCHOOL_EQUITY_MAX_BATCH_SEQ_EXCLUSIVE",
}


def batch_window_env(partition_keys: Iterable[str]) -> dict[str, str]:
    """The same window as the environment of a dbt invocation."""
    return {WINDOW_ENV[name]: str(value) for name, value in batch_window_vars(partition_keys).items()}
