"""dbt-duckdb plugin that copies a Silver Delta table into the warehouse with DuckDB's
own Parquet reader.

The profile (dbt_project/profiles.yml) loads it under the alias ``delta``, so sources
keep ``meta: {plugin: delta, delta_table_path: ...}``. dbt-duckdb's bundled ``delta``
plugin hands DuckDB a pyarrow dataset of the table; scanning that Arrow stream into a
DuckDB table held about 1.4 GiB resident for the 5.6M-row answers table of a 1M-event
run (bench/RESULTS*.md, "Peak memory"), most of dbt's share of the run's peak. The
same copy from the table's current Parquet files through ``read_parquet`` peaks near
0.5 GiB and takes half the time, because DuckDB streams the files into its own storage.

The file list comes from the Delta log (deltalake), so the copy is exactly the table's
current snapshot: files removed by later commits are not read. The fast path applies
only when DuckDB can read the files as they are: a local lake (DuckDB reads S3 only
through its httpfs extension, which it would download), no partition columns (their
values live in the log, not the files), and a protocol without reader features
(deletion vectors, column mapping). Anything else falls back to the bundled plugin's
dataset, with the same result and its memory cost.
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa
from dbt.adapters.duckdb.plugins.delta import Plugin as DatasetDeltaPlugin
from deltalake import DeltaTable

_LOCAL = threading.local()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parquet_files(dt: DeltaTable, storage_options: dict | None) -> list[str] | None:
    """The current snapshot's data files when DuckDB can read them directly, else None."""
    if storage_options:
        return None
    protocol = dt.protocol()
    if protocol.min_reader_version > 1 or protocol.reader_features:
        return None
    if dt.metadata().partition_columns:
        return None
    files = dt.file_uris()
    if not files or any("://" in f and not f.startswith("file://") for f in files):
        return None
    return [f.removeprefix("file://") for f in files]


def read_parquet_sql(files: list[str]) -> str:
    return "read_parquet([" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "], union_by_name = true)"


def snapshot_select(files: list[str], columns: list[str], present: set[str], missing_view: str) -> str:
    """SQL reading ``files`` as the table: ``columns`` (the Delta schema) in order; one that
    no current file carries (``present`` are the files' columns, lower case) comes from
    ``missing_view``, an empty relation of its type, so it is a typed null."""
    cols = ", ".join(_quote(c) if c.lower() in present else f"m.{_quote(c)}" for c in columns)
    sql = f"select {cols} from {read_parquet_sql(files)}"
    if len(present) < len({c.lower() for c in columns}):
        sql += f" left join {missing_view} as m on false"
    return sql


class Plugin(DatasetDeltaPlugin):
    def configure_cursor(self, cursor):
        # dbt-duckdb's load_source opens a cursor (calling this), then load(), then
        # registers what load returns on that cursor, all in one thread.
        _LOCAL.cursor = cursor

    def load(self, source_config: Any):
        if "delta_table_path" not in source_config:
            raise Exception("'delta_table_path' is a required argument for the delta table!")
        cursor = getattr(_LOCAL, "cursor", None)
        storage_options = source_config.get("storage_options", None)
        pinned = source_config.get("as_of_version", None) or source_config.get("as_of_datetime", None)
        if cursor is None or pinned:
            return super().load(source_config)
        dt = DeltaTable(source_config["delta_table_path"], storage_options=storage_options or None)
        files = parquet_files(dt, storage_options)
        if files is None:
            return super().load(source_config)
        present = {c.lower() for c in cursor.sql(f"select * from {read_parquet_sql(files)} limit 0").columns}
        schema = pa.schema(dt.schema().to_arrow())
        missing = [f for f in schema if f.name.lower() not in present]
        view = "_school_equity_delta_missing"
        if missing:
            cursor.register(view, pa.schema(missing).empty_table())
        return cursor.sql(snapshot_select(files, schema.names, present, view))
