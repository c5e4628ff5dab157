"""The dbt-duckdb plugin that copies Silver Delta tables into the warehouse
(school_equity/gold/duckdb_delta.py), driven through dbt-duckdb's own LocalEnvironment
so the order of calls it relies on (cursor, load, register on that cursor) is the real one.
Each copy is compared with what dbt-duckdb's bundled delta plugin (the pyarrow dataset)
gives for the same table."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from dbt.adapters.duckdb.credentials import DuckDBCredentials, PluginConfig
from dbt.adapters.duckdb.environments.local import LocalEnvironment
from dbt.adapters.duckdb.utils import SourceConfig
from deltalake import DeltaTable, write_deltalake

from school_equity.gold import duckdb_delta

MODULES = {"fast": "school_equity.gold.duckdb_delta", "bundled": "delta"}


def _copy(tmp_path, table_path: str, module: str, **meta) -> tuple[list[tuple], list[tuple]]:
    """Load the Delta table as source silver.t through ``module``; (columns+types, rows)."""
    db = tmp_path / f"w_{module.replace('.', '_')}.duckdb"
    creds = DuckDBCredentials(database=db.stem, schema="main", path=str(db),
                              plugins=[PluginConfig(module=module, alias="delta")])
    env = LocalEnvironment(creds)
    try:
        env.load_source("delta", SourceConfig(
            name="t", identifier="t", schema="silver", database=None, tags=[],
            meta={"delta_table_path": table_path, "materialization": "table", **meta}))
    finally:
        env.close()
    with duckdb.connect(str(db), read_only=True) as con:
        types = con.execute("select column_name, data_type from information_schema.columns "
                            "where table_schema = 'silver' and table_name = 't' order by ordinal_position").fetchall()
        rows = con.execute("select * from silver.t order by 1").fetchall()
    return types, rows


@pytest.fixture
def no_fallback(monkeypatch):
    """Fails a load that would leave the fast path (a silent fallback would make the
    comparisons with the bundled plugin pass whatever the fast path does)."""
    def fail(self, source_config):
        raise AssertionError(f"fell back to the dataset for {source_config['delta_table_path']}")

    def copy(tmp_path, uri):
        with monkeypatch.context() as m:
            m.setattr(duckdb_delta.DatasetDeltaPlugin, "load", fail)
            return _copy(tmp_path, uri, MODULES["fast"])

    return copy


def _batch(ids: list[str], *, seq: int, language: bool = False) -> pl.DataFrame:
    df = pl.DataFrame({
        "submission_id": ids,
        "answer_value": [len(i) + seq for i in ids],
        "event_time": [datetime(2026, 3, 1, seq, tzinfo=UTC)] * len(ids),
        "batch_seq": [seq] * len(ids),
    }, schema_overrides={"answer_value": pl.Int32})
    return df.with_columns(language=pl.lit("es")) if language else df


def test_copy_matches_the_dataset_path_after_schema_evolution_and_a_merge(tmp_path, no_fallback):
    uri = str(tmp_path / "lake" / "answers")
    write_deltalake(uri, _batch(["a", "b", "c"], seq=0).to_arrow())
    # a later version adds a column (files written before it lack it) ...
    write_deltalake(uri, _batch(["d"], seq=1, language=True).to_arrow(), mode="append",
                    schema_mode="merge")
    # ... and a merge rewrites that file: the removed file must not be read again
    (DeltaTable(uri).merge(_batch(["d"], seq=2, language=True).to_arrow(),
                           predicate="t.submission_id = s.submission_id", source_alias="s", target_alias="t")
     .when_matched_update_all().execute())
    files = duckdb_delta.parquet_files(DeltaTable(uri), None)
    assert files and len(files) < len(list((tmp_path / "lake" / "answers").glob("*.parquet")))
    # the current files disagree on their columns: the first one predates `language`
    assert sorted("language" in pq.read_schema(f).names for f in files) == [False, True]

    fast = no_fallback(tmp_path, uri)
    bundled = _copy(tmp_path, uri, MODULES["bundled"])
    assert fast == bundled
    types, rows = fast
    assert [c for c, _ in types] == ["submission_id", "answer_value", "event_time", "batch_seq", "language"]
    assert dict(types)["event_time"] == "TIMESTAMP WITH TIME ZONE"
    assert [(r[0], r[3], r[4]) for r in rows] == [("a", 0, None), ("b", 0, None), ("c", 0, None), ("d", 2, "es")]


def test_a_schema_column_no_current_file_carries_is_a_typed_null(tmp_path, no_fallback):
    uri = str(tmp_path / "lake" / "t")
    write_deltalake(uri, _batch(["a"], seq=0).to_arrow())
    write_deltalake(uri, _batch(["x"], seq=1, language=True).to_arrow(), mode="append", schema_mode="merge")
    DeltaTable(uri).delete("submission_id = 'x'")  # the only file with `language` is removed
    fast = no_fallback(tmp_path, uri)
    assert fast == _copy(tmp_path, uri, MODULES["bundled"])
    assert dict(fast[0])["language"] == "VARCHAR" and fast[1] == [("a", 1, fast[1][0][2], 0, None)]


def test_what_duckdb_cannot_read_directly_goes_through_the_dataset(tmp_path):
    partitioned = str(tmp_path / "p")
    write_deltalake(partitioned, _batch(["a", "b"], seq=0).to_arrow(), partition_by=["batch_seq"])
    assert duckdb_delta.parquet_files(DeltaTable(partitioned), None) is None  # values live in the log
    # the fallback still gives the partition column
    assert _copy(tmp_path, partitioned, MODULES["fast"]) == _copy(tmp_path, partitioned, MODULES["bundled"])

    plain = str(tmp_path / "plain")
    write_deltalake(plain, _batch(["a"], seq=0).to_arrow())
    assert duckdb_delta.parquet_files(DeltaTable(plain), {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}) is None


def test_a_missing_path_is_named(tmp_path):
    env = LocalEnvironment(DuckDBCredentials(
        database="w", schema="main", path=str(tmp_path / "w.duckdb"),
        plugins=[PluginConfig(module=MODULES["fast"], alias="delta")]))
    try:
        with pytest.raises(Exception, match="delta_table_path"):
            env.load_source("delta", SourceConfig(name="t", identifier="t", schema="silver", database=None,
                                                  tags=[], meta={}))
    finally:
        env.close()
