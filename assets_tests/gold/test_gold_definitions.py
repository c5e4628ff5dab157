"""The Gold asset definitions, without running dbt: keys, lineage to Silver, ownership,
partitions, checks, pool; and the pure helpers (batch window, manifest staleness)."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from school_equity.gold.assets import (
    DBT_TARGETS_KEEP,
    DUCKDB_POOL,
    GOLD_ASSETS,
    GoldDbtResource,
    dbt_resource,
    gold_models,
    gold_stream_models,
    prune_target_folders,
)
from school_equity.gold.project import dbt_project, manifest_is_stale
from school_equity.gold.window import batch_window_vars
from school_equity.kafka.partitions import survey_batches
from school_equity.settings import Settings

SILVER_STREAM = {
    "stg_survey_submissions": "survey_submissions",
    "stg_survey_answers": "survey_answers",
    "stg_survey_quarantine": "survey_quarantine",
}
STREAM_MODELS = {
    *SILVER_STREAM, "fct_survey_response", "fct_survey_answer",
    "mart_live_response_daily", "mart_quarantine_summary",
}


def test_stream_models_are_gold_assets_partitioned_by_batch():
    assert {k.path[1] for k in gold_stream_models.keys} == STREAM_MODELS
    assert all(k.path[0] == "gold" for k in gold_stream_models.keys)
    assert gold_stream_models.partitions_def == survey_batches
    assert gold_stream_models.backfill_policy == dg.BackfillPolicy.single_run()


def test_dbt_sources_map_to_silver_asset_keys():
    for model, silver_table in SILVER_STREAM.items():
        spec = gold_stream_models.get_asset_spec(dg.AssetKey(["gold", model]))
        assert {d.asset_key for d in spec.deps} == {dg.AssetKey(["silver", silver_table])}
    fct = gold_stream_models.get_asset_spec(dg.AssetKey(["gold", "fct_survey_response"]))
    assert {d.asset_key for d in fct.deps} == {dg.AssetKey(["gold", "stg_survey_submissions"])}


def test_every_gold_asset_has_group_owner_kinds_and_description():
    for assets_def in GOLD_ASSETS:
        for spec in assets_def.specs:
            assert spec.group_name == "gold", spec.key
            assert spec.owners == ["team:analytics"], spec.key
            assert {"dbt", "duckdb"} <= set(spec.kinds), spec.key
            assert spec.description, spec.key


def test_dbt_tests_are_asset_checks_on_every_stream_model():
    checked = {k.asset_key for k in gold_stream_models.check_keys}
    assert checked == set(gold_stream_models.keys)
    names = {k.name for k in gold_stream_models.check_keys}
    assert "unique_fct_survey_response_submission_id" in names
    assert any(n.startswith("relationships_fct_survey_answer_submission_id") for n in names)
    assert any(n.startswith("accepted_values_fct_survey_response_respondent_type") for n in names)


def test_the_two_definitions_split_the_project_and_share_the_warehouse_pool():
    # Unpartitioned: everything that is not tagged stream (seeds at least, equity models, snapshots).
    assert dg.AssetKey(["gold", "dim_climate_question"]) in gold_models.keys
    assert not set(gold_models.keys) & set(gold_stream_models.keys)
    assert gold_models.partitions_def is None
    dbt_nodes = [n for n in dbt_project_manifest_nodes() if n["resource_type"] in ("model", "seed", "snapshot")]
    assert {dg.AssetKey(["gold", n["name"]]) for n in dbt_nodes} == set(gold_models.keys) | set(gold_stream_models.keys)
    for assets_def in GOLD_ASSETS:
        assert assets_def.node_def.pool == DUCKDB_POOL


def dbt_project_manifest_nodes():
    import json

    manifest = json.loads(dbt_project.manifest_path.read_text())
    return list(manifest["nodes"].values())


def test_batch_window_is_half_open_over_the_keys_sequences():
    assert batch_window_vars(["b000000042"]) == {"min_batch_seq": 42, "max_batch_seq_exclusive": 43}
    # order of the keys does not matter; a gap is spanned
    assert batch_window_vars(["b000000007", "b000000003"]) == {"min_batch_seq": 3, "max_batch_seq_exclusive": 8}
    with pytest.raises(ValueError):
        batch_window_vars([])
    with pytest.raises(ValueError):
        batch_window_vars(["2026-03-01"])


def test_manifest_staleness(tmp_path):
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.sql"
    model.write_text("select 1")
    manifest = tmp_path / "target" / "manifest.json"
    assert manifest_is_stale(tmp_path, manifest)  # missing
    manifest.parent.mkdir()
    manifest.write_text("{}")
    os.utime(model, (1_000, 1_000))
    assert not manifest_is_stale(tmp_path, manifest)
    os.utime(model, None)
    os.utime(manifest, (1_000, 1_000))
    assert manifest_is_stale(tmp_path, manifest)


def _settings(tmp_path, env="local", warehouse="warehouse.duckdb") -> Settings:
    return Settings(env=env, home=tmp_path, lake_root=str(tmp_path / "lake"),
                    warehouse_path=str(tmp_path / warehouse), kafka_bootstrap="127.0.0.1:1")


def test_dbt_resource_follows_the_environment(tmp_path):
    local = dbt_resource(_settings(tmp_path))
    assert isinstance(local, GoldDbtResource)
    assert local.target == "local"
    assert local.dbt_environment() == {
        "SCHOOL_EQUITY_LAKE": str(tmp_path / "lake"),
        "SCHOOL_EQUITY_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
    }
    assert os.path.exists(local.dbt_executable) or local.dbt_executable == "dbt"
    assert dbt_resource(_settings(tmp_path, env="prod")).target == "prod"
    with pytest.raises(ValueError, match="warehouse.duckdb"):
        dbt_resource(_settings(tmp_path, warehouse="gold.duckdb"))


def test_dbt_target_folders_kept_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SCHOOL_EQUITY_DBT_TARGETS_KEEP", raising=False)
    assert dbt_resource(_settings(tmp_path)).targets_keep == DBT_TARGETS_KEEP
    monkeypatch.setenv("SCHOOL_EQUITY_DBT_TARGETS_KEEP", "5")
    assert dbt_resource(_settings(tmp_path)).targets_keep == 5
    for bad in ("0", "-2", "many", "2.5"):
        monkeypatch.setenv("SCHOOL_EQUITY_DBT_TARGETS_KEEP", bad)
        with pytest.raises(ValueError, match="SCHOOL_EQUITY_DBT_TARGETS_KEEP.*at least 1"):
            dbt_resource(_settings(tmp_path))


def test_pruning_keeps_the_newest_folders_of_the_op_and_nothing_else_goes(tmp_path):
    now = 1_000_000.0

    def folder(name: str, written: float, log_written: float | None = None):
        p = tmp_path / name
        p.mkdir()
        if log_written is not None:
            (p / "dbt.log").write_text("log")
            os.utime(p / "dbt.log", (log_written, log_written))
        os.utime(p, (written, written))
        return p

    own = folder("gold_stream_dbt-0bc24b4-636a2fd", now)
    a = folder("gold_stream_dbt-1111111-aaaaaaa", now - 5000)
    b = folder("gold_stream_dbt-2222222-bbbbbbb", now - 4000)
    c = folder("gold_stream_dbt-3333333-ccccccc", now - 3000, log_written=now - 3000)
    d = folder("gold_stream_dbt-4444444-ddddddd", now - 2000)
    # its folder is old but its dbt.log was written 100 s ago: a build still running
    e = folder("gold_stream_dbt-5555555-eeeeeee", now - 6000, log_written=now - 100)
    other_op = folder("gold_dbt-6666666-fffffff", now - 9000)
    not_dagsters = folder("gold_stream_dbt-notours", now - 9000)
    (tmp_path / "partial_parse.msgpack").write_bytes(b"state")
    os.utime(tmp_path / "partial_parse.msgpack", (now - 9000, now - 9000))

    removed = prune_target_folders(own, keep=3, min_age_s=600, now=now)
    assert sorted(removed) == sorted([a, b, c])  # own + the two last written (e, d) stay
    assert all(p.exists() for p in (own, d, e, other_op, not_dagsters, tmp_path / "partial_parse.msgpack"))
    assert not any(p.exists() for p in (a, b, c))

    # keep=1: only the own folder by rank, but a folder written within min_age_s stays
    assert prune_target_folders(own, keep=1, min_age_s=600, now=now) == [d]
    assert e.exists() and own.exists() and other_op.exists()
    # a folder not named by dagster-dbt after an op (no context) prunes nothing
    assert prune_target_folders(folder("0bc24b4", now), keep=1, min_age_s=0, now=now) == []
    assert e.exists()
