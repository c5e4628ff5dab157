"""The stream's batch partitions: one dynamic partition per batch of Kafka offset ranges."""

from __future__ import annotations

import dagster as dg

SURVEY_BATCHES = "survey_batches"
survey_batches = dg.DynamicPartitionsDefinition(name=SURVEY_BATCHES)

_PREFIX = "b"
_WIDTH = 9


def batch_id(seq: int) -> str:
    """Sortable batch id: ``b`` + zero-padded sequence (``b000000042``)."""
    if seq < 0:
        raise ValueError(f"batch sequence must be >= 0, got {seq}")
    return f"{_PREFIX}{seq:0{_WIDTH}d}"


def batch_seq(batch_key: str) -> int:
    if not (batch_key.startswith(_PREFIX) and batch_key[1:].isdigit()):
        raise ValueError(f"not a batch id: {batch_key!r} (expected like {batch_id(42)})")
    return int(batch_key[1:])
