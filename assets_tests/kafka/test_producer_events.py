"""The simulated survey stream (pure generator): determinism, realism, and that its report
is the truth about the records it yields. Records are checked by an independent
classifier written from docs/ARCHITECTURE.md, not by the generator's own flags."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from school_equity.kafka.events import (
    CORRECTION,
    DUPLICATE,
    LANGUAGES,
    MALFORMED,
    MALFORMED_KINDS,
    PRODUCER_ID,
    SUBMISSION,
    GeneratorConfig,
    SurveyStream,
    fingerprint,
    generate,
    versions_hash,
)
from school_equity.reference import SURVEY_RESULTS_FILE, questions, school_dbns

NYC = ZoneInfo("America/New_York")
REQUIRED = ("submission_id", "dbn", "survey_year", "respondent_type", "event_time", "answers")


def classify(value: bytes) -> tuple[str, str] | None:
    """(reason code, detail) for a bad record, None for a valid one: the contract's rules."""
    try:
        d = json.loads(value)
    except ValueError:
        return "invalid_json", ""
    if not isinstance(d, dict):
        return "wrong_type", "<root>"
    if d.get("schema_version") not in (1, 2):
        return "unsupported_schema_version", str(d.get("schema_version"))
    for f in REQUIRED:
        if f not in d:
            return "missing_field", f
    types = {"submission_id": str, "dbn": str, "survey_year": int, "respondent_type": str, "event_time": str,
             "answers": dict}
    for f, t in types.items():
        if not isinstance(d[f], t) or isinstance(d[f], bool):
            return "wrong_type", f
    if any(not isinstance(v, int) or isinstance(v, bool) for v in d["answers"].values()):
        return "wrong_type", "answers"
    if d["respondent_type"] not in ("parent", "teacher", "student"):
        return "invalid_value", "respondent_type"
    try:
        ts = datetime.fromisoformat(d["event_time"])
        if ts.tzinfo is None:
            raise ValueError
    except ValueError:
        return "invalid_value", "event_time"
    if d["dbn"] not in school_dbns():
        return "unknown_dbn", d["dbn"]
    catalog = questions()
    for q in d["answers"]:
        if q not in catalog or catalog[q].respondent_type != d["respondent_type"]:
            return "unknown_question", q
    for q, v in d["answers"].items():
        if not catalog[q].scale_min <= v <= catalog[q].scale_max:
            return "answer_out_of_range", f"{q}={v}"
    return None


def event_time(rec) -> datetime:
    return datetime.fromisoformat(json.loads(rec.value)["event_time"])


@pytest.fixture(scope="module")
def big():
    """One 20k stream shared by the statistical tests (about 0.6 s)."""
    return generate(20_000, GeneratorConfig(seed=7, track_expected=True))


def test_same_seed_same_bytes_other_seed_other_bytes():
    cfg = GeneratorConfig(seed=3)
    a, ra = generate(2_000, cfg)
    b, rb = generate(2_000, cfg)
    c, _ = generate(2_000, GeneratorConfig(seed=4))
    assert [(r.key, r.value, r.headers) for r in a] == [(r.key, r.value, r.headers) for r in b]
    assert ra.to_dict() == rb.to_dict()
    assert [r.value for r in a] != [r.value for r in c]


def test_every_record_classifies_as_its_ground_truth(big):
    records, report = big
    for r in records:
        got = classify(r.value)
        if r.kind == MALFORMED:
            assert got is not None and got[0] == r.reason, (r.reason, r.detail, r.value)
            if r.reason in ("missing_field", "wrong_type", "unknown_dbn", "answer_out_of_range"):
                assert got[1] == r.detail
        else:
            assert got is None, (got, r.value)
    for r in records:
        if r.reason == "invalid_json":
            with pytest.raises(ValueError):
                json.loads(r.value)


def test_valid_payloads_are_compact_canonical_json(big):
    records, _ = big
    for r in records:
        if r.kind != MALFORMED:
            doc = json.loads(r.value)
            assert json.dumps(doc, separators=(",", ":")).encode() == r.value
            assert list(doc)[:8] == ["schema_version", "submission_id", "dbn", "survey_year", "respondent_type",
                                     "event_time", "answers", "device"]


def test_malformed_near_one_percent_every_kind_fresh_ids(big):
    records, report = big
    bad = [r for r in records if r.kind == MALFORMED]
    assert 0.007 <= len(bad) / len(records) <= 0.013
    assert set(Counter(r.reason for r in bad)) == set(MALFORMED_KINDS)
    assert {"survey_year", "answers"} <= {r.detail for r in bad if r.reason == "wrong_type"}
    valid_ids = {r.submission_id for r in records if r.kind != MALFORMED}
    bad_ids = [r.submission_id for r in bad]
    assert len(set(bad_ids)) == len(bad_ids) and not valid_ids & set(bad_ids)
    assert all(r.key == r.submission_id.encode() for r in records)


def test_reason_codes_are_the_contracts():
    from school_equity.contracts.stream import QUARANTINE_REASONS

    assert set(MALFORMED_KINDS) == set(QUARANTINE_REASONS)


def recount(records):
    """The report's numbers, recomputed from the records' bytes alone."""
    by_sid: dict[str, list] = defaultdict(list)
    malformed, versions = Counter(), Counter()
    for r in records:
        versions[int(dict(r.headers)["schema_version"])] += 1
        got = classify(r.value)
        if got:
            malformed[got[0]] += 1
        else:
            by_sid[json.loads(r.value)["submission_id"]].append(r.value)
    distinct = {sid: set(vals) for sid, vals in by_sid.items()}
    final = {}
    for sid, vals in distinct.items():
        docs = [json.loads(v) for v in vals]
        times = [datetime.fromisoformat(d["event_time"]) for d in docs]
        assert len(set(times)) == len(times), "two versions of a submission share an event time"
        d = docs[times.index(max(times))]
        us = (max(times) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        final[sid] = (us, d["answers"], d["respondent_type"])
    return {
        "events": len(records),
        "valid_submissions": len(by_sid),
        "valid_records": sum(map(len, by_sid.values())),
        "duplicates": sum(len(v) - len(distinct[s]) for s, v in by_sid.items()),
        "corrections": sum(len(v) - 1 for v in distinct.values()),
        "malformed": dict(malformed),
        "schema_versions": dict(versions),
        "final": final,
    }


def assert_report_matches(records, report):
    rc = recount(records)
    assert report.events == rc["events"]
    assert report.valid_submissions == rc["valid_submissions"]
    assert report.valid_records == rc["valid_records"]
    assert report.duplicates == rc["duplicates"]
    assert report.corrections == rc["corrections"]
    assert report.malformed == rc["malformed"]
    assert report.schema_versions == rc["schema_versions"]
    assert sum(report.valid_by_respondent_type.values()) == report.valid_submissions
    assert report.valid_by_respondent_type == dict(Counter(v[2] for v in rc["final"].values()))
    hash_ = sum(fingerprint(sid, us, answers) for sid, (us, answers, _) in rc["final"].items()) % (1 << 64)
    assert report.final_versions_hash == hash_ == versions_hash((s, us, a) for s, (us, a, _) in rc["final"].items())
    if report.expected is not None:
        assert {s: (e.event_time_us, e.answers) for s, e in report.expected.items()} == {
            s: (us, a) for s, (us, a, _) in rc["final"].items()}
    # out of order: records emitted after one generated later
    seen_max, ooo = -1, 0
    for r in records:
        ooo += r.seq < seen_max
        seen_max = max(seen_max, r.seq)
    assert report.out_of_order == ooo
    assert report.late == sum(r.late for r in records)


def test_report_is_the_truth(big):
    records, report = big
    assert_report_matches(records, report)
    assert report.duplicates > 100 and report.corrections > 50 and report.late > 200 and report.out_of_order > 200


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(0, 400),
    malformed=st.floats(0, 0.3),
    duplicate=st.floats(0, 0.3),
    correction=st.floats(0, 0.3),
    late=st.floats(0, 1),
    ooo=st.floats(0, 1),
    window=st.integers(1, 50),
    v2=st.one_of(st.none(), st.floats(0, 1)),
    pool=st.integers(1, 50),
)
def test_report_matches_recount_for_any_settings(seed, n, malformed, duplicate, correction, late, ooo, window, v2,
                                                 pool):
    cfg = GeneratorConfig(seed=seed, malformed_rate=malformed, duplicate_rate=duplicate, correction_rate=correction,
                          late_rate=late, out_of_order_rate=ooo, shuffle_window=window, v2_after_fraction=v2,
                          pool_size=pool, track_expected=True)
    records, report = generate(n, cfg)
    assert sorted(r.seq for r in records) == list(range(n))
    assert_report_matches(records, report)
    for pos, r in enumerate(records):
        assert pos - r.seq <= window  # held back at most `window` places


def test_duplicates_are_identical_resends_and_corrections_are_newer(big):
    records, _ = big
    by_seq = sorted(records, key=lambda r: r.seq)
    versions: dict[str, list] = defaultdict(list)  # sid -> earlier versions, generation order
    stale_dup = 0
    for r in by_seq:
        if r.kind == DUPLICATE:
            earlier = versions[r.submission_id]
            assert (r.value, r.headers) in [(v.value, v.headers) for v in earlier]
            stale_dup += r.value != earlier[-1].value
        elif r.kind == CORRECTION:
            prev = versions[r.submission_id]
            assert prev, "a correction of an unknown submission"
            assert event_time(r) > max(event_time(v) for v in prev)
            new, old = json.loads(r.value), json.loads(prev[-1].value)
            assert new["answers"] != old["answers"]
            for f in ("dbn", "respondent_type", "survey_year"):
                assert new[f] == old[f]
            versions[r.submission_id].append(r)
        elif r.kind == SUBMISSION:
            assert not versions[r.submission_id]
            versions[r.submission_id].append(r)
    assert stale_dup > 0, "no duplicate of a superseded version: the 'newer wins' case is not exercised"


def test_late_events_are_hours_or_days_older_than_their_neighbours(big):
    records, _ = big
    by_seq = sorted(records, key=lambda r: r.seq)
    times = [event_time(r) if classify(r.value) is None else None for r in by_seq]
    late = [i for i, r in enumerate(by_seq) if r.late]
    assert late
    lags = []
    for i in late:
        around = sorted(t for j, t in enumerate(times[max(0, i - 10):i + 11], max(0, i - 10))
                        if t is not None and not by_seq[j].late and by_seq[j].kind == SUBMISSION)
        lag = around[len(around) // 2] - times[i]
        assert lag >= timedelta(minutes=55), (i, lag)
        lags.append(lag)
    assert max(lags) > timedelta(days=1)


def test_v2_switch_point():
    n = 3_000
    records, report = generate(n, GeneratorConfig(seed=5, v2_after_fraction=0.3))
    assert report.v2_from_seq == 900
    for r in records:
        header = int(dict(r.headers)["schema_version"])
        if r.reason == "unsupported_schema_version":
            assert header == 3
            continue
        if r.kind != DUPLICATE:  # a duplicate resends whatever version it copies
            assert header == (2 if r.seq >= 900 else 1), r.seq
        if r.reason != "invalid_json":
            d = json.loads(r.value)
            assert d["schema_version"] == header
            if header == 2:
                assert d["language"] in LANGUAGES[d.get("respondent_type", "parent")]
                assert d["device"]["app_version"].startswith("4.")
            else:
                assert "language" not in d
    assert generate(500, GeneratorConfig(v2_after_fraction=None))[1].schema_versions.keys() <= {1, 3}
    assert generate(500, GeneratorConfig(v2_after_fraction=0.0))[1].schema_versions.keys() <= {2, 3}


def test_languages_follow_a_new_york_mix(big):
    records, _ = big
    langs = Counter(json.loads(r.value)["language"] for r in records
                    if r.kind == SUBMISSION and json.loads(r.value)["respondent_type"] == "parent"
                    and json.loads(r.value)["schema_version"] == 2)
    total = sum(langs.values())
    assert langs.most_common(2)[0][0] == "en" and langs.most_common(2)[1][0] == "es"
    assert 0.1 < langs["es"] / total < 0.35 and len(langs) >= 8


def student_survey_dbns() -> set[str]:
    with open(SURVEY_RESULTS_FILE, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return {r[0].strip() for r in rows if r and r[4].strip() != "N/A"}


def test_respondents_schools_and_answers_are_realistic(big):
    records, _ = big
    docs = [json.loads(r.value) for r in records if r.kind == SUBMISSION]
    mix = Counter(d["respondent_type"] for d in docs)
    assert mix["parent"] > mix["teacher"] * 3 and mix["student"] > mix["teacher"] * 3
    assert 0.04 < mix["teacher"] / len(docs) < 0.15
    assert {d["dbn"] for d in docs if d["respondent_type"] == "student"} <= student_survey_dbns()
    assert len({d["dbn"] for d in docs}) > 1_000  # spread over the city, not a handful of schools
    catalog = questions()
    partial = 0
    for d in docs:
        assert d["answers"], "a submission with no answer"
        for q, v in d["answers"].items():
            assert type(v) is int and catalog[q].respondent_type == d["respondent_type"]
            assert catalog[q].scale_min <= v <= catalog[q].scale_max
        partial += len(d["answers"]) < sum(q.respondent_type == d["respondent_type"] for q in catalog.values())
        assert set(d["device"]) == {"type", "os", "app_version"}
        assert d["survey_year"] == 2026
    assert 0.05 < partial / len(docs) < 0.4  # about 3% skip each of 6 questions


def test_event_times_follow_the_school_week(big):
    records, _ = big
    cfg = GeneratorConfig()
    start = datetime.combine(cfg.window_start_date, datetime.min.time(), NYC)
    end = start + timedelta(days=cfg.window_days)
    assert cfg.window_start_date == date(2026, 3, 2) and cfg.window_start_date.weekday() == 0
    local = defaultdict(list)
    for r in records:
        if r.kind == SUBMISSION:
            d = json.loads(r.value)
            t = datetime.fromisoformat(d["event_time"])
            assert t.utcoffset() == timedelta(0)
            assert start <= t < end
            local[d["respondent_type"]].append(t.astimezone(NYC))
    in_class = [t for t in local["student"] if t.weekday() < 5 and 8 <= t.hour < 16]
    assert len(in_class) / len(local["student"]) > 0.85
    weekend = [t for ts in local.values() for t in ts if t.weekday() >= 5]
    assert 0.01 < len(weekend) / sum(map(len, local.values())) < 0.2  # parents answer at weekends, students don't
    evening_parents = [t for t in local["parent"] if 18 <= t.hour < 23]
    assert len(evening_parents) / len(local["parent"]) > 0.25
    night = [t for ts in local.values() for t in ts if 1 <= t.hour < 5]
    assert len(night) / sum(map(len, local.values())) < 0.01
    # stream order follows event time (apart from late and out-of-order records)
    on_time = [event_time(r) for r in sorted(records, key=lambda r: r.seq) if r.kind == SUBMISSION and not r.late]
    assert sum(a > b for a, b in zip(on_time, on_time[1:], strict=False)) < 0.01 * len(on_time)


def test_ids_are_uuids_from_the_seeded_rng(big):
    records, _ = big
    import uuid

    ids = [r.submission_id for r in records if r.kind == SUBMISSION]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids[:100])
    for r in records[:50]:
        assert dict(r.headers) == {"schema_version": str(r.schema_version).encode(),
                                   "content-type": b"application/json", "producer": PRODUCER_ID.encode()}


def test_in_order_when_out_of_order_rate_is_zero():
    records, report = generate(1_000, GeneratorConfig(out_of_order_rate=0.0))
    assert [r.seq for r in records] == list(range(1_000)) and report.out_of_order == 0


def test_stop_ends_the_stream_and_the_report_stays_exact():
    stream = SurveyStream(10_000, GeneratorConfig(seed=9, out_of_order_rate=0.5, track_expected=True))
    out = []
    for r in stream:
        out.append(r)
        if len(out) == 1_500:
            stream.stop()
    assert 1_500 <= len(out) <= 1_500 + stream.config.shuffle_window + 1
    assert sorted(r.seq for r in out) == list(range(len(out)))
    assert_report_matches(out, stream.report)


@pytest.mark.parametrize("bad", [
    {"malformed_rate": 1.5}, {"duplicate_rate": 0.6, "correction_rate": 0.3, "malformed_rate": 0.2},
    {"v2_after_fraction": 2.0}, {"malformed_kinds": ("not_a_reason",)}, {"shuffle_window": 0},
    {"late_lag_hours": (5.0, 1.0)}, {"respondent_mix": {"principal": 1.0}},
])
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        GeneratorConfig(**bad)


def test_only_chosen_malformed_kinds_and_no_students_when_excluded():
    cfg = GeneratorConfig(malformed_rate=0.2, malformed_kinds=("invalid_json", "unknown_dbn"),
                          respondent_mix={"parent": 1.0, "teacher": 1.0})
    records, report = generate(1_000, cfg)
    assert set(report.malformed) == {"invalid_json", "unknown_dbn"}
    assert set(report.valid_by_respondent_type) == {"parent", "teacher"}


def test_cli_arguments_map_to_the_config():
    import argparse

    from school_equity.kafka.producer import add_producer_arguments, config_from_args

    parser = add_producer_arguments(argparse.ArgumentParser())
    assert config_from_args(parser.parse_args([])) == GeneratorConfig()
    args = parser.parse_args(["-n", "10", "--seed", "5", "--v2-after", "2", "--window-start", "2026-02-23",
                              "--malformed-rate", "0.05", "--rate", "100"])
    cfg = config_from_args(args)
    assert (args.events, args.rate, cfg.seed, cfg.v2_after_fraction, cfg.malformed_rate) == (10, 100.0, 5, None, 0.05)
    assert cfg.window_start_date == date(2026, 2, 23)
