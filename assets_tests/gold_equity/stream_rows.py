"""A few named survey submissions as stream Silver tables (validated against the stream
contracts before they are written), so the live view's expected values are known here."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from school_equity.contracts.checks import contract_polars_schema, validate_or_raise
from school_equity.contracts.stream import SilverSurveyAnswers, SilverSurveySubmissions

# (submission_id, dbn, respondent_type, event_time, answers)
SUBMISSIONS = [
    ("s1", "01M034", "parent", "2026-03-02T14:03:11+00:00", {"P01": 3, "P02": 4}),
    ("s2", "01M034", "parent", "2026-03-02T23:59:59+00:00", {"P01": 2}),
    ("s3", "01M034", "parent", "2026-03-03T08:00:00+00:00", {"P01": 4, "P02": 4, "P03": 1}),
    ("s4", "01M034", "teacher", "2026-03-03T09:30:00+00:00", {"T01": 5}),
    ("s5", "01M140", "parent", "2026-03-04T10:00:00+00:00", {"P01": 1, "P04": 2}),
    # 01M020 publishes no student rate (N/A): a live row without a published one
    ("s6", "01M020", "student", "2026-03-04T11:00:00+00:00", {"S01": 3}),
]
BATCH_ID, BATCH_SEQ = "b000000001", 1


def stream_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    subs, answers = [], []
    for offset, (sid, dbn, rtype, when, given) in enumerate(SUBMISSIONS):
        t = dt.datetime.fromisoformat(when)
        coords = {"kafka_partition": 0, "kafka_offset": offset, "batch_id": BATCH_ID, "batch_seq": BATCH_SEQ}
        subs.append({
            "submission_id": sid, "dbn": dbn, "survey_year": 2026, "respondent_type": rtype, "event_time": t,
            "schema_version": 1, "language": None, "device_type": "mobile", "device_os": "iOS 18.1",
            "app_version": "3.4.0", "answer_count": len(given), "kafka_topic": "survey_submissions",
            "kafka_timestamp": t, "ingested_at": t, **coords,
        })
        answers += [
            {"submission_id": sid, "question_id": q, "answer_value": v, "dbn": dbn, "survey_year": 2026,
             "respondent_type": rtype, "event_time": t, **coords}
            for q, v in given.items()
        ]
    s = pl.DataFrame(subs, schema=contract_polars_schema(SilverSurveySubmissions))
    a = pl.DataFrame(answers, schema=contract_polars_schema(SilverSurveyAnswers))
    return validate_or_raise(s, SilverSurveySubmissions), validate_or_raise(a, SilverSurveyAnswers)


def write_stream_silver(lake: Path) -> None:
    submissions, answers = stream_frames()
    submissions.write_delta(str(lake / "silver" / "survey_submissions"))
    answers.write_delta(str(lake / "silver" / "survey_answers"))
