"""The dbt batch window for a run over stream partitions. Pure: no Dagster context."""

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
