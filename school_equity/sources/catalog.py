"""The three public batch sources: their names, vintages, shipped samples, landing-file
names and publisher URLs. No Dagster imports.

A vintage is the source's own year, written as the Silver year column holds it
(``svi_year`` 2022, ``survey_year`` 2019, ``fiscal_year`` 2018 for 2017-18), so the
partition key and the Delta partition value are the same string and a vintage's
rows are addressed with one predicate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from school_equity.settings import SAMPLE_DIR

MIN_VINTAGE, MAX_VINTAGE = 1990, 2100


@dataclass(frozen=True)
class SourceSpec:
    name: str  # Bronze key ``bronze/<name>`` and lake folder
    silver_table: str  # Silver key ``silver/<silver_table>``
    partitions_name: str  # Dagster dynamic partitions set
    year_column: str  # Silver column that holds the vintage
    label: str
    publisher: str
    landing_pattern: re.Pattern[str]
    shipped: dict[str, str] = field(default_factory=dict)  # vintage -> file in SAMPLE_DIR
    publisher_urls: dict[str, str] = field(default_factory=dict)  # vintage -> CSV download URL

    def shipped_path(self, vintage: str) -> Path | None:
        name = self.shipped.get(vintage)
        return SAMPLE_DIR / name if name else None

    def vintage_from_filename(self, filename: str) -> str | None:
        """The vintage a landing-folder file name announces, or None if it is not this source's."""
        m = self.landing_pattern.match(filename)
        if not m:
            return None
        if "end" in m.groupdict():
            # school years are named by their two calendar years (2017_18); the
            # fiscal year is the second, and a name whose years do not follow is rejected
            start, end = int(m["start"]), int(m["end"])
            if (start + 1) % 100 != end:
                return None
            year = start + 1
        else:
            year = int(m["year"])
        return str(year) if MIN_VINTAGE <= year <= MAX_VINTAGE else None


SVI = SourceSpec(
    name="svi",
    silver_table="svi_tract",
    partitions_name="svi_vintages",
    year_column="svi_year",
    label="CDC/ATSDR Social Vulnerability Index, New York census tracts",
    publisher="CDC/ATSDR",
    landing_pattern=re.compile(r"^svi_(?P<year>\d{4})_[^/]*\.csv$", re.IGNORECASE),
    shipped={"2022": "svi_2022_new_york_tracts.csv"},
    # the state file (all 5,394 New York tracts); Silver keeps NYC's five counties.
    # CDC took the SVI pages down for a while in 2025: the URL is configurable for that reason.
    publisher_urls={"2022": "https://svi.cdc.gov/Documents/Data/2022/csv/states/NewYork.csv"},
)

SURVEY_RESULTS = SourceSpec(
    name="school_survey_results",
    silver_table="school_survey_results",
    partitions_name="survey_results_vintages",
    year_column="survey_year",
    label="NYC School Survey published results, one row per school",
    publisher="NYC DOE via NYC Open Data",
    landing_pattern=re.compile(r"^school_survey_(?P<year>\d{4})_[^/]*\.csv$", re.IGNORECASE),
    shipped={"2019": "school_survey_2019_student_public_data_file.csv"},
    publisher_urls={"2019": "https://data.cityofnewyork.us/api/views/5x8i-3c5b/rows.csv?accessType=DOWNLOAD"},
)

LOCATIONS = SourceSpec(
    name="school_locations",
    silver_table="school_location",
    partitions_name="location_vintages",
    year_column="fiscal_year",
    label="NYC DOE school locations (LCGMS extract), one row per location",
    publisher="NYC DOE via NYC Open Data",
    landing_pattern=re.compile(r"^school_locations_(?P<start>\d{4})_(?P<end>\d{2})[^/]*\.csv$", re.IGNORECASE),
    shipped={"2018": "school_locations_2017_18.csv"},
    # the publisher's export has personal names and phone numbers the shipped sample drops
    publisher_urls={"2018": "https://data.cityofnewyork.us/api/views/p6h4-mpyy/rows.csv?accessType=DOWNLOAD"},
)

SOURCES: dict[str, SourceSpec] = {s.name: s for s in (SVI, SURVEY_RESULTS, LOCATIONS)}


def validate_vintage(vintage: str) -> int:
    """A vintage key is a plain four-digit year; anything else is a wrong partition key."""
    if not re.fullmatch(r"\d{4}", vintage or "") or not MIN_VINTAGE <= int(vintage) <= MAX_VINTAGE:
        raise ValueError(f"vintage {vintage!r}: expected a year between {MIN_VINTAGE} and {MAX_VINTAGE}")
    return int(vintage)


def classify_landing_file(filename: str) -> tuple[SourceSpec, str] | None:
    """(source, vintage) for a landing-folder file name, or None for files that belong to no source."""
    for spec in SOURCES.values():
        vintage = spec.vintage_from_filename(filename)
        if vintage is not None:
            return spec, vintage
    return None
