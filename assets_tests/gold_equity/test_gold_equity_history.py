"""The second run (conftest.second_run): a 2018-19 location extract in which one school
moved and one is gone, and an SVI 2020 partition built from the shipped file by changing
the year. The SCD2 snapshot must keep history, and the new SVI vintage must land beside
2022 without changing it."""

from __future__ import annotations

import pytest

from . import raw_files as raw
from .conftest import CLOSED, MOVED, NEW_ADDRESS

pytestmark = pytest.mark.e2e


def test_snapshot_keeps_the_old_location_and_opens_a_new_one(second_run):
    wh, moved_to = second_run
    versions = wh.query_dicts("select * from main.dim_school where dbn = ? order by valid_from", [MOVED])
    assert len(versions) == 2
    old, new = versions
    assert (old["is_current"], new["is_current"]) == (False, True)
    assert old["valid_to"] == new["valid_from"]
    assert old["tract_geoid"] == "36061002601" and old["location_fiscal_year"] == 2018
    assert new["tract_geoid"] == moved_to and new["address"] == NEW_ADDRESS
    assert new["location_fiscal_year"] == 2019


def test_snapshot_closes_a_school_missing_from_the_new_extract(second_run):
    wh, _ = second_run
    rows = wh.query_dicts("select is_current, valid_to from main.dim_school where dbn = ?", [CLOSED])
    assert len(rows) == 1 and rows[0]["is_current"] is False and rows[0]["valid_to"] is not None
    # a school whose location attributes did not change keeps its single version
    assert wh.query("select count(*) from main.dim_school where dbn = '01M020'")[0][0] == 1
    assert wh.query("select count(*) from main.dim_school where is_current")[0][0] == len(raw.location_geoids()) - 1


def test_svi_2020_lands_beside_2022_without_touching_it(second_run, equity_warehouse):
    wh, _ = second_run
    columns = (
        "tract_fips, svi_score, svi_bucket, svi_socioeconomic_score, svi_household_score, "
        "svi_minority_score, svi_housing_transport_score, total_population"
    )
    before = equity_warehouse.query(f"select {columns} from main.gold_climate_vulnerability order by tract_fips")
    after = wh.query(f"select {columns} from main.gold_climate_vulnerability where svi_year = 2022 order by tract_fips")
    assert after == before
    per_year = dict(wh.query("select svi_year, count(*) from main.gold_climate_vulnerability group by 1"))
    assert per_year == {2020: len(raw.svi()), 2022: len(raw.svi())}
    span = wh.query("select distinct first_svi_year, latest_svi_year, svi_vintage_count from main.dim_census_tract")
    assert span == [(2020, 2022, 2)]


def test_school_equity_uses_the_location_and_svi_of_the_survey_year(second_run):
    wh, moved_to = second_run
    [moved] = wh.query_dicts("select * from main.gold_school_equity where dbn = ?", [MOVED])
    # fiscal 2019 (school year 2018-19) is the survey year itself; SVI 2020 is the closest vintage
    assert moved["location_fiscal_year"] == 2019
    assert moved["svi_year"] == 2020
    assert moved["tract_fips"] == moved_to
    assert moved["svi_score"] == pytest.approx(raw.svi_score(moved_to))
    assert moved["svi_bucket"] == "low" and moved["is_high_vulnerability"] is False
    # a school missing from the 2019 extract falls back to its 2018 location: kept, not dropped
    [closed] = wh.query_dicts("select * from main.gold_school_equity where dbn = ?", [CLOSED])
    assert closed["location_fiscal_year"] == 2018
    assert wh.query("select count(*) from main.gold_school_equity")[0][0] == len(raw.survey())
