"""Contracts of the public batch sources: Pandera (polars backend) models, one per table.

They are the single source of truth for column names, dtypes, nullability, keys and
value ranges: the Silver assets validate against them before writing, the asset
checks and the column schemas in the UI are generated from them.

Bronze contracts pin only what Silver reads (by canonical header, see
``sources.parsing.canonical_header``) plus the ingest columns; a publisher adding a
column is fine, one dropping or renaming a used column fails the check.

Validate with ``contracts.checks.validate_or_raise`` / ``validate_frame``: they force
schema-and-data depth. Pandera checks only the schema of a LazyFrame by default,
and a global ``PANDERA_VALIDATION_DEPTH=SCHEMA_ONLY`` (or
``PANDERA_VALIDATION_ENABLED=False``) applies to DataFrames too: "validate a
DataFrame, not a LazyFrame" alone is not enough.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

NYC_COUNTY_FIPS = ["36005", "36047", "36061", "36081", "36085"]
BOROUGHS = ["Manhattan", "Bronx", "Brooklyn", "Queens", "Staten Island"]
BOROUGH_CODES = ["M", "X", "K", "Q", "R"]
TRACT_FIPS_PATTERN = r"^36(005|047|061|081|085)\d{6}$"
DBN_PATTERN = r"^\d{2}[MXKQR]\d{3}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
VINTAGE_PATTERN = r"^\d{4}$"

_YEAR = {"ge": 1990, "le": 2100}
_RANK = {"ge": 0.0, "le": 1.0, "nullable": True}
_PERCENT = {"ge": 0.0, "le": 100.0, "nullable": True}
_RATE = {"ge": 0.0, "le": 1.0, "nullable": True}
_SCORE = {"ge": 1.0, "le": 5.0, "nullable": True}


# --- Silver ---------------------------------------------------------------


class SviTract(pa.DataFrameModel):
    """silver/svi_tract: one row per SVI vintage and 2020 census tract in NYC's five counties.
    Key (svi_year, tract_fips). Percentile ranks are state-ranked (New York); -999 is null."""

    svi_year: pl.Int32 = pa.Field(**_YEAR, description="SVI release year (the partition)")
    tract_fips: str = pa.Field(str_matches=TRACT_FIPS_PATTERN, description="2020 census tract GEOID, 11 digits")
    county_fips: str = pa.Field(isin=NYC_COUNTY_FIPS, description="state + county FIPS, 5 digits")
    county_name: str = pa.Field(description="county as the publisher names it, e.g. 'Kings County'")
    borough: str = pa.Field(isin=BOROUGHS, description="NYC borough of the county")
    location: str = pa.Field(description="publisher's tract label")
    total_population: pl.Int64 = pa.Field(ge=0, nullable=True, description="E_TOTPOP")
    rpl_themes: float = pa.Field(**_RANK, description="overall percentile rank (null where CDC wrote -999)")
    rpl_theme1: float = pa.Field(**_RANK, description="socioeconomic status percentile")
    rpl_theme2: float = pa.Field(**_RANK, description="household characteristics percentile")
    rpl_theme3: float = pa.Field(**_RANK, description="racial & ethnic minority status percentile")
    rpl_theme4: float = pa.Field(**_RANK, description="housing type & transportation percentile")
    spl_themes: float = pa.Field(ge=0.0, le=16.0, nullable=True, description="sum of the 16 variable percentiles")
    spl_theme1: float = pa.Field(ge=0.0, le=5.0, nullable=True)
    spl_theme2: float = pa.Field(ge=0.0, le=5.0, nullable=True)
    spl_theme3: float = pa.Field(ge=0.0, le=1.0, nullable=True)
    spl_theme4: float = pa.Field(ge=0.0, le=5.0, nullable=True)
    f_theme1: pl.Int16 = pa.Field(ge=0, le=5, nullable=True, description="flags (>= 90th percentile) in theme 1")
    f_theme2: pl.Int16 = pa.Field(ge=0, le=5, nullable=True)
    f_theme3: pl.Int16 = pa.Field(ge=0, le=1, nullable=True)
    f_theme4: pl.Int16 = pa.Field(ge=0, le=5, nullable=True)
    f_total: pl.Int16 = pa.Field(ge=0, le=16, nullable=True)
    ep_pov150: float = pa.Field(**_PERCENT, description="% below 150% of poverty")
    ep_unemp: float = pa.Field(**_PERCENT, description="% unemployed")
    ep_hburd: float = pa.Field(**_PERCENT, description="% housing cost burdened")
    ep_nohsdp: float = pa.Field(**_PERCENT, description="% no high school diploma")
    ep_uninsur: float = pa.Field(**_PERCENT, description="% uninsured")
    ep_age65: float = pa.Field(**_PERCENT, description="% aged 65 and older")
    ep_age17: float = pa.Field(**_PERCENT, description="% aged 17 and younger")
    ep_disabl: float = pa.Field(**_PERCENT, description="% with a disability")
    ep_sngpnt: float = pa.Field(**_PERCENT, description="% single-parent households")
    ep_limeng: float = pa.Field(**_PERCENT, description="% limited English")
    ep_minrty: float = pa.Field(**_PERCENT, description="% racial & ethnic minority")
    ep_munit: float = pa.Field(**_PERCENT, description="% housing in structures with 10+ units")
    ep_mobile: float = pa.Field(**_PERCENT, description="% mobile homes")
    ep_crowd: float = pa.Field(**_PERCENT, description="% crowded housing")
    ep_noveh: float = pa.Field(**_PERCENT, description="% households with no vehicle")
    ep_groupq: float = pa.Field(**_PERCENT, description="% in group quarters")

    class Config:
        name = "silver/svi_tract"
        strict = True
        unique = ["svi_year", "tract_fips"]

    @pa.dataframe_check
    def tract_is_in_its_county(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("tract_fips").str.starts_with(pl.col("county_fips")))


class SchoolSurveyResults(pa.DataFrameModel):
    """silver/school_survey_results: one row per school and survey year. Key (dbn, survey_year).
    Response rates 0-1, framework scores 1-5; null where the publisher wrote N/A."""

    dbn: str = pa.Field(str_matches=DBN_PATTERN, description="district-borough-number school code")
    survey_year: pl.Int32 = pa.Field(**_YEAR, description="survey year (the partition)")
    school_name: str = pa.Field(nullable=True)
    parent_response_rate: float = pa.Field(**_RATE)
    teacher_response_rate: float = pa.Field(**_RATE)
    student_response_rate: float = pa.Field(**_RATE, description="null for schools without surveyed students")
    collaborative_teachers_score: float = pa.Field(**_SCORE)
    effective_school_leadership_score: float = pa.Field(**_SCORE)
    rigorous_instruction_score: float = pa.Field(**_SCORE)
    supportive_environment_score: float = pa.Field(**_SCORE, description="N/A for every school in 2019")
    strong_family_community_ties_score: float = pa.Field(**_SCORE)
    trust_score: float = pa.Field(**_SCORE)
    district: pl.Int16 = pa.Field(ge=1, le=99, description="first two characters of the DBN")
    borough_code: str = pa.Field(isin=BOROUGH_CODES, description="third character of the DBN")
    borough: str = pa.Field(isin=BOROUGHS)
    is_charter: bool = pa.Field(description="district 84")
    is_d75: bool = pa.Field(description="district 75, citywide special education")

    class Config:
        name = "silver/school_survey_results"
        strict = True
        unique = ["dbn", "survey_year"]

    @pa.dataframe_check
    def dbn_attributes_agree(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("district") == pl.col("dbn").str.slice(0, 2).cast(pl.Int16))
            & (pl.col("borough_code") == pl.col("dbn").str.slice(2, 1))
            & (pl.col("is_charter") == (pl.col("district") == 84))
            & (pl.col("is_d75") == (pl.col("district") == 75))
        )


class SchoolLocation(pa.DataFrameModel):
    """silver/school_location: one row per school (DBN) and fiscal year. Key (dbn, fiscal_year).
    Tract fields are 2010 geography; svi_tract_matched says whether the tract has a row
    in the latest SVI vintage (2020 tracts). Unmatched schools are kept."""

    dbn: str = pa.Field(str_matches=DBN_PATTERN, description="ATS system code, padding trimmed")
    fiscal_year: pl.Int32 = pa.Field(**_YEAR, description="fiscal year (the partition); 2018 = 2017-18")
    location_code: str = pa.Field(nullable=True)
    school_name: str = pa.Field(nullable=True)
    location_type: str = pa.Field(nullable=True)
    location_category: str = pa.Field(nullable=True)
    grades_text: str = pa.Field(nullable=True)
    status: str = pa.Field(nullable=True)
    address: str = pa.Field(nullable=True)
    borough_code: str = pa.Field(isin=BOROUGH_CODES, description="DBN letter: the administrative borough")
    borough: str = pa.Field(isin=BOROUGHS, description="borough of the DBN letter")
    county_fips: str = pa.Field(
        isin=NYC_COUNTY_FIPS, nullable=True, description="geographic county: BBL borough digit, else NTA prefix"
    )
    census_tract_2010: str = pa.Field(str_matches=r"^\d{6}$", nullable=True, description="2010 tract, zero-padded")
    tract_geoid: str = pa.Field(
        str_matches=TRACT_FIPS_PATTERN, nullable=True, description="36 + county + 2010 tract, 11 digits"
    )
    latitude: float = pa.Field(ge=40.45, le=40.95, nullable=True)
    longitude: float = pa.Field(ge=-74.30, le=-73.65, nullable=True)
    geographical_district: pl.Int16 = pa.Field(ge=1, le=32, nullable=True)
    nta: str = pa.Field(nullable=True, description="2010 neighborhood tabulation area code")
    nta_name: str = pa.Field(nullable=True)
    svi_tract_matched: bool = pa.Field(description="tract_geoid has a row in the latest SVI vintage")

    class Config:
        name = "silver/school_location"
        strict = True
        unique = ["dbn", "fiscal_year"]

    @pa.dataframe_check
    def geoid_is_county_and_tract(cls, data: PolarsData) -> pl.LazyFrame:
        expected = pl.col("county_fips") + pl.col("census_tract_2010")
        return data.lazyframe.select(
            pl.when(pl.col("tract_geoid").is_null())
            .then(~pl.col("svi_tract_matched"))
            .otherwise(pl.col("tract_geoid") == expected)
        )


# --- Bronze ---------------------------------------------------------------


class _BronzeIngest(pa.DataFrameModel):
    """Ingest columns every Bronze source file carries."""

    source_uri: str = pa.Field(alias="_source_uri", description="where the file came from (path or URL)")
    source_sha256: str = pa.Field(alias="_source_sha256", str_matches=SHA256_PATTERN)
    ingested_at: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field(alias="_ingested_at")
    vintage: str = pa.Field(alias="_vintage", str_matches=VINTAGE_PATTERN)
    row_number: pl.Int64 = pa.Field(alias="_row_number", ge=1, description="1 = first data row of the file")

    class Config:
        strict = False  # the publisher's columns beside the ones pinned here
        unique = ["_vintage", "_row_number"]


class BronzeSvi(_BronzeIngest):
    """bronze/svi: the SVI state file as landed, every column a string."""

    class Config:
        name = "bronze/svi"

    fips: str = pa.Field(alias="FIPS", str_matches=r"^\d{11}$")
    stcnty: str = pa.Field(alias="STCNTY")
    county: str = pa.Field(alias="COUNTY")
    location: str = pa.Field(alias="LOCATION")
    e_totpop: str = pa.Field(alias="E_TOTPOP")
    rpl_themes: str = pa.Field(alias="RPL_THEMES")
    rpl_theme1: str = pa.Field(alias="RPL_THEME1")
    rpl_theme2: str = pa.Field(alias="RPL_THEME2")
    rpl_theme3: str = pa.Field(alias="RPL_THEME3")
    rpl_theme4: str = pa.Field(alias="RPL_THEME4")
    f_total: str = pa.Field(alias="F_TOTAL")


class BronzeSchoolSurveyResults(_BronzeIngest):
    """bronze/school_survey_results: the published results file as landed, every column a string.
    Pinned by canonical header (the file writes the parent rate's header across two lines)."""

    class Config:
        name = "bronze/school_survey_results"

    dbn: str = pa.Field(alias="DBN", str_matches=r"^\s*\d{2}[A-Z]\d{3}\s*$")
    school_name: str = pa.Field(alias="School Name")
    parent_rate: str = pa.Field(alias="Total Parent Response Rate %")
    teacher_rate: str = pa.Field(alias="Total Teacher Response Rate %")
    student_rate: str = pa.Field(alias="Total Student Response Rate %")
    trust_score: str = pa.Field(alias="Trust Score")


class BronzeSchoolLocations(_BronzeIngest):
    """bronze/school_locations: the LCGMS extract as landed, every column a string."""

    class Config:
        name = "bronze/school_locations"

    fiscal_year: str = pa.Field(alias="FISCAL_YEAR")
    ats_system_code: str = pa.Field(alias="ATS SYSTEM CODE", str_matches=r"^\s*\d{2}[A-Z]\d{3}\s*$")
    census_tract: str = pa.Field(alias="CENSUS_TRACT")
    borough_block_lot: str = pa.Field(alias="BOROUGH_BLOCK_LOT")
    location_1: str = pa.Field(alias="Location 1")
