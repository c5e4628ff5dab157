"""The live view after the second run (conftest.second_run): the stream Silver rows of
stream_rows, the stream models and gold_live_response_vs_published built by `dbt build`,
and the view checked against those submissions and the published rates of the raw
survey file."""

from __future__ import annotations

import datetime as dt

import pytest

from . import raw_files as raw
from .stream_rows import SUBMISSIONS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(second_run):
    wh, _ = second_run
    rows = wh.query_dicts("select * from main.gold_live_response_vs_published")
    return {(r["dbn"], r["respondent_type"]): r for r in rows}


def test_live_counts_per_school_and_respondent_type(live):
    parent = live[("01M034", "parent")]
    assert parent["live_submissions"] == 3
    assert parent["live_answers"] == 6
    assert parent["live_avg_answer_score"] == pytest.approx((3 + 4 + 2 + 4 + 4 + 1) / 6)
    assert parent["live_response_days"] == 2  # 2 March (twice, the second at 23:59:59 UTC) and 3 March
    assert parent["first_response_date"] == dt.date(2026, 3, 2)
    assert parent["last_response_date"] == dt.date(2026, 3, 3)
    assert live[("01M034", "teacher")]["live_submissions"] == 1
    assert live[("01M140", "parent")]["live_submissions"] == 1


def test_published_rates_and_vulnerability_sit_beside_the_live_counts(live):
    parent = live[("01M034", "parent")]
    assert parent["published_survey_year"] == 2019
    assert parent["published_response_rate"] == pytest.approx(raw.parent_rate("01M034") / 100)
    expected_bucket = raw.bucket(raw.svi_score(raw.location_geoids()["01M034"]))
    assert parent["svi_bucket"] == expected_bucket == "very_high"
    assert parent["is_high_vulnerability"] is True
    # live without a published rate (the school publishes N/A for students) is kept
    student = live[("01M020", "student")]
    assert student["live_submissions"] == 1 and student["published_response_rate"] is None


def test_every_published_rate_has_a_row_and_silence_shows_as_zero(live):
    published = {
        (dbn, rtype)
        for dbn, row in raw.survey().items()
        for rtype, value in zip(("parent", "teacher", "student"), row[2:5], strict=True)
        if raw.number(value) is not None
    }
    streamed = {(dbn, rtype) for _, dbn, rtype, _, _ in SUBMISSIONS}
    assert set(live) == published | streamed
    quiet = live[("01M063", "parent")]
    assert quiet["live_submissions"] == 0 and quiet["live_submissions_percentile"] == 0
    # the most submissions among parents: the top live percentile, and the gap to its
    # published standing (29% of parents answered in 2019: low among its peers)
    top = live[("01M034", "parent")]
    assert top["live_submissions_percentile"] == 1
    assert top["published_response_rate_percentile"] < 0.5
    assert top["tracking_gap"] == pytest.approx(1 - top["published_response_rate_percentile"])
