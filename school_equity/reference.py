"""Reference data the stream relies on: the question catalog and the valid DBNs.

One catalog for everyone: the dbt seed `dim_climate_question.csv` is read here by
the producer and by the Silver parser, so a question added there is known to both.
No Dagster imports.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache

from school_equity.settings import QUESTION_CATALOG, SAMPLE_DIR

SURVEY_RESULTS_FILE = SAMPLE_DIR / "school_survey_2019_student_public_data_file.csv"
RESPONDENT_TYPES = ("parent", "teacher", "student")


@dataclass(frozen=True)
class Question:
    question_id: str
    respondent_type: str
    framework_element: str
    scale_min: int
    scale_max: int
    introduced_in_schema_version: int


@lru_cache(maxsize=1)
def questions() -> dict[str, Question]:
    with open(QUESTION_CATALOG, newline="", encoding="utf-8") as f:
        return {
            r["question_id"]: Question(
                question_id=r["question_id"],
                respondent_type=r["respondent_type"],
                framework_element=r["framework_element"],
                scale_min=int(r["scale_min"]),
                scale_max=int(r["scale_max"]),
                introduced_in_schema_version=int(r["introduced_in_schema_version"]),
            )
            for r in csv.DictReader(f)
        }


def questions_for(respondent_type: str) -> list[Question]:
    return [q for q in questions().values() if q.respondent_type == respondent_type]


@lru_cache(maxsize=1)
def school_dbns() -> frozenset[str]:
    """DBNs of the published survey results file (1,829 schools)."""
    with open(SURVEY_RESULTS_FILE, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)  # the header has an embedded newline; csv handles the quoting
        return frozenset(row[0].strip() for row in reader if row and row[0].strip())
