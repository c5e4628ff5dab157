"""Raw public files -> Silver frames. Pure functions over polars, no Dagster.

Every rule here is about a quirk of the real files (see data/public README):
byte-order mark, ``-999``/``-999.0`` sentinels, ``N/A`` strings, a header with an
embedded newline, right-padded DBNs, 2010 tract codes without leading zeros, the
county hidden in the borough-block-lot, coordinates inside a multi-line address.
A value that is neither a number nor a known missing marker is an error, not a
null: a publisher changing its format must stop the load, not blank a column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import IO

import polars as pl

# --- shared ---------------------------------------------------------------

NYC_COUNTIES: dict[str, str] = {  # county FIPS (state 36 + county) -> borough
    "36005": "Bronx",
    "36047": "Brooklyn",
    "36061": "Manhattan",
    "36081": "Queens",
    "36085": "Staten Island",
}
BOROUGH_BY_LETTER: dict[str, str] = {
    "M": "Manhattan",
    "X": "Bronx",
    "K": "Brooklyn",
    "Q": "Queens",
    "R": "Staten Island",
}
# first digit of the borough-block-lot (the city's borough code) -> county
COUNTY_BY_BBL_DIGIT: dict[str, str] = {"1": "061", "2": "005", "3": "047", "4": "081", "5": "085"}
# 2010 NTA codes start with the borough: the geographic one, like the BBL
COUNTY_BY_NTA_PREFIX: dict[str, str] = {"MN": "061", "BX": "005", "BK": "047", "QN": "081", "SI": "085"}
DBN_PATTERN = r"^\d{2}[MXKQR]\d{3}$"
# a box around the five boroughs; the locations file writes unknown points as (0.0, 0.0)
NYC_LATITUDE = (40.45, 40.95)
NYC_LONGITUDE = (-74.30, -73.65)


class SourceFormatError(ValueError):
    """The file does not have the shape or values this parser knows."""


@dataclass
class Parsed:
    frame: pl.DataFrame
    stats: dict[str, int | str] = field(default_factory=dict)


def canonical_header(name: str) -> str:
    """Header as the parser addresses it: BOM dropped, whitespace runs (the embedded
    newline included) collapsed to one space. Bronze keeps the header as written."""
    return " ".join(name.replace("\ufeff", "").split())


def read_source_csv(source: str | os.PathLike | IO[bytes] | bytes) -> pl.DataFrame:
    """The file as it is: every column a string, empty fields as "", header as written
    (only the byte-order mark, an encoding mark and not part of the name, is dropped)."""
    try:
        df = pl.read_csv(
            source,
            infer_schema=False,
            empty_string_is_null=False,
            encoding="utf8",
            raise_if_empty=True,
        )
    except pl.exceptions.PolarsError as exc:
        raise SourceFormatError(f"not a readable CSV file: {exc}") from exc
    return df.rename({c: c.lstrip("\ufeff") for c in df.columns if c.startswith("\ufeff")})


def canonical_columns(raw: pl.DataFrame, required: list[str], source: str) -> pl.DataFrame:
    """Rename to canonical headers and insist the required ones are there."""
    renamed = {c: canonical_header(c) for c in raw.columns}
    seen: dict[str, str] = {}
    for original, canon in renamed.items():
        if canon in seen:
            raise SourceFormatError(f"{source}: headers {seen[canon]!r} and {original!r} collide")
        seen[canon] = original
    df = raw.rename(renamed)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SourceFormatError(
            f"{source}: missing column(s) {missing}; the file has {sorted(df.columns)[:40]}"
        )
    return df


def _blank_to_null(col: str, markers: tuple[str, ...] = ()) -> pl.Expr:
    text = pl.col(col).str.strip_chars()
    return pl.when(text.is_in(["", *markers])).then(None).otherwise(text)


def _numeric(df: pl.DataFrame, cols: list[str], markers: tuple[str, ...], source: str) -> pl.DataFrame:
    """Float columns from strings; ``markers`` and blanks become null; anything else
    that does not parse raises with examples."""
    cleaned = df.select([_blank_to_null(c, markers).alias(c) for c in cols])
    parsed = cleaned.select([pl.col(c).cast(pl.Float64, strict=False) for c in cols])
    bad = {}
    for c in cols:
        mask = cleaned[c].is_not_null() & parsed[c].is_null()
        if mask.any():
            bad[c] = cleaned[c].filter(mask).unique().head(5).to_list()
    if bad:
        raise SourceFormatError(f"{source}: values that are not numbers nor missing markers: {bad}")
    return parsed


def _integral(values: pl.Series, dtype: pl.DataType, source: str) -> pl.Series:
    frac = values.is_not_null() & (values != values.floor())
    if frac.any():
        raise SourceFormatError(f"{source}: {values.name} should be whole numbers, got {values.filter(frac).head(5).to_list()}")
    return values.cast(dtype)


# --- SVI ------------------------------------------------------------------

SVI_THEME_VARIABLES = (
    "POV150", "UNEMP", "HBURD", "NOHSDP", "UNINSUR",
    "AGE65", "AGE17", "DISABL", "SNGPNT", "LIMENG",
    "MINRTY",
    "MUNIT", "MOBILE", "CROWD", "NOVEH", "GROUPQ",
)
SVI_THEMES = ("1", "2", "3", "4")
SVI_SENTINEL = -999.0
_SVI_FLOATS = (
    ["RPL_THEMES", *[f"RPL_THEME{t}" for t in SVI_THEMES], "SPL_THEMES", *[f"SPL_THEME{t}" for t in SVI_THEMES]]
    + [f"EP_{v}" for v in SVI_THEME_VARIABLES]
)
_SVI_FLAGS = [*[f"F_THEME{t}" for t in SVI_THEMES], "F_TOTAL"]
SVI_REQUIRED = ["STCNTY", "COUNTY", "FIPS", "LOCATION", "E_TOTPOP", *_SVI_FLOATS, *_SVI_FLAGS]

SVI_COLUMNS = (
    ["svi_year", "tract_fips", "county_fips", "county_name", "borough", "location", "total_population"]
    + ["rpl_themes", *[f"rpl_theme{t}" for t in SVI_THEMES], "spl_themes", *[f"spl_theme{t}" for t in SVI_THEMES]]
    + [*[f"f_theme{t}" for t in SVI_THEMES], "f_total"]
    + [f"ep_{v.lower()}" for v in SVI_THEME_VARIABLES]
)


def parse_svi(raw: pl.DataFrame, svi_year: int) -> Parsed:
    """SVI state file -> ``silver/svi_tract`` rows for NYC's five counties.

    ``-999`` (written ``-999`` or ``-999.0``) means "not computed" (tracts with no
    population, mostly parks and airports) and becomes null; tracts outside NYC are
    counted, not kept: the state file is the publisher's unit, NYC is ours.
    """
    df = canonical_columns(raw, SVI_REQUIRED, "svi")
    fips = df["FIPS"].str.strip_chars()
    nyc = fips.str.slice(0, 5).is_in(list(NYC_COUNTIES))
    df, fips = df.filter(nyc), fips.filter(nyc)

    numbers = _numeric(df, [*_SVI_FLOATS, *_SVI_FLAGS, "E_TOTPOP"], (), "svi")
    sentinels = int(numbers.select(pl.sum_horizontal((pl.all() == SVI_SENTINEL).cast(pl.Int64))).to_series().sum())
    numbers = numbers.select(pl.when(pl.all() == SVI_SENTINEL).then(None).otherwise(pl.all()).name.keep())

    out = pl.DataFrame(
        {
            "svi_year": pl.Series([svi_year] * df.height, dtype=pl.Int32),
            "tract_fips": fips,
            "county_fips": fips.str.slice(0, 5),
            "county_name": df["COUNTY"].str.strip_chars(),
            "location": df["LOCATION"].str.strip_chars(),
            "total_population": _integral(numbers["E_TOTPOP"], pl.Int64, "svi"),
        }
    ).with_columns(borough=pl.col("county_fips").replace_strict(NYC_COUNTIES))
    out = out.with_columns(
        *[numbers[c].alias(c.lower()) for c in _SVI_FLOATS],
        *[_integral(numbers[c], pl.Int16, "svi").alias(c.lower()) for c in _SVI_FLAGS],
    )
    frame = out.select(SVI_COLUMNS)
    return Parsed(
        frame,
        {
            "source_rows": raw.height,
            "non_nyc_tracts_not_kept": raw.height - frame.height,
            "sentinel_values_nulled": sentinels,
            "tracts_without_overall_rank": frame["rpl_themes"].null_count(),
        },
    )


# --- School Survey results ------------------------------------------------

SURVEY_NA = ("N/A",)
SURVEY_RATES = {
    "Total Parent Response Rate %": "parent_response_rate",
    "Total Teacher Response Rate %": "teacher_response_rate",
    "Total Student Response Rate %": "student_response_rate",
}
SURVEY_SCORES = {
    "Collaborative Teachers Score": "collaborative_teachers_score",
    "Effective School Leadership Score": "effective_school_leadership_score",
    "Rigorous Instruction Score": "rigorous_instruction_score",
    "Supportive Environment Score": "supportive_environment_score",
    "Strong Family-Community Ties Score": "strong_family_community_ties_score",
    "Trust Score": "trust_score",
}
SURVEY_REQUIRED = ["DBN", "School Name", *SURVEY_RATES, *SURVEY_SCORES]
SURVEY_COLUMNS = (
    ["dbn", "survey_year", "school_name", *SURVEY_RATES.values(), *SURVEY_SCORES.values()]
    + ["district", "borough_code", "borough", "is_charter", "is_d75"]
)


def dbn_attributes(dbn: pl.Expr) -> list[pl.Expr]:
    """District (first two characters), borough letter (third), charter (district 84),
    District 75 (citywide special education)."""
    district = dbn.str.slice(0, 2).cast(pl.Int16, strict=False)
    letter = dbn.str.slice(2, 1)
    return [
        district.alias("district"),
        letter.alias("borough_code"),
        letter.replace_strict(BOROUGH_BY_LETTER, default=None).alias("borough"),
        (district == 84).alias("is_charter"),
        (district == 75).alias("is_d75"),
    ]


def parse_survey_results(raw: pl.DataFrame, survey_year: int) -> Parsed:
    """Published survey results -> ``silver/school_survey_results``.

    Response rates are whole percents in the file and 0-1 here; ``N/A`` (a school
    where a group was not surveyed or too few answered) becomes null.
    """
    df = canonical_columns(raw, SURVEY_REQUIRED, "school_survey_results")
    numeric_cols = [*SURVEY_RATES, *SURVEY_SCORES]
    numbers = _numeric(df, numeric_cols, SURVEY_NA, "school_survey_results")
    na_count = int(df.select(pl.sum_horizontal(pl.col(numeric_cols).str.strip_chars().is_in(SURVEY_NA).cast(pl.Int64))).to_series().sum())
    out = pl.DataFrame(
        {
            "dbn": df["DBN"].str.strip_chars(),
            "survey_year": pl.Series([survey_year] * df.height, dtype=pl.Int32),
            "school_name": df["School Name"].str.strip_chars(),
        }
    ).with_columns(
        *[(numbers[src] / 100.0).alias(dst) for src, dst in SURVEY_RATES.items()],
        *[numbers[src].alias(dst) for src, dst in SURVEY_SCORES.items()],
    )
    frame = out.with_columns(dbn_attributes(pl.col("dbn"))).select(SURVEY_COLUMNS)
    return Parsed(frame, {"source_rows": raw.height, "na_values_nulled": na_count})


# --- school locations -----------------------------------------------------

LOCATION_NULLS = ("NULL",)
LOCATION_REQUIRED = [
    "FISCAL_YEAR", "ATS SYSTEM CODE", "LOCATION_CODE", "LOCATION_NAME", "LOCATION_TYPE_DESCRIPTION",
    "LOCATION_CATEGORY_DESCRIPTION", "GRADES_TEXT", "STATUS_DESCRIPTIONS", "PRIMARY_ADDRESS_LINE_1",
    "CENSUS_TRACT", "BOROUGH_BLOCK_LOT", "NTA", "NTA_NAME", "GEOGRAPHICAL_DISTRICT_CODE", "Location 1",
]
LOCATION_COLUMNS = [
    "dbn", "fiscal_year", "location_code", "school_name", "location_type", "location_category",
    "grades_text", "status", "address", "borough_code", "borough", "county_fips", "census_tract_2010",
    "tract_geoid", "latitude", "longitude", "geographical_district", "nta", "nta_name", "svi_tract_matched",
]
_TEXT_COLUMNS = {
    "LOCATION_CODE": "location_code",
    "LOCATION_NAME": "school_name",
    "LOCATION_TYPE_DESCRIPTION": "location_type",
    "LOCATION_CATEGORY_DESCRIPTION": "location_category",
    "GRADES_TEXT": "grades_text",
    "STATUS_DESCRIPTIONS": "status",
    "PRIMARY_ADDRESS_LINE_1": "address",
    "NTA": "nta",
    "NTA_NAME": "nta_name",
}
# the last "(lat, lon)" of the multi-line "Location 1" field
_POINT = r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*$"


def census_tract_2010(code: pl.Expr) -> pl.Expr:
    """6-digit 2010 tract: the file drops leading zeros (``2601`` is tract 0026.01 = ``002601``).
    Anything that is not 1-6 digits has no tract."""
    text = code.str.strip_chars()
    return pl.when(text.str.contains(r"^\d{1,6}$") & (text.cast(pl.Int64, strict=False) > 0)).then(
        text.str.zfill(6)
    )


def county_code(bbl: pl.Expr, nta: pl.Expr) -> pl.Expr:
    """3-digit county from the borough digit of the borough-block-lot.

    About 3% of rows carry BBL ``0`` (a building without a lot on file); their 2010 NTA
    code starts with the same geographic borough (it agrees with the BBL on every row
    that has both), so it stands in. The DBN letter is the administrative borough and
    is not used: Marble Hill schools are ``X`` but sit in Manhattan's county.
    """
    from_bbl = bbl.str.strip_chars().str.slice(0, 1).replace_strict(COUNTY_BY_BBL_DIGIT, default=None)
    from_nta = nta.str.strip_chars().str.slice(0, 2).replace_strict(COUNTY_BY_NTA_PREFIX, default=None)
    return pl.coalesce(from_bbl, from_nta)


def parse_locations(raw: pl.DataFrame, fiscal_year: int) -> Parsed:
    """LCGMS school locations -> ``silver/school_location`` (``svi_tract_matched`` left
    False here; :func:`flag_svi_matches` sets it against an SVI vintage).

    One row per DBN: the padded ``ATS SYSTEM CODE`` is trimmed; should a file list a DBN
    twice, the first row is kept and the number of dropped rows reported.
    """
    df = canonical_columns(raw, LOCATION_REQUIRED, "school_locations")
    years = df["FISCAL_YEAR"].str.strip_chars().unique().to_list()
    if years != [str(fiscal_year)]:
        raise SourceFormatError(
            f"school_locations: the file is for fiscal year(s) {sorted(years)}, landed as vintage {fiscal_year}"
        )
    point = pl.col("Location 1").str.strip_chars().str.extract_groups(_POINT)
    lat = point.struct.field("1").cast(pl.Float64)
    lon = point.struct.field("2").cast(pl.Float64)
    in_nyc = lat.is_between(*NYC_LATITUDE) & lon.is_between(*NYC_LONGITUDE)
    county3 = county_code(pl.col("BOROUGH_BLOCK_LOT"), pl.col("NTA"))
    tract = census_tract_2010(pl.col("CENSUS_TRACT"))
    district = _blank_to_null("GEOGRAPHICAL_DISTRICT_CODE", LOCATION_NULLS).cast(pl.Int16, strict=False)

    out = df.select(
        pl.col("ATS SYSTEM CODE").str.strip_chars().alias("dbn"),
        pl.lit(fiscal_year, pl.Int32).alias("fiscal_year"),
        *[_blank_to_null(src, LOCATION_NULLS).alias(dst) for src, dst in _TEXT_COLUMNS.items()],
        (pl.lit("36") + county3).alias("county_fips"),
        tract.alias("census_tract_2010"),
        (pl.lit("36") + county3 + tract).alias("tract_geoid"),
        pl.when(in_nyc).then(lat).alias("latitude"),
        pl.when(in_nyc).then(lon).alias("longitude"),
        # 0 is "no district" in the file (e.g. a site outside the districts' map)
        pl.when(district > 0).then(district).alias("geographical_district"),
        pl.lit(False).alias("svi_tract_matched"),
        # bookkeeping for the stats, dropped below
        county_code(pl.col("BOROUGH_BLOCK_LOT"), pl.lit(None, pl.String)).is_null().alias("_no_bbl_county"),
        (point.struct.field("1").is_not_null() & ~in_nyc).alias("_point_outside"),
    )
    out = out.with_columns(dbn_attributes(pl.col("dbn"))[1:3])  # borough_code, borough from the DBN
    deduped = out.unique(subset=["dbn"], keep="first", maintain_order=True)
    frame = deduped.select(LOCATION_COLUMNS)
    return Parsed(
        frame,
        {
            "source_rows": raw.height,
            "duplicate_dbn_rows_dropped": out.height - deduped.height,
            "county_from_nta_fallback": int((deduped["_no_bbl_county"] & deduped["county_fips"].is_not_null()).sum()),
            "without_county": frame["county_fips"].null_count(),
            "without_census_tract": frame["census_tract_2010"].null_count(),
            "points_outside_nyc_nulled": int(deduped["_point_outside"].sum()),
            "without_coordinates": frame["latitude"].null_count(),
        },
    )


def flag_svi_matches(locations: pl.DataFrame, svi_tract_fips: pl.Series) -> pl.DataFrame:
    """``svi_tract_matched``: the school's 2010 tract GEOID is a tract of the SVI vintage.

    SVI 2020/2022 use 2020 tracts; about a tenth of 2010 codes were split or renumbered.
    Unmatched schools stay, flagged, so Gold can count them instead of losing them.
    """
    known = svi_tract_fips.unique().implode()
    return locations.with_columns(
        svi_tract_matched=pl.col("tract_geoid").is_in(known).fill_null(False)
    )
