"""End to end through Dagster into a temporary lake: the shipped vintages, a re-run,
a second vintage beside the first, a download, and loads that must not land."""

from __future__ import annotations

import csv
import hashlib
import shutil

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from assets_tests.sources.conftest import (
    LOCATIONS_FILE,
    SURVEY_FILE,
    SVI_FILE,
    SourcesEnv,
    build_defs,
    make_env,
    rewrite_csv,
)
from school_equity.lake import Lake
from school_equity.sources import storage
from school_equity.sources.catalog import LOCATIONS, SURVEY_RESULTS, SVI

JOBS = {"svi": "svi_job", "survey": "school_survey_results_job", "locations": "school_locations_job"}


def materialization(result, key: str) -> dg.AssetMaterialization:
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == key]
    assert len(mats) == 1, f"{key}: {len(mats)} materializations"
    return mats[0].materialization


def meta(result, key: str, name: str):
    return materialization(result, key).metadata[name].value


def failed_checks(result) -> list[str]:
    return [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The three shipped vintages, built once for the module, in dependency order."""
    with dg.instance_for_test() as instance:
        env = make_env(tmp_path_factory.mktemp("sources"), instance)
        results = {
            "svi": env.run(JOBS["svi"], "2022"),
            "survey": env.run(JOBS["survey"], "2019"),
            "locations": env.run(JOBS["locations"], "2018"),
        }
        yield env, results


def test_row_counts_and_checks(shipped):
    env, results = shipped
    assert meta(results["svi"], "bronze/svi", "dagster/row_count") == 2324
    assert meta(results["svi"], "silver/svi_tract", "dagster/row_count") == 2324
    assert meta(results["survey"], "silver/school_survey_results", "dagster/row_count") == 1829
    assert meta(results["locations"], "silver/school_location", "dagster/row_count") == 1823
    assert storage.read_silver(env.lake, SVI).height == 2324
    assert storage.read_silver(env.lake, SURVEY_RESULTS).height == 1829
    assert storage.read_silver(env.lake, LOCATIONS).height == 1823
    for result in results.values():
        evaluations = result.get_asset_check_evaluations()
        assert len(evaluations) >= 3 and failed_checks(result) == []


def test_unmatched_schools_in_metadata(shipped):
    env, results = shipped
    assert meta(results["locations"], "silver/school_location", "unmatched_schools") == 173
    assert meta(results["locations"], "silver/school_location", "svi_year_matched_against") == 2022
    table = storage.read_silver(env.lake, LOCATIONS)
    assert (~table["svi_tract_matched"]).sum() == 173  # kept, flagged, never dropped
    assert "01M019" in meta(results["locations"], "silver/school_location", "unmatched_sample")


def test_materialization_metadata_describes_the_tables(shipped):
    _, results = shipped
    schema = meta(results["svi"], "silver/svi_tract", "dagster/column_schema")
    assert [col.name for col in schema.columns][:3] == ["svi_year", "tract_fips", "county_fips"]
    assert meta(results["svi"], "silver/svi_tract", "tracts_without_overall_rank") == 93
    assert meta(results["svi"], "bronze/svi", "source_origin") == "shipped"
    assert meta(results["svi"], "bronze/svi", "source_sha256") == hashlib.sha256(SVI_FILE.read_bytes()).hexdigest()
    bronze_schema = meta(results["survey"], "bronze/school_survey_results", "dagster/column_schema")
    assert "Total Parent \nResponse Rate %" in [col.name for col in bronze_schema.columns]


def test_bronze_holds_the_file_unchanged(shipped):
    env, _ = shipped
    bronze = storage.read_bronze(env.lake, storage.latest_bronze_file(env.lake, SURVEY_RESULTS, "2019").path)
    with open(SURVEY_FILE, newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))
    header, body = records[0], records[1:]
    assert bronze.columns[: len(header)] == header
    assert bronze.select(header).rows() == [tuple(r) for r in body]
    assert bronze["_vintage"].unique().to_list() == ["2019"]
    assert bronze["_source_uri"][0] == str(SURVEY_FILE)


def test_rerun_changes_nothing(shipped):
    env, _ = shipped
    before = storage.read_silver(env.lake, SVI).sort("tract_fips")
    files_before = storage.bronze_files(env.lake, SVI, "2022")
    again = env.run(JOBS["svi"], "2022")
    assert meta(again, "bronze/svi", "written") is False
    assert storage.bronze_files(env.lake, SVI, "2022") == files_before
    assert storage.read_silver(env.lake, SVI).sort("tract_fips").equals(before)


def test_second_vintage_lands_beside_the_first(shipped, tmp_path):
    """Backfill: SVI "2024" and locations 2018-19 built from the shipped files with the year changed."""
    env, _ = shipped
    svi_uri = storage.silver_uri(env.lake, SVI)
    first_rows = storage.read_silver(env.lake, SVI, 2022).sort("tract_fips")
    first_files = set(DeltaTable(svi_uri).file_uris())
    loc_first = storage.read_silver(env.lake, LOCATIONS, 2018).sort("dbn")

    svi_2024 = shutil.copy(SVI_FILE, tmp_path / "svi_2024_new_york_tracts.csv")
    result = env.run(JOBS["svi"], "2024", source_uri=str(svi_2024))
    assert meta(result, "silver/svi_tract", "dagster/row_count") == 2324

    table = storage.read_silver(env.lake, SVI)
    assert table.group_by("svi_year").len().sort("svi_year").rows() == [(2022, 2324), (2024, 2324)]
    assert storage.read_silver(env.lake, SVI, 2022).sort("tract_fips").equals(first_rows)
    assert first_files <= set(DeltaTable(svi_uri).file_uris())  # no file of 2022 rewritten or removed

    def next_year(header, row):
        row[header.index("FISCAL_YEAR")] = "2019"
        return row

    loc_2019 = rewrite_csv(LOCATIONS_FILE, tmp_path / "school_locations_2018_19.csv", next_year)
    result = env.run(JOBS["locations"], "2019", source_uri=str(loc_2019))
    assert meta(result, "silver/school_location", "svi_year_matched_against") == 2024  # the newest vintage
    assert meta(result, "silver/school_location", "unmatched_schools") == 173
    assert storage.read_silver(env.lake, LOCATIONS, 2018).sort("dbn").equals(loc_first)
    assert storage.read_silver(env.lake, LOCATIONS).height == 2 * 1823
    assert failed_checks(result) == []


def test_download_source_and_failed_downloads(shipped, http_base):
    env, _ = shipped
    url = f"{http_base}/{SURVEY_FILE.name}"
    ok = env.run(JOBS["survey"], "2021", source_uri=url)
    assert meta(ok, "bronze/school_survey_results", "source_uri") == url
    assert meta(ok, "bronze/school_survey_results", "source_origin") == "run_config"
    assert storage.read_silver(env.lake, SURVEY_RESULTS, 2021).height == 1829

    survey_before = storage.read_silver(env.lake, SURVEY_RESULTS)
    for vintage, path in (("2022", "truncated"), ("2023", "error")):
        bad = env.run(JOBS["survey"], vintage, source_uri=f"{http_base}/{path}/{SURVEY_FILE.name}", raise_on_error=False)
        assert not bad.success
        failure = next(e for e in bad.all_events if e.event_type_value == "STEP_FAILURE")
        assert ("truncated" if path == "truncated" else "HTTP 500") in str(failure.event_specific_data.error)
        assert storage.bronze_files(env.lake, SURVEY_RESULTS, vintage) == []  # nothing half-landed
    assert storage.read_silver(env.lake, SURVEY_RESULTS).equals(survey_before)


def test_configured_download_url_on_the_resource(tmp_path, http_base):
    """A vintage switched to the publisher's URL by resource config, no run config."""
    with dg.instance_for_test() as instance:
        (tmp_path / "landing").mkdir()
        urls = {"svi/2022": f"{http_base}/{SVI_FILE.name}"}
        defs = build_defs(str(tmp_path / "lake"), str(tmp_path / "landing"), download_urls=urls)
        env = SourcesEnv(Lake(str(tmp_path / "lake")), tmp_path / "landing", defs, instance)
        result = env.run(JOBS["svi"], "2022")
        assert meta(result, "bronze/svi", "source_origin") == "download_url"
        assert meta(result, "bronze/svi", "source_uri") == urls["svi/2022"]
        assert meta(result, "silver/svi_tract", "dagster/row_count") == 2324


@pytest.fixture(scope="module")
def svi_env(tmp_path_factory):
    """SVI 2022 only; the loads that must not land use vintages of their own in it."""
    with dg.instance_for_test() as instance:
        env = make_env(tmp_path_factory.mktemp("svi_only"), instance)
        env.run(JOBS["svi"], "2022")
        yield env


def test_contract_violation_writes_nothing(svi_env, tmp_path):
    before = storage.read_silver(svi_env.lake, SVI)

    def overrank(header, row):
        if row[header.index("FIPS")] == "36061002601":
            row[header.index("RPL_THEMES")] = "1.5"
        return row

    bad = rewrite_csv(SVI_FILE, tmp_path / "svi_2030_bad.csv", overrank)
    result = svi_env.run(JOBS["svi"], "2030", source_uri=str(bad), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "silver__svi_tract"
    assert "rpl_themes" in str(failure.event_specific_data.error) and "Nothing was written" in str(
        failure.event_specific_data.error
    )
    assert storage.read_silver(svi_env.lake, SVI).equals(before)  # no 2030 rows, 2022 untouched
    assert len(storage.bronze_files(svi_env.lake, SVI, "2030")) == 1  # Bronze keeps what was published


def test_missing_column_fails_bronze_check_and_silver(svi_env, tmp_path):
    raw = pl.read_csv(SVI_FILE, infer_schema=False).drop("RPL_THEMES")
    bad = tmp_path / "svi_2031_no_rank.csv"
    raw.write_csv(bad)
    result = svi_env.run(JOBS["svi"], "2031", source_uri=str(bad), raise_on_error=False)
    assert not result.success
    assert "contract_svi" in failed_checks(result)  # the Bronze contract (not blocking)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "silver__svi_tract" and "RPL_THEMES" in str(failure.event_specific_data.error)
    assert storage.read_silver(svi_env.lake, SVI)["svi_year"].unique().to_list() == [2022]


def test_locations_need_an_svi_vintage(tmp_path):
    with dg.instance_for_test() as instance:
        env = make_env(tmp_path, instance)
        result = env.run(JOBS["locations"], "2018", raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "materialize an SVI vintage first" in str(failure.event_specific_data.error)
        assert storage.read_silver(env.lake, LOCATIONS) is None


def test_on_s3_second_vintage_beside_the_first(s3_lake_root, tmp_path):
    """The same Bronze layout and per-vintage Delta replace on S3 (moto on loopback)."""
    with dg.instance_for_test() as instance:
        (tmp_path / "landing").mkdir()
        env = SourcesEnv(Lake(s3_lake_root), tmp_path / "landing", build_defs(s3_lake_root, str(tmp_path / "landing")),
                         instance)
        first = env.run(JOBS["svi"], "2022")
        assert meta(first, "silver/svi_tract", "dagster/uri").startswith("s3://")
        assert failed_checks(first) == []  # the checks read the table back from S3
        before = storage.read_silver(env.lake, SVI, 2022).sort("tract_fips")
        env.run(JOBS["svi"], "2024", source_uri=str(SVI_FILE))
        assert storage.read_silver(env.lake, SVI).group_by("svi_year").len().sort("svi_year").rows() == [
            (2022, 2324), (2024, 2324)
        ]
        assert storage.read_silver(env.lake, SVI, 2022).sort("tract_fips").equals(before)
        assert [f.sha256_prefix for f in storage.bronze_files(env.lake, SVI, "2024")] == [
            hashlib.sha256(SVI_FILE.read_bytes()).hexdigest()[:16]
        ]
