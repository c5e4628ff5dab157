"""The shipped raw CSVs read with the csv module, for expected values computed
independently of the Silver code and of Gold."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path
from statistics import mean

from school_equity.settings import SAMPLE_DIR

SVI_CSV = SAMPLE_DIR / "svi_2022_new_york_tracts.csv"
SURVEY_CSV = SAMPLE_DIR / "school_survey_2019_student_public_data_file.csv"
LOCATIONS_CSV = SAMPLE_DIR / "school_locations_2017_18.csv"

BUCKET_UPPER_BOUNDS = ((0.25, "low"), (0.5, "moderate"), (0.75, "high"))  # else very_high
COUNTY_BY_BBL = {"1": "061", "2": "005", "3": "047", "4": "081", "5": "085"}
COUNTY_BY_NTA = {"MN": "061", "BX": "005", "BK": "047", "QN": "081", "SI": "085"}
BOROUGH_BY_LETTER = {"M": "Manhattan", "X": "Bronx", "K": "Brooklyn", "Q": "Queens", "R": "Staten Island"}


def bucket(score: float) -> str:
    for upper, name in BUCKET_UPPER_BOUNDS:
        if score < upper:
            return name
    return "very_high"


def number(text: str) -> float | None:
    text = text.strip()
    return None if text in ("", "N/A") or float(text) <= -999 else float(text)


@cache
def svi() -> dict[str, dict]:
    """FIPS -> raw row."""
    with open(SVI_CSV, newline="", encoding="utf-8-sig") as f:
        return {row["FIPS"]: row for row in csv.DictReader(f)}


def svi_score(fips: str | None) -> float | None:
    return number(svi()[fips]["RPL_THEMES"]) if fips in svi() else None


@cache
def survey() -> dict[str, list[str]]:
    """DBN -> raw row (positional: the second header holds a newline)."""
    with open(SURVEY_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return {r[0].strip(): r for r in rows if r}


def parent_rate(dbn: str) -> float | None:
    """As published: whole percent."""
    return number(survey()[dbn][2])


def climate(dbn: str) -> float | None:
    scores = [s for s in (number(v) for v in survey()[dbn][5:11]) if s is not None]
    return mean(scores) if scores else None


def read_locations(path: Path = LOCATIONS_CSV) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@cache
def location_geoids() -> dict[str, str | None]:
    """DBN -> 2010 tract GEOID: 36 + county (borough-block-lot digit, else the NTA's borough)
    + the tract code left-padded to 6 digits."""
    header, rows = read_locations()
    col = {name: i for i, name in enumerate(header)}
    out = {}
    for row in rows:
        bbl, nta, tract = row[col["BOROUGH_BLOCK_LOT"]].strip(), row[col["NTA"]], row[col["CENSUS_TRACT"]].strip()
        county = COUNTY_BY_BBL.get(bbl[:1]) or COUNTY_BY_NTA.get(nta[:2])
        out[row[col["ATS SYSTEM CODE"]].strip()] = f"36{county}{int(tract):06d}" if county and tract.isdigit() else None
    return out
