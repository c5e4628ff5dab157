"""Shape of the sources' part of the asset graph: what location.py receives."""

from __future__ import annotations

import dagster as dg

from assets_tests.sources.conftest import build_defs
from school_equity.sources import (
    SOURCE_ASSETS,
    SOURCE_CHECKS,
    SOURCE_JOBS,
    SOURCE_SENSORS,
    add_shipped_vintages,
    shipped_vintages,
)

KEYS = {
    "bronze/svi", "bronze/school_survey_results", "bronze/school_locations",
    "silver/svi_tract", "silver/school_survey_results", "silver/school_location",
}


def specs() -> dict[str, dg.AssetSpec]:
    return {s.key.to_user_string(): s for a in SOURCE_ASSETS for s in a.specs}


def test_definitions_load(tmp_path):
    defs = build_defs(str(tmp_path / "lake"), str(tmp_path / "landing"))
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in SOURCE_JOBS} == {"svi_job", "school_survey_results_job", "school_locations_job"}
    assert [s.name for s in SOURCE_SENSORS] == ["source_landing_sensor"]


def test_every_asset_is_described_owned_and_grouped():
    assert set(specs()) == KEYS
    for key, spec in specs().items():
        layer = key.split("/")[0]
        assert spec.group_name == layer, key
        assert spec.owners == ["team:data-eng"], key
        assert spec.kinds and "polars" in spec.kinds, key
        assert spec.description and "key:" in spec.description.lower(), key  # what it is, its grain, its key
        assert isinstance(spec.partitions_def, dg.DynamicPartitionsDefinition), key


def test_every_asset_has_checks_and_silver_checks_block():
    checks = [(k, spec.blocking) for c in SOURCE_CHECKS for k, spec in zip(c.check_keys, c.check_specs, strict=True)]
    checked = {k.asset_key.to_user_string() for k, _ in checks}
    assert checked == KEYS
    for key, blocking in checks:
        if key.name == "school_location_svi_match_rate":
            assert not blocking  # a warning about tract vintages, not a gate
        else:
            assert blocking == (key.asset_key.path[0] == "silver"), key


def test_bronze_and_silver_share_the_vintage_partitions():
    s = specs()
    for bronze, silver in [
        ("bronze/svi", "silver/svi_tract"),
        ("bronze/school_survey_results", "silver/school_survey_results"),
        ("bronze/school_locations", "silver/school_location"),
    ]:
        assert s[bronze].partitions_def == s[silver].partitions_def
    deps = {d.asset_key.to_user_string(): d for d in s["silver/school_location"].deps}
    assert isinstance(deps["silver/svi_tract"].partition_mapping, dg.AllPartitionMapping)


def test_add_shipped_vintages_is_idempotent():
    with dg.instance_for_test() as instance:
        assert add_shipped_vintages(instance) == add_shipped_vintages(instance) == {
            "svi_vintages": ["2022"], "survey_results_vintages": ["2019"], "location_vintages": ["2018"]
        }
        assert instance.get_dynamic_partitions("location_vintages") == ["2018"]
    assert list(shipped_vintages()) == ["svi", "school_survey_results", "school_locations"]
