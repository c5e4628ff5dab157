"""End to end on the shipped real files: Bronze and Silver by the source assets, `dbt build`
through the CLI on a tmp DuckDB file, and Gold values checked against numbers computed in
the test from the raw CSV rows with the csv module (not from Silver, not from Gold)."""

from __future__ import annotations

import csv
from collections import defaultdict
from statistics import mean

import pytest

from . import raw_files as raw
from .raw_files import bucket, climate, number, parent_rate

pytestmark = pytest.mark.e2e

LOW_PARENT_RESPONSE = 30  # percent, as published (seed dim_equity_threshold: 0.3)
WEAK_CLIMATE = 3.0


def test_row_counts_match_the_raw_files(equity_warehouse):
    counts = {
        t: equity_warehouse.query(f"select count(*) from main.{t}")[0][0]
        for t in ("school_climate_snapshot", "gold_school_equity", "gold_climate_vulnerability",
                  "dim_census_tract", "dim_school", "dim_district", "gold_borough_summary")
    }
    assert counts["school_climate_snapshot"] == len(raw.survey()) == 1829
    assert counts["gold_school_equity"] == 1829  # nobody dropped, matched or not
    assert counts["gold_climate_vulnerability"] == counts["dim_census_tract"] == len(raw.svi()) == 2324
    assert counts["dim_school"] == len(raw.location_geoids()) == 1823
    assert counts["dim_district"] == len({d[:2] for d in raw.survey()} | {d[:2] for d in raw.location_geoids()})
    assert counts["gold_borough_summary"] == 5


def test_01M015_carries_its_tract_svi_and_bucket(equity_warehouse):
    [row] = equity_warehouse.query_dicts("select * from main.gold_school_equity where dbn = '01M015'")
    geoid = raw.location_geoids()["01M015"]
    svi = raw.svi()[geoid]
    assert geoid == "36061002601"  # 2010 tract 2601 in Manhattan (BBL 1...), zero-padded
    assert row["tract_fips"] == geoid
    assert row["svi_year"] == 2022
    assert row["svi_match_status"] == "matched"
    assert row["svi_score"] == pytest.approx(float(svi["RPL_THEMES"]))
    assert row["svi_bucket"] == bucket(float(svi["RPL_THEMES"])) == "very_high"
    assert row["svi_socioeconomic_score"] == pytest.approx(float(svi["RPL_THEME1"]))
    assert row["svi_housing_transport_score"] == pytest.approx(float(svi["RPL_THEME4"]))
    assert row["parent_response_rate"] == pytest.approx(parent_rate("01M015") / 100)
    assert row["climate_score"] == pytest.approx(climate("01M015"))
    assert row["flag_high_vulnerability_low_response"] is False  # 91% of parents answered


def test_match_status_explains_every_school(equity_warehouse):
    expected = defaultdict(int)
    for dbn in raw.survey():
        if dbn not in raw.location_geoids():
            expected["no_location"] += 1
        elif raw.location_geoids()[dbn] is None:
            expected["no_tract"] += 1
        elif raw.location_geoids()[dbn] not in raw.svi():
            expected["tract_not_in_svi"] += 1
        elif raw.svi_score(raw.location_geoids()[dbn]) is None:
            expected["svi_score_missing"] += 1
        else:
            expected["matched"] += 1
    got = dict(equity_warehouse.query("select svi_match_status, count(*) from main.gold_school_equity group by 1"))
    assert got == dict(expected)
    assert got["no_location"] == 1829 - 1779  # README: 1,779 survey DBNs are in the locations file


def test_equity_flags_follow_the_thresholds(equity_warehouse):
    low_response, weak_climate = set(), set()
    for dbn in raw.survey():
        score = raw.svi_score(raw.location_geoids().get(dbn))
        if score is None or score < 0.5:  # high and very_high start at 0.5
            continue
        if (parent_rate(dbn) or 100) < LOW_PARENT_RESPONSE:
            low_response.add(dbn)
        if climate(dbn) is not None and climate(dbn) < WEAK_CLIMATE:
            weak_climate.add(dbn)
    got_low = {r[0] for r in equity_warehouse.query(
        "select dbn from main.gold_school_equity where flag_high_vulnerability_low_response")}
    got_weak = {r[0] for r in equity_warehouse.query(
        "select dbn from main.gold_school_equity where flag_high_vulnerability_weak_climate")}
    assert low_response and weak_climate
    assert got_low == low_response
    assert got_weak == weak_climate


def test_district_average_parent_response_rate(equity_warehouse):
    by_district = defaultdict(list)
    for dbn in raw.survey():
        if parent_rate(dbn) is not None:
            by_district[int(dbn[:2])].append(parent_rate(dbn) / 100)
    got = dict(equity_warehouse.query(
        "select district, avg_parent_response_rate from main.gold_district_summary where survey_year = 2019"))
    assert set(got) == set(by_district)
    for district, rates in by_district.items():
        assert got[district] == pytest.approx(mean(rates)), district
    # District 1 (Lower East Side), spelled out as a reader would check it
    assert got[1] == pytest.approx(mean(parent_rate(d) for d in raw.survey() if d.startswith("01")) / 100)


def test_tract_school_counts_and_buckets(equity_warehouse):
    schools_per_tract = defaultdict(int)
    for geoid in raw.location_geoids().values():
        if geoid:
            schools_per_tract[geoid] += 1
    busiest = max(schools_per_tract, key=schools_per_tract.get)
    rows = {r["tract_fips"]: r for r in equity_warehouse.query_dicts(
        "select tract_fips, school_count, svi_score, svi_bucket from main.gold_climate_vulnerability")}
    assert rows[busiest]["school_count"] == schools_per_tract[busiest] >= 10
    assert rows["36061002601"]["school_count"] == schools_per_tract["36061002601"]
    # every SVI tract: the count of schools and the bucket from the raw rank
    for fips, svi in raw.svi().items():
        assert rows[fips]["school_count"] == schools_per_tract.get(fips, 0), fips
        score = number(svi["RPL_THEMES"])
        assert rows[fips]["svi_bucket"] == (bucket(score) if score is not None else None), fips
    assert sum(r["svi_bucket"] is None for r in rows.values()) == 93  # README: 93 tracts at -999


def test_borough_summary_counts_schools_by_dbn_borough(equity_warehouse):
    expected = defaultdict(int)
    for dbn in raw.survey():
        expected[raw.BOROUGH_BY_LETTER[dbn[2]]] += 1
    got = dict(equity_warehouse.query("select borough, school_count from main.gold_borough_summary"))
    assert got == dict(expected)


def test_dim_district_marks_charter_and_d75(equity_warehouse):
    rows = {r["district"]: r for r in equity_warehouse.query_dicts("select * from main.dim_district")}
    assert rows[84]["is_charter_district"] and rows[84]["district_type"] == "charter"
    assert rows[75]["is_d75_district"] and rows[75]["borough"] == "Citywide"
    assert rows[1]["borough"] == "Manhattan" and not rows[1]["is_charter_district"]
    assert rows[84]["surveyed_school_count"] == sum(d.startswith("84") for d in raw.survey())


def test_semantic_seeds_define_the_svi(equity_warehouse):
    themes = dict(equity_warehouse.query("select theme_name, variables from main.dim_svi_definition"))
    assert themes["Socioeconomic Status"] == "POV150;UNEMP;HBURD;NOHSDP;UNINSUR"
    assert themes["Racial & Ethnic Minority Status"] == "MINRTY"
    variables = {r[0] for r in equity_warehouse.query("select variable from main.dim_svi_variable")}
    with open(raw.SVI_CSV, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f))
    assert {c[3:] for c in header if c.startswith("EP_")} == variables
