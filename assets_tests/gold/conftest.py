"""Fixtures for the Gold tests: a tmp lake and warehouse, settings pointing at them, and a
Dagster instance that knows the stream's batch partitions."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from school_equity.settings import Settings, load_settings


@pytest.fixture
def gold_settings(tmp_path, monkeypatch) -> Settings:
    env = {
        "SCHOOL_EQUITY_ENV": "local",
        "SCHOOL_EQUITY_HOME": str(tmp_path / "home"),
        "SCHOOL_EQUITY_LAKE": str(tmp_path / "lake"),
        # In a folder that does not exist yet: the dbt resource must create it.
        "SCHOOL_EQUITY_WAREHOUSE": str(tmp_path / "wh" / "warehouse.duckdb"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return load_settings()


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def query(settings: Settings, sql: str) -> list[tuple]:
    """Read the warehouse between runs (read-only, closed at once: DuckDB has one writer)."""
    con = duckdb.connect(settings.warehouse_path, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def table_rows(settings: Settings, table: str) -> list[dict]:
    con = duckdb.connect(settings.warehouse_path, read_only=True)
    try:
        cur = con.execute(f"select * from main.{table}")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
