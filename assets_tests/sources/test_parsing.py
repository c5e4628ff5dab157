"""Parsing and tract-mapping rules, on real rows of the shipped files (no Dagster)."""

from __future__ import annotations

import csv

import polars as pl
import pytest

from assets_tests.sources.conftest import LOCATIONS_FILE, SURVEY_FILE, SVI_FILE
from school_equity.sources.parsing import (
    LOCATION_COLUMNS,
    SURVEY_COLUMNS,
    SVI_COLUMNS,
    SourceFormatError,
    canonical_header,
    flag_svi_matches,
    parse_locations,
    parse_survey_results,
    parse_svi,
    read_source_csv,
)


@pytest.fixture(scope="module")
def svi_raw() -> pl.DataFrame:
    return read_source_csv(SVI_FILE)


@pytest.fixture(scope="module")
def survey_raw() -> pl.DataFrame:
    return read_source_csv(SURVEY_FILE)


@pytest.fixture(scope="module")
def locations_raw() -> pl.DataFrame:
    return read_source_csv(LOCATIONS_FILE)


@pytest.fixture(scope="module")
def svi(svi_raw) -> pl.DataFrame:
    return parse_svi(svi_raw, 2022).frame


@pytest.fixture(scope="module")
def locations(locations_raw, svi) -> pl.DataFrame:
    return flag_svi_matches(parse_locations(locations_raw, 2018).frame, svi["tract_fips"])


def row(frame: pl.DataFrame, column: str, value: str) -> dict:
    hit = frame.filter(pl.col(column) == value)
    assert hit.height == 1, f"{column}={value!r}: {hit.height} rows"
    return hit.row(0, named=True)


# --- reading the files as they are ----------------------------------------


def test_svi_bom_is_in_the_file_but_not_in_the_header(svi_raw):
    assert SVI_FILE.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert svi_raw.columns[0] == "ST"
    assert all(dtype == pl.String for dtype in svi_raw.dtypes)


def test_survey_header_with_embedded_newline_is_one_column(survey_raw):
    assert "Total Parent \nResponse Rate %" in survey_raw.columns  # Bronze keeps it as written
    assert survey_raw.width == 11 and survey_raw.height == 1829
    assert canonical_header("Total Parent \nResponse Rate %") == "Total Parent Response Rate %"
    assert canonical_header("\ufeffST") == "ST"


def test_raw_values_are_kept_verbatim(locations_raw, svi_raw):
    # padding, sentinels and blank fields survive reading: Bronze lands them unchanged
    assert row(locations_raw, "LOCATION_CODE", "M015")["ATS SYSTEM CODE"] == "01M015      "
    assert row(svi_raw, "FIPS", "36005000100")["F_THEME1"] == "-999"
    assert row(svi_raw, "FIPS", "36005000100")["RPL_THEMES"] == "-999.0"
    assert row(locations_raw, "LOCATION_CODE", "Q256")["CENSUS_TRACT"] == "      "  # a blank tract, padded


# --- SVI --------------------------------------------------------------------


def test_svi_sentinels_both_spellings_become_null(svi):
    # FIPS 36005000100 (Bronx tract 1, Rikers-side): -999.0 in rank columns, -999 in flags
    r = row(svi, "tract_fips", "36005000100")
    assert r["rpl_themes"] is None and r["rpl_theme1"] is None and r["ep_pov150"] is None
    assert r["f_theme1"] is None and r["f_total"] is None
    assert r["f_theme3"] == 0 and r["ep_minrty"] == 75.3 and r["total_population"] == 4446
    assert (r["county_fips"], r["borough"], r["county_name"]) == ("36005", "Bronx", "Bronx County")


def test_svi_real_values_and_types(svi):
    r = row(svi, "tract_fips", "36061002601")
    assert (r["rpl_themes"], r["rpl_theme1"], r["f_total"], r["ep_pov150"]) == (0.8844, 0.865, 3, 50.0)
    assert r["borough"] == "Manhattan" and r["svi_year"] == 2022
    assert svi.columns == SVI_COLUMNS
    assert svi.schema["f_total"] == pl.Int16 and svi.schema["svi_year"] == pl.Int32


def test_svi_counts_against_the_raw_file(svi):
    with open(SVI_FILE, newline="", encoding="utf-8-sig") as f:
        records = list(csv.DictReader(f))
    assert svi.height == len(records) == 2324
    assert svi["rpl_themes"].null_count() == sum(r["RPL_THEMES"] in ("-999", "-999.0") for r in records) == 93
    assert svi.group_by("borough").len().sort("borough").rows() == [
        ("Bronx", 361), ("Brooklyn", 804), ("Manhattan", 310), ("Queens", 724), ("Staten Island", 125)
    ]


def test_svi_keeps_only_nyc_and_counts_the_rest(svi_raw):
    upstate = svi_raw.head(3).with_columns(
        FIPS=pl.lit("36001000100"), STCNTY=pl.lit("36001"), COUNTY=pl.lit("Albany County")
    )
    parsed = parse_svi(pl.concat([svi_raw.head(5), upstate]), 2022)
    assert parsed.frame.height == 5
    assert parsed.stats["non_nyc_tracts_not_kept"] == 3


def test_svi_unknown_value_is_an_error_not_a_null(svi_raw):
    broken = svi_raw.head(3).with_columns(RPL_THEMES=pl.lit("n.a."))
    with pytest.raises(SourceFormatError, match="RPL_THEMES.*n.a."):
        parse_svi(broken, 2022)


def test_svi_missing_column_is_named(svi_raw):
    with pytest.raises(SourceFormatError, match="RPL_THEME2"):
        parse_svi(svi_raw.drop("RPL_THEME2"), 2022)


# --- survey results ---------------------------------------------------------


def test_survey_rates_normalised_and_na_null(survey_raw):
    frame = parse_survey_results(survey_raw, 2019).frame
    r = row(frame, "dbn", "01M015")  # 91, 100, N/A, 4.10, 4.19, 4.02, N/A, 4.18, 3.96
    assert (r["parent_response_rate"], r["teacher_response_rate"]) == (0.91, 1.0)
    assert r["student_response_rate"] is None and r["supportive_environment_score"] is None
    assert (r["collaborative_teachers_score"], r["trust_score"]) == (4.10, 3.96)
    assert (r["district"], r["borough_code"], r["borough"], r["is_charter"], r["is_d75"]) == (
        1, "M", "Manhattan", False, False
    )
    assert frame.columns == SURVEY_COLUMNS


def test_survey_charter_and_d75(survey_raw):
    frame = parse_survey_results(survey_raw, 2019).frame
    charter = row(frame, "dbn", "84K037")
    assert charter["is_charter"] and not charter["is_d75"] and charter["borough"] == "Brooklyn"
    assert charter["student_response_rate"] == 0.91
    d75 = row(frame, "dbn", "75K004")
    assert d75["is_d75"] and not d75["is_charter"] and d75["district"] == 75
    assert frame["is_charter"].sum() == 225 and frame["is_d75"].sum() == 59


def test_survey_counts_against_the_raw_file(survey_raw):
    parsed = parse_survey_results(survey_raw, 2019)
    with open(SURVEY_FILE, newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))[1:]
    na = sum(v == "N/A" for r in records for v in r[2:])
    assert parsed.stats["na_values_nulled"] == na
    assert parsed.frame.select(pl.exclude(pl.String, pl.Boolean, pl.Int16, pl.Int32)).null_count().sum_horizontal()[0] == na
    assert parsed.frame["supportive_environment_score"].null_count() == 1829  # N/A everywhere in 2019


# --- locations and the tract mapping ---------------------------------------


def test_location_tract_mapping_01M015(locations):
    # CENSUS_TRACT 2601, BBL 1003740020 -> county 061 -> GEOID 36061002601
    r = row(locations, "dbn", "01M015")
    assert (r["census_tract_2010"], r["county_fips"], r["tract_geoid"]) == ("002601", "36061", "36061002601")
    assert (r["latitude"], r["longitude"]) == (40.722075, -73.978747)
    assert (r["geographical_district"], r["nta"], r["nta_name"]) == (1, "MN28", "Lower East Side")
    assert r["svi_tract_matched"] is True
    assert locations.columns == LOCATION_COLUMNS


def test_county_from_each_bbl_digit(locations_raw, locations):
    bbl = dict(zip(locations_raw["ATS SYSTEM CODE"].str.strip_chars(), locations_raw["BOROUGH_BLOCK_LOT"], strict=True))
    expected = {"1": "36061", "2": "36005", "3": "36047", "4": "36081", "5": "36085"}
    for digit, county in expected.items():
        dbns = [d for d, b in bbl.items() if b.startswith(digit) and len(b) == 10]
        got = locations.filter(pl.col("dbn").is_in(dbns))["county_fips"].unique().to_list()
        assert got == [county], digit


def test_bbl_zero_falls_back_to_nta_borough(locations):
    # 01M110: BBL "0", NTA MN28 -> Manhattan; tract 1200 -> 36061001200
    assert row(locations, "dbn", "01M110")["tract_geoid"] == "36061001200"
    # 15K442: BBL "0", NTA BK40, a six-digit tract (150200)
    assert row(locations, "dbn", "15K442")["tract_geoid"] == "36047150200"


def test_geography_not_dbn_letter_decides_the_county(locations):
    # Marble Hill: administratively Bronx (X), geographically New York County
    r = row(locations, "dbn", "10X213")
    assert (r["borough_code"], r["borough"], r["county_fips"]) == ("X", "Bronx", "36061")


def test_school_without_tract_or_point_is_kept(locations):
    r = row(locations, "dbn", "75Q256")  # empty tract, BBL 0, no NTA, district 0, no Location 1
    assert r["tract_geoid"] is None and r["county_fips"] is None and r["latitude"] is None
    assert r["geographical_district"] is None and r["svi_tract_matched"] is False
    r = row(locations, "dbn", "84X497")  # "(0.0, 0.0)" is not a place in NYC
    assert r["latitude"] is None and r["longitude"] is None and r["tract_geoid"] == "36005006500"


def test_split_2010_tract_is_unmatched_not_dropped(locations, svi):
    # tract 0040 (East Village) was split for 2020: no SVI 2022 row
    r = row(locations, "dbn", "01M019")
    assert r["tract_geoid"] == "36061004000" and not r["svi_tract_matched"]
    assert "36061004000" not in set(svi["tract_fips"])
    assert locations.height == 1823


def test_unmatched_count_matches_an_independent_computation(locations):
    """The mapping redone with the csv module from the two raw files."""
    with open(SVI_FILE, newline="", encoding="utf-8-sig") as f:
        tracts = {r["FIPS"] for r in csv.DictReader(f)}
    county = {"1": "061", "2": "005", "3": "047", "4": "081", "5": "085"}
    nta_county = {"MN": "061", "BX": "005", "BK": "047", "QN": "081", "SI": "085"}
    unmatched = 0
    with open(LOCATIONS_FILE, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            c = county.get(r["BOROUGH_BLOCK_LOT"][:1]) or nta_county.get(r["NTA"][:2])
            tract = r["CENSUS_TRACT"].strip()
            geoid = f"36{c}{int(tract):06d}" if c and tract.isdigit() else None
            unmatched += geoid not in tracts
    assert unmatched == (~locations["svi_tract_matched"]).sum() == 173


def test_location_stats(locations_raw):
    stats = parse_locations(locations_raw, 2018).stats
    assert stats["county_from_nta_fallback"] == 52  # 53 rows with BBL 0, one of them has no NTA either
    assert stats["points_outside_nyc_nulled"] == 1
    assert stats["duplicate_dbn_rows_dropped"] == 0


def test_location_vintage_must_match_the_file(locations_raw):
    with pytest.raises(SourceFormatError, match=r"fiscal year\(s\) \['2018'\], landed as vintage 2019"):
        parse_locations(locations_raw, 2019)


def test_duplicate_dbn_keeps_first_and_counts(locations_raw):
    dup = pl.concat([locations_raw.head(3), locations_raw.head(1).with_columns(LOCATION_NAME=pl.lit("second"))])
    parsed = parse_locations(dup, 2018)
    assert parsed.frame.height == 3 and parsed.stats["duplicate_dbn_rows_dropped"] == 1
    assert "second" not in parsed.frame["school_name"].to_list()
