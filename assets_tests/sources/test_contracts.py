"""The source contracts accept the real parsed files and reject what they pin."""

from __future__ import annotations

from datetime import UTC, datetime

import pandera.config
import polars as pl
import pytest
from pandera.config import ValidationDepth

from assets_tests.sources.conftest import LOCATIONS_FILE, SURVEY_FILE, SVI_FILE
from school_equity.contracts import sources as c
from school_equity.contracts.checks import ContractViolation, validate_frame, validate_or_raise
from school_equity.sources.parsing import (
    canonical_header,
    flag_svi_matches,
    parse_locations,
    parse_survey_results,
    parse_svi,
    read_source_csv,
)
from school_equity.sources.storage import bronze_frame


@pytest.fixture(scope="module")
def frames() -> dict[str, pl.DataFrame]:
    svi = parse_svi(read_source_csv(SVI_FILE), 2022).frame
    return {
        "svi": svi,
        "survey": parse_survey_results(read_source_csv(SURVEY_FILE), 2019).frame,
        "locations": flag_svi_matches(parse_locations(read_source_csv(LOCATIONS_FILE), 2018).frame, svi["tract_fips"]),
    }


def rules(contract, frame) -> set[tuple[str, str]]:
    report = validate_frame(frame, contract)
    return {(r["column"], r["check"]) for r in report.by_rule()}


def test_real_files_pass(frames):
    assert validate_frame(frames["svi"], c.SviTract).passed
    assert validate_frame(frames["survey"], c.SchoolSurveyResults).passed
    assert validate_frame(frames["locations"], c.SchoolLocation).passed


def test_svi_rules(frames):
    bad = frames["svi"].head(4).with_columns(
        rpl_themes=pl.Series([0.5, 1.2, None, 0.1]),  # rank above 1
        tract_fips=pl.Series(["36005000100", "3600500020", "36005000400", "36047000100"]),  # 10 digits; wrong county
    )
    got = rules(c.SviTract, bad)
    assert ("rpl_themes", "less_than_or_equal_to(1.0)") in got
    assert any(col == "tract_fips" and chk.startswith("str_matches") for col, chk in got)
    assert any(chk == "tract_is_in_its_county" for _, chk in got)


def test_svi_key_is_unique(frames):
    dup = pl.concat([frames["svi"].head(2), frames["svi"].head(1)])
    with pytest.raises(ContractViolation, match="silver/svi_tract"):
        validate_or_raise(dup, c.SviTract)


def test_survey_rules(frames):
    bad = frames["survey"].head(3).with_columns(
        parent_response_rate=pl.Series([91.0, 0.5, None]),  # a percent that was not normalised
        trust_score=pl.Series([0.0, 3.0, 5.0]),  # below the 1-5 scale
        is_charter=pl.Series([True, False, False]),  # 01M015 is not in district 84
    )
    got = rules(c.SchoolSurveyResults, bad)
    assert ("parent_response_rate", "less_than_or_equal_to(1.0)") in got
    assert ("trust_score", "greater_than_or_equal_to(1.0)") in got
    assert any(chk == "dbn_attributes_agree" for _, chk in got)


def test_location_rules(frames):
    bad = frames["locations"].head(3).with_columns(
        tract_geoid=pl.Series(["36061002601", "36061999999", None]),  # not county + tract
        svi_tract_matched=pl.Series([True, True, True]),  # matched without a GEOID
        latitude=pl.Series([40.72, 0.0, None]),
    )
    got = rules(c.SchoolLocation, bad)
    assert any(chk == "geoid_is_county_and_tract" for _, chk in got)
    assert ("latitude", "greater_than_or_equal_to(40.45)") in got


def test_global_schema_only_setting_does_not_weaken_the_contract(frames, monkeypatch):
    """With PANDERA_VALIDATION_DEPTH=SCHEMA_ONLY in the environment, Pandera skips data
    rules even for a DataFrame; validate_or_raise forces them back on."""
    monkeypatch.setattr(pandera.config.CONFIG, "validation_depth", ValidationDepth.SCHEMA_ONLY)
    bad = frames["survey"].head(2).with_columns(parent_response_rate=pl.Series([91.0, 100.0]))
    c.SchoolSurveyResults.validate(bad)  # plain Pandera lets the percents through
    with pytest.raises(ContractViolation, match="parent_response_rate"):
        validate_or_raise(bad, c.SchoolSurveyResults)


@pytest.mark.parametrize(
    ("path", "contract", "drop"),
    [
        (SVI_FILE, c.BronzeSvi, "RPL_THEMES"),
        (SURVEY_FILE, c.BronzeSchoolSurveyResults, "Total Parent \nResponse Rate %"),
        (LOCATIONS_FILE, c.BronzeSchoolLocations, "CENSUS_TRACT"),
    ],
)
def test_bronze_contracts(path, contract, drop):
    raw = read_source_csv(path)
    frame = bronze_frame(raw, source_uri=str(path), sha256="0" * 64, ingested_at=datetime.now(UTC), vintage="2022")
    canonical = frame.rename({col: canonical_header(col) for col in frame.columns})
    assert validate_frame(canonical, contract).passed
    report = validate_frame(canonical.drop(canonical_header(drop)), contract)
    assert not report.passed
    assert canonical_header(drop) in report.failure_cases["failure_case"].to_list()
