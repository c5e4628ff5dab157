"""How the Silver stream tables are laid out by key: the ``submission_id`` ranges their
files are clustered in. Shared by the parse, which hands its frames over in this order,
and the merge, which writes each range's rows to files of that range."""

from __future__ import annotations

import polars as pl

# Lower bounds of the submission_id ranges after the first: ids are UUIDs, so sixteen
# ranges by the first hex digit hold a sixteenth of the rows each. Any other id still
# falls in exactly one range (the first and last are open-ended), only less evenly.
KEY_SLICE_BOUNDS = tuple("123456789abcdef")


def key_range_index(ids: pl.Series, bounds: tuple[str, ...] = KEY_SLICE_BOUNDS) -> pl.Series:
    """The range of each (non-null) id, 0 .. len(bounds): how many lower bounds are <= it,
    as in ``KeySlice``'s ``lo <= id < hi``."""
    return pl.Series(sorted(bounds), dtype=pl.String).search_sorted(ids.cast(pl.String), side="right")


def in_key_range_order(frame: pl.DataFrame, within: str = "kafka_offset") -> pl.DataFrame:
    """``frame``'s rows by key range, then by ``within`` (ties keep their order): two stable
    sorts on one integer column each, which polars does several times faster than one
    sort on two columns."""
    idx = key_range_index(frame.get_column("submission_id"))
    return (
        frame.with_columns(_key_range=idx)
        .sort(within, maintain_order=True)
        .sort("_key_range", maintain_order=True)
        .drop("_key_range")
    )
