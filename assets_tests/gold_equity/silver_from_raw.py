"""Builds the three batch-source Silver Delta tables straight from the shipped raw CSVs,
independently of school_equity.sources, so the Gold tests do not depend on (or copy) the
Silver code. Column names and types follow docs/ARCHITECTURE.md "Batch-source Silver columns".
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from school_equity.settings import SAMPLE_DIR

SVI_CSV = SAMPLE_DIR / "svi_2022_new_york_tracts.csv"
SURVEY_CSV = SAMPLE_DIR / "school_survey_2019_student_public_data_file.csv"
LOCATIONS_CSV = SAMPLE_DIR / "school_locations_2017_18.csv"

BOROUGH_BY_COUNTY = {
    "36005": "Bronx", "36047": "Brooklyn", "36061": "Manhattan", "36081": "Queens", "36085": "Staten Island",
}
BOROUGH_BY_CODE = {"M": "Manhattan", "X": "Bronx", "K": "Brooklyn", "Q": "Queens", "R": "Staten Island"}
COUNTY_BY_BBL_DIGIT = {"1": "061", "2": "005", "3": "047", "4": "081", "5": "085"}
COUNTY_BY_NTA_PREFIX = {"MN": "061", "BX": "005", "BK": "047", "QN": "081", "SI": "085"}
SVI_VARIABLES = [
    "pov150", "unemp", "hburd", "nohsdp", "uninsur", "age65", "age17", "disabl", "sngpnt", "limeng",
    "minrty", "munit", "mobile", "crowd", "noveh", "groupq",
]
SURVEY_COLUMNS = [
    "dbn", "school_name", "parent_response_rate", "teacher_response_rate", "student_response_rate",
    "collaborative_teachers_score", "effective_school_leadership_score", "rigorous_instruction_score",
    "supportive_environment_score", "strong_family_community_ties_score", "trust_score",
]


def _sentinel_to_null(name: str) -> pl.Expr:
    value = pl.col(name.upper()).cast(pl.Float64)
    return pl.when(value <= -999).then(None).otherwise(value)


def svi_tract(svi_year: int = 2022) -> pl.DataFrame:
    raw = pl.read_csv(SVI_CSV, infer_schema_length=0)
    raw = raw.rename({c: c.lstrip("\ufeff") for c in raw.columns})
    return raw.select(
        pl.lit(svi_year, pl.Int32).alias("svi_year"),
        pl.col("FIPS").str.zfill(11).alias("tract_fips"),
        pl.col("STCNTY").alias("county_fips"),
        pl.col("COUNTY").alias("county_name"),
        pl.col("STCNTY").replace_strict(BOROUGH_BY_COUNTY).alias("borough"),
        pl.col("LOCATION").alias("location"),
        pl.col("E_TOTPOP").cast(pl.Int64).alias("total_population"),
        _sentinel_to_null("rpl_themes").alias("rpl_themes"),
        *[_sentinel_to_null(f"rpl_theme{i}").alias(f"rpl_theme{i}") for i in range(1, 5)],
        _sentinel_to_null("spl_themes").alias("spl_themes"),
        *[_sentinel_to_null(f"spl_theme{i}").alias(f"spl_theme{i}") for i in range(1, 5)],
        *[_sentinel_to_null(f"f_theme{i}").cast(pl.Int16).alias(f"f_theme{i}") for i in range(1, 5)],
        _sentinel_to_null("f_total").cast(pl.Int16).alias("f_total"),
        *[_sentinel_to_null(f"ep_{v}").alias(f"ep_{v}") for v in SVI_VARIABLES],
    )


def school_survey_results(survey_year: int = 2019) -> pl.DataFrame:
    raw = pl.read_csv(SURVEY_CSV, infer_schema_length=0, null_values=["N/A"])
    raw = raw.rename(dict(zip(raw.columns, SURVEY_COLUMNS, strict=True)))
    rates = [c for c in SURVEY_COLUMNS if c.endswith("_rate")]
    scores = [c for c in SURVEY_COLUMNS if c.endswith("_score")]
    district = pl.col("dbn").str.slice(0, 2).cast(pl.Int16)
    return raw.select(
        pl.col("dbn").str.strip_chars(),
        pl.lit(survey_year, pl.Int32).alias("survey_year"),
        "school_name",
        *[(pl.col(c).cast(pl.Float64) / 100).alias(c) for c in rates],
        *[pl.col(c).cast(pl.Float64) for c in scores],
        district.alias("district"),
        pl.col("dbn").str.slice(2, 1).alias("borough_code"),
        pl.col("dbn").str.slice(2, 1).replace_strict(BOROUGH_BY_CODE).alias("borough"),
        (district == 84).alias("is_charter"),
        (district == 75).alias("is_d75"),
    )


def school_location(svi: pl.DataFrame, fiscal_year: int | None = None) -> pl.DataFrame:
    raw = pl.read_csv(LOCATIONS_CSV, infer_schema_length=0, null_values=["NULL"])
    borough_code = pl.col("LOCATION_CODE").str.slice(0, 1)
    # The borough-block-lot's first digit names the county; a few rows carry BBL "0", where
    # the 2010 NTA code's borough prefix (also geographic, unlike the DBN's letter) decides.
    county = pl.coalesce(
        pl.col("BOROUGH_BLOCK_LOT").str.slice(0, 1).replace_strict(COUNTY_BY_BBL_DIGIT, default=None),
        pl.col("NTA").str.slice(0, 2).replace_strict(COUNTY_BY_NTA_PREFIX, default=None),
    )
    latlon = pl.col("Location 1").str.extract_groups(r"\((?<lat>-?[\d.]+), (?<lon>-?[\d.]+)\)")
    out = raw.select(
        pl.col("ATS SYSTEM CODE").str.strip_chars().alias("dbn"),
        (pl.col("FISCAL_YEAR").cast(pl.Int32) if fiscal_year is None else pl.lit(fiscal_year, pl.Int32)).alias(
            "fiscal_year"
        ),
        pl.col("LOCATION_CODE").alias("location_code"),
        pl.col("LOCATION_NAME").alias("school_name"),
        pl.col("LOCATION_TYPE_DESCRIPTION").alias("location_type"),
        pl.col("LOCATION_CATEGORY_DESCRIPTION").alias("location_category"),
        pl.col("GRADES_TEXT").alias("grades_text"),
        pl.col("STATUS_DESCRIPTIONS").alias("status"),
        pl.col("PRIMARY_ADDRESS_LINE_1").alias("address"),
        borough_code.alias("borough_code"),
        borough_code.replace_strict(BOROUGH_BY_CODE, default=None).alias("borough"),
        ("36" + county).alias("county_fips"),
        pl.col("CENSUS_TRACT").str.zfill(6).alias("census_tract_2010"),
        ("36" + county + pl.col("CENSUS_TRACT").str.zfill(6)).alias("tract_geoid"),
        latlon.struct.field("lat").cast(pl.Float64).alias("latitude"),
        latlon.struct.field("lon").cast(pl.Float64).alias("longitude"),
        pl.col("GEOGRAPHICAL_DISTRICT_CODE").cast(pl.Int16).alias("geographical_district"),
        pl.col("NTA").alias("nta"),
        pl.col("NTA_NAME").str.strip_chars().alias("nta_name"),
    )
    latest = svi.filter(pl.col("svi_year") == svi["svi_year"].max())
    return out.with_columns(svi_tract_matched=pl.col("tract_geoid").is_in(latest["tract_fips"].implode()))


def write_lake(lake: Path, tables: dict[str, pl.DataFrame], mode: str = "overwrite") -> None:
    for name, frame in tables.items():
        frame.write_delta(str(lake / "silver" / name), mode=mode)


def build_lake(lake: Path) -> dict[str, pl.DataFrame]:
    svi = svi_tract()
    tables = {
        "svi_tract": svi,
        "school_survey_results": school_survey_results(),
        "school_location": school_location(svi),
    }
    write_lake(lake, tables)
    return tables
