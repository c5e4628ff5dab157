"""The Gold asset definitions, without running dbt: keys, lineage to Silver, ownership,
partitions, checks, pool; and the pure helpers (batch window, manifest staleness)."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from school_equity.gold.assets import (
    DUCKDB_POOL,
    GOLD_ASSETS,
    GoldDbtResource,
    dbt_resource,
    gold_models,
    gold_stream_models,
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
