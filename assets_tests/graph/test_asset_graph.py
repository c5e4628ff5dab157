"""Snapshot-style tests of the asset graph: policy on every asset, one connected graph."""

from __future__ import annotations

import dagster as dg
import pytest

from school_equity.location import build_definitions

TOPIC = dg.AssetKey(["kafka", "survey_submissions"])


@pytest.fixture(scope="module")
def graph():
    defs = build_definitions()
    return defs, defs.resolve_asset_graph()


def _specs(defs):
    return {s.key: s for s in defs.resolve_all_asset_specs()}


def test_every_asset_has_policy_and_ownership(graph):
    defs, _ = graph
    problems = []
    for key, spec in _specs(defs).items():
        name = key.to_user_string()
        if spec.freshness_policy is None:
            problems.append(f"{name}: no freshness policy")
        if not spec.kinds:
            problems.append(f"{name}: no kinds")
        if not spec.owners:
            problems.append(f"{name}: no owner")
        if not spec.group_name or spec.group_name == "default":
            problems.append(f"{name}: no group")
        if not (spec.description or "").strip():
            problems.append(f"{name}: no description")
    assert not problems, "\n".join(problems)


def test_every_asset_has_a_check(graph):
    defs, asset_graph = graph
    checked = {ck.asset_key for ck in asset_graph.asset_check_keys}
    missing = sorted(k.to_user_string() for k in _specs(defs) if k not in checked)
    assert not missing, f"assets without any asset check: {missing}"


def test_keys_mirror_layers_and_groups(graph):
    defs, _ = graph
    for key, spec in _specs(defs).items():
        layer = key.path[0]
        assert layer in {"kafka", "bronze", "silver", "gold"}, key
        assert spec.group_name == layer, f"{key.to_user_string()} is in group {spec.group_name}"


def test_topic_reaches_gold_and_graph_is_one_piece(graph):
    defs, asset_graph = graph
    downstream = asset_graph.get_downstream_asset_keys if hasattr(asset_graph, "get_downstream_asset_keys") else None
    seen, frontier = {TOPIC}, [TOPIC]
    while frontier:
        k = frontier.pop()
        for child in asset_graph.get(k).child_keys:
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    assert any(k.path[0] == "gold" for k in seen), "no Gold asset is downstream of the Kafka topic"
    assert dg.AssetKey(["silver", "survey_submissions"]) in seen
    # no orphans: every asset has a parent or a child. The one exception is a semantic-layer
    # seed read only by dbt tests (the metric catalogue the marts' metrics_are_defined test
    # checks against): a test is not a data dependency, so it shows as a root.
    for key, spec in _specs(defs).items():
        node = asset_graph.get(key)
        if "semantic" in spec.tags and spec.metadata.get("dagster-dbt/materialization_type") == "seed":
            continue
        assert node.parent_keys or node.child_keys, f"{key.to_user_string()} is an orphan"
    del downstream


def test_stream_assets_share_batch_partitions(graph):
    defs, asset_graph = graph
    for key in [dg.AssetKey(["bronze", "survey_events"]), dg.AssetKey(["silver", "survey_submissions"])]:
        pd = asset_graph.get(key).partitions_def
        assert isinstance(pd, dg.DynamicPartitionsDefinition) and pd.name == "survey_batches"


def test_silver_checks_block_downstream(graph):
    _, asset_graph = graph
    # every Silver table's contract and key checks block; a monitoring check (the SVI match
    # rate, a WARN) may not
    silver_checks = [ck for ck in asset_graph.asset_check_keys
                     if ck.asset_key.path[0] == "silver" and ck.name.startswith(("contract_", "unique_key_"))]
    silver_tables = {ck.asset_key for ck in asset_graph.asset_check_keys if ck.asset_key.path[0] == "silver"}
    assert {ck.asset_key for ck in silver_checks if ck.name.startswith("contract_")} == silver_tables
    for ck in silver_checks:
        spec = asset_graph.get_check_spec(ck)
        assert spec.blocking, f"{ck.name} on {ck.asset_key.to_user_string()} is not blocking"
