"""Bronze -> Silver parsing: reason codes, the fast path against the reference, in-batch
dedup, event-time normalisation, the v2 column, and the Silver contracts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import school_equity.silver.parse as parse_module
from assets_tests.silver.silver_events import (
    T0,
    bronze_frame,
    encode,
    event,
    malformed_cases,
    synthetic_payloads,
    without,
)
from school_equity.contracts.checks import validate_or_raise
from school_equity.contracts.stream import (
    QUARANTINE_REASONS,
    SilverSurveyAnswers,
    SilverSurveyQuarantine,
    SilverSurveySubmissions,
)
from school_equity.silver.merge import key_slices
from school_equity.silver.parse import BatchAnswers, parse_batch, parse_payload


def assert_same_parse(a, b):
    keys = (["submission_id"], ["submission_id", "question_id"], ["kafka_partition", "kafka_offset"])
    pairs = ((a.submissions, b.submissions), (a.answers, b.answers), (a.quarantine, b.quarantine))
    for (fa, fb), key in zip(pairs, keys, strict=True):
        assert_frame_equal(fa.sort(key), fb.sort(key))
    assert a.stats.valid_records == b.stats.valid_records and a.stats.quarantined == b.stats.quarantined


def test_every_malformed_kind_gets_its_reason_and_detail():
    cases = malformed_cases()
    assert {c[2] for c in cases} == set(QUARANTINE_REASONS)  # every reason code is exercised
    good = [encode(event("good-1")), encode(event("good-2", schema_version=2))]
    parsed = parse_batch(bronze_frame([c[1] for c in cases] + good))
    q = parsed.quarantine.sort("kafka_offset")
    assert q.height == len(cases)
    for (name, payload, reason, fragment), row in zip(cases, q.iter_rows(named=True), strict=True):
        assert row["reason_code"] == reason, name
        assert fragment in row["reason_detail"], (name, row["reason_detail"])
        expected_raw = None if payload is None else payload.decode("utf-8", errors="replace")
        assert row["raw_payload"] == expected_raw, name
    # coordinates and the submission id (when readable) travel with the record
    assert q.get_column("kafka_offset").to_list() == list(range(len(cases)))
    assert q.filter(pl.col("reason_code") == "unknown_dbn").get_column("submission_id").to_list() == ["m-0"]
    assert q.filter(pl.col("reason_code") == "invalid_json").get_column("submission_id").null_count() == 6
    assert parsed.submissions.get_column("submission_id").sort().to_list() == ["good-1", "good-2"]
    s = parsed.stats
    assert s.records == s.valid_records + s.quarantined == len(cases) + 2
    validate_or_raise(parsed.quarantine, SilverSurveyQuarantine)


def test_first_failing_rule_wins():
    # unknown dbn AND an out-of-range answer AND a bad respondent type: invalid_value comes first
    d = event("x", dbn="99X999", answers={"P01": 9}, respondent_type="alien")
    assert parse_payload(encode(d)).reason_code == "invalid_value"
    d = event("x", dbn="99X999", answers={"P01": 9})
    assert parse_payload(encode(d)).reason_code == "unknown_dbn"
    d = event("x", answers={"P01": 9, "P99": 1})
    assert parse_payload(encode(d)).reason_code == "unknown_question"
    # a missing field is reported before a wrong type elsewhere
    d = without({**event("x"), "survey_year": "2026"}, "dbn")
    r = parse_payload(encode(d))
    assert (r.reason_code, r.reason_detail) == ("missing_field", "dbn is missing")


def test_valid_records_parse_to_typed_rows():
    t = datetime(2026, 3, 2, 9, 30, 15, 250000, tzinfo=UTC)
    d = event("s-1", respondent_type="teacher", event_time="2026-03-02T04:30:15.25-05:00",
              answers={"T01": 1, "T03": 4}, schema_version=2, language="zh")
    parsed = parse_batch(bronze_frame([encode(d)], batch_id="b000000042", partition=3, start_offset=100))
    sub = parsed.submissions.row(0, named=True)
    assert sub["event_time"] == t
    assert (sub["schema_version"], sub["language"], sub["answer_count"]) == (2, "zh", 2)
    assert (sub["device_type"], sub["device_os"], sub["app_version"]) == ("mobile", "iOS 18.1", "3.4.0")
    assert (sub["kafka_partition"], sub["kafka_offset"], sub["batch_id"], sub["batch_seq"]) == (3, 100, "b000000042", 42)
    ans = parsed.answers.sort("question_id")
    assert ans.select("question_id", "answer_value").rows() == [("T01", 1), ("T03", 4)]
    assert ans.get_column("respondent_type").unique().to_list() == ["teacher"]
    validate_or_raise(parsed.submissions, SilverSurveySubmissions)
    validate_or_raise(parsed.answers, SilverSurveyAnswers)


def test_newest_version_in_batch_wins_with_exactly_its_answers():
    v1 = event("s", event_time=T0, answers={"P01": 1, "P02": 1, "P03": 1})
    v2 = event("s", event_time=T0 + timedelta(hours=1), answers={"P01": 4})
    late_dup_of_v1 = v1
    same_time_later_offset = event("t", event_time=T0, answers={"P01": 2})
    same_time_earlier_offset = event("t", event_time=T0, answers={"P01": 3})
    only_version = event("u", event_time=T0 + timedelta(hours=2), answers={"P02": 3})
    values = [encode(x) for x in (v1, v2, late_dup_of_v1, same_time_earlier_offset, same_time_later_offset,
                                  only_version)]
    parsed = parse_batch(bronze_frame(values))
    subs = {r["submission_id"]: r for r in parsed.submissions.iter_rows(named=True)}
    assert subs["s"]["kafka_offset"] == 1 and subs["s"]["answer_count"] == 1
    assert subs["t"]["kafka_offset"] == 4
    assert subs["u"]["kafka_offset"] == 5
    assert parsed.answers.sort("submission_id").select("submission_id", "question_id", "answer_value").rows() == [
        ("s", "P01", 4), ("t", "P01", 2), ("u", "P02", 3)
    ]
    assert parsed.stats.superseded_in_batch == 3
    # the winners stay in record order (not in the order versions are compared in)
    assert parsed.submissions.get_column("submission_id").to_list() == ["s", "t", "u"]


def test_answers_are_held_narrow_and_built_by_part():
    values = synthetic_payloads(600, seed=5, malformed_every=30)
    parsed = parse_batch(bronze_frame(values))
    rows = parsed.answer_rows
    whole = parsed.answers
    key = ["submission_id", "question_id"]
    assert whole.columns == list(SilverSurveyAnswers.to_schema().columns) and whole.height == rows.height > 600
    # the repeated submission columns are held once per version, not per answer
    assert rows.values.columns == ["_row", "question_id", "answer_value"]
    assert rows.versions.height == parsed.submissions.height
    # the parts (chunks of submissions) cover every row once and split the key
    parts = list(rows.parts(versions_per_part=97))
    assert len(parts) == -(-parsed.submissions.height // 97)
    assert_frame_equal(pl.concat(parts).sort(key), whole.sort(key))
    ids = [set(p.get_column("submission_id")) for p in parts]
    assert sum(map(len, ids)) == len(set().union(*ids))
    # a part reads a run of the values sorted by version: frames given in any order are sorted
    shuffled = BatchAnswers(rows.values.sample(fraction=1.0, shuffle=True, seed=1), rows.versions.reverse())
    assert_frame_equal(pl.concat(shuffled.parts(versions_per_part=97)).sort(key), whole.sort(key))
    # a key range's rows are the whole frame's rows in that range
    by_range = [rows.filter(sl.expr()) for sl in key_slices()]
    assert sum(1 for p in by_range if p.height) > 1
    assert_frame_equal(pl.concat(by_range).sort(key), whole.sort(key))
    # ... and of some of its versions (the merge's winners), the rows of exactly those
    # versions: a version of the range that is not among them, or one with another
    # version's time, brings none
    sl = next(s for s in key_slices() if rows.filter(s.expr()).height)
    version = ["submission_id", "event_time", "kafka_partition", "kafka_offset"]
    in_range = parsed.submissions.filter(sl.expr()).select(version)
    won = pl.concat([
        in_range.head(in_range.height // 2),
        in_range.tail(1).with_columns(pl.col("event_time") + pl.duration(seconds=1)),
    ])
    expected = whole.join(won, on=version, how="semi")
    assert 0 < expected.height < rows.filter(sl.expr()).height
    assert_frame_equal(rows.filter(sl.expr(), of=won).sort(key), expected.sort(key))
    assert rows.filter(sl.expr(), of=won.head(0)).height == 0
    assert rows.head(0).schema == whole.schema
    validate_or_raise(whole, SilverSurveyAnswers)


def test_a_key_range_rows_come_in_arrival_order():
    # Bronze holds a batch partition by partition, so record order is not offset order:
    # partition 0's offsets 0..299, then partition 1's 0..299. The merge writes a range's
    # rows by kafka_offset (ties in record order) and does not sort rows that come so.
    values = synthetic_payloads(600, seed=7)
    parsed = parse_batch(bronze_frame(values, partitions=[0] * 300 + [1] * 300,
                                      offsets=list(range(300)) * 2))
    whole = parsed.answers
    assert not whole.get_column("kafka_offset").is_sorted()
    seen = 0
    for sl in key_slices():
        got = parsed.answer_rows.filter(sl.expr())
        assert_frame_equal(got, whole.filter(sl.expr()).sort("kafka_offset", maintain_order=True))
        seen += got.height
    assert seen == whole.height


def test_v2_column_appears_only_with_v2_records():
    only_v1 = parse_batch(bronze_frame([encode(event("a")), encode(event("b", language="xx"))]))
    assert "language" not in only_v1.submissions.columns  # and a v1 language is ignored
    mixed = parse_batch(bronze_frame([encode(event("a")), encode(event("b", schema_version=2, language="es"))]))
    langs = dict(mixed.submissions.select("submission_id", "language").rows())
    assert langs == {"a": None, "b": "es"}
    validate_or_raise(only_v1.submissions, SilverSurveySubmissions)
    validate_or_raise(mixed.submissions, SilverSurveySubmissions)


def test_empty_batch_gives_empty_contract_frames():
    parsed = parse_batch(bronze_frame([]))
    assert parsed.stats.records == 0
    validate_or_raise(parsed.submissions, SilverSurveySubmissions)
    validate_or_raise(parsed.answers, SilverSurveyAnswers)
    validate_or_raise(parsed.quarantine, SilverSurveyQuarantine)


def test_fast_path_takes_the_common_layout_and_leaves_the_rest_to_the_reference():
    ok = event("plain")
    unusual_but_valid = [
        json.dumps(event("spaced"), indent=2).encode(),  # any JSON whitespace still takes the fast path
        encode(dict(reversed(list(event("reordered").items())))),
        encode(event("escaped", device={"type": "mobile", "os": 'i"OS"', "app_version": "1"})),
        encode(event("unicode", device={"type": "móvil", "os": "iOS", "app_version": "1"}), ensure_ascii=False),
        encode(event("zulu", event_time="2026-03-02T14:00:00Z")),
        encode(event("extra", client={"ip": "x"})),
        b'{"schema_version":2,' + encode(event("dupkey"))[1:],  # json.loads keeps the last: v1
        encode(event("dupanswer"))[:-1].replace(b'"answers":{', b'"answers":{"P01":1,') + b"}",
        encode(event("braces", device={"type": "{x}", "os": "iOS", "app_version": "1"})),
    ]
    parsed = parse_batch(bronze_frame([encode(ok)] + unusual_but_valid))
    assert parsed.stats.quarantined == 0, parsed.quarantine.select("reason_code", "reason_detail").rows()
    assert parsed.stats.fast_path == 3  # "plain", "spaced" and "unicode"
    assert parsed.submissions.filter(pl.col("submission_id") == "dupkey").get_column("schema_version").item() == 1
    assert_same_parse(parsed, parse_batch(bronze_frame([encode(ok)] + unusual_but_valid), fast_path=False))


def test_the_parse_hands_over_the_answers_in_record_order(monkeypatch):
    """The fast path's answers and the reference's each come in record order and are merged,
    so BatchAnswers, which needs its values sorted by record, does not sort them again (5.6M
    answers of a 1M-event batch: 0.2 s). Records of both paths alternate here."""
    plain = [encode(event(f"plain{i}")) for i in range(4)]
    odd = [
        encode(dict(reversed(list(event("reordered").items())))),
        encode(event("escaped", device={"type": "mobile", "os": 'i"OS"', "app_version": "1"})),
        encode(event("extra", client={"ip": "x"})),
    ]
    values = [v for pair in zip(plain, [*odd, b"{broken"], strict=True) for v in pair]
    sorts = []
    real_sort = pl.DataFrame.sort
    monkeypatch.setattr(pl.DataFrame, "sort", lambda self, *a, **k: sorts.append((a, k)) or real_sort(self, *a, **k))
    parsed = parse_batch(bronze_frame(values))
    assert (parsed.stats.fast_path, parsed.stats.reference_path, parsed.stats.quarantined) == (4, 4, 1)
    rows = parsed.answer_rows.values.get_column("_row")
    assert rows.is_sorted() and rows.n_unique() == 7
    assert (("_row",), {"maintain_order": True}) not in sorts
    assert_same_parse(parsed, parse_batch(bronze_frame(values), fast_path=False))
    # given out of order, they are sorted
    shuffled = parsed.answer_rows.values.reverse()
    assert BatchAnswers(shuffled, parsed.answer_rows.versions).values.get_column("_row").is_sorted()
    assert (("_row",), {"maintain_order": True}) in sorts


def test_fast_path_matches_reference_on_a_realistic_mix():
    values = synthetic_payloads(3000, seed=3, malformed_every=25)
    b = bronze_frame(values)
    fast, ref = parse_batch(b), parse_batch(b, fast_path=False)
    assert fast.stats.fast_path > 2500
    assert_same_parse(fast, ref)
    assert fast.stats.records == fast.stats.valid_records + fast.stats.quarantined


def test_fast_path_in_slices_gives_the_whole_batch_parse(monkeypatch):
    """The fast path decodes a batch in slices of FAST_PATH_SLICE records; slice edges
    (a submission's versions on both sides, malformed records) change nothing."""
    values = synthetic_payloads(3000, seed=5, malformed_every=25)
    b = bronze_frame(values)
    whole = parse_batch(b)
    monkeypatch.setattr(parse_module, "FAST_PATH_SLICE", 7)
    sliced = parse_batch(b)
    assert sliced.stats == whole.stats and sliced.stats.superseded_in_batch > 0
    assert_same_parse(sliced, whole)


# -- property: the fast path agrees with the reference on arbitrary near-valid payloads ---
# Each field's candidates: valid values, values just outside a rule, and wrong JSON types.
_MUTATIONS: dict[str, list] = {
    "schema_version": [1, 2, 3, 0, "1", 1.0, True, None],
    "submission_id": ["", " ", "a b", 'q"t', "x{y}", 7, None],
    "dbn": ["01M015", "02M047", "99X999", "01m015", " 01M015", 15, None],
    "survey_year": [2026, 2000, 2100, 1999, 2101, 999, "2026", 2026.0, None],
    "respondent_type": ["parent", "teacher", "student", "Parent", "", None, 1],
    "event_time": ["2026-03-02T10:00:00+00:00", "2026-03-02T10:00:00.123-04:00", "2026-03-02T10:00:00.1234567+00:00",
                   "2026-02-30T10:00:00+00:00", "2026-03-02T24:00:00+00:00", "2026-03-02T10:00:00",
                   "2026-03-02T10:00:00Z", "2026-03-02 10:00:00+00:00", "0000-03-02T10:00:00+00:00", "yesterday",
                   20260302, None],
    "answers": [{}, {"P01": 1}, {"P01": 4, "P06": 1}, {"P01": 5}, {"P01": 0}, {"P01": -1}, {"T01": 2}, {"S04": 4},
                {"P99": 2}, {"p01": 2}, {"P01": "3"}, {"P01": 3.0}, {"P01": True}, {"P01": None}, [1, 2], "P01", None],
    "device": [{"type": "mobile", "os": "iOS", "app_version": "1"}, {"type": "mobile", "os": "iOS"},
               {"type": 1, "os": "iOS", "app_version": "1"}, {"type": "m", "os": "o", "app_version": None},
               {"type": "m", "os": "o", "app_version": "1", "extra": 1}, "phone", None],
    "language": ["es", "", 1, None],
}


def test_fast_path_agrees_with_reference_on_every_single_mutation():
    """Exhaustive: each candidate value of each field, in place (the layout the fast path
    recognises), for every respondent type and schema version; plus each field removed."""
    values = []
    for rtype in ("parent", "teacher", "student"):
        for version in (1, 2):
            for name, candidates in _MUTATIONS.items():
                for candidate in [*candidates, _REMOVE]:
                    d = event(f"sid-{len(values)}", schema_version=version, respondent_type=rtype,
                              answers={"parent": {"P01": 2}, "teacher": {"T02": 3}, "student": {"S04": 1}}[rtype])
                    if candidate is _REMOVE:
                        d.pop(name, None)
                    else:
                        d[name] = candidate
                    values.append(encode(d))
    b = bronze_frame(values, keys=[None] * len(values))
    fast, ref = parse_batch(b), parse_batch(b, fast_path=False)
    assert fast.stats.fast_path > 60 and fast.stats.quarantined > 300
    assert_same_parse(fast, ref)


def test_questions_newer_than_the_record_are_unknown_on_both_paths():
    from school_equity.reference import Question, questions

    catalog = {**questions(), "P07": Question("P07", "parent", "Trust", 1, 4, introduced_in_schema_version=2)}
    values = [encode(event("a", answers={"P07": 2})), encode(event("b", answers={"P07": 2}, schema_version=2))]
    b = bronze_frame(values)
    fast, ref = parse_batch(b, catalog=catalog), parse_batch(b, catalog=catalog, fast_path=False)
    assert_same_parse(fast, ref)
    assert fast.quarantine.select("submission_id", "reason_code").rows() == [("a", "unknown_question")]
    assert "schema_version >= 2" in fast.quarantine.get_column("reason_detail").item()
    assert fast.stats.fast_path == 1


_REMOVE = object()


@st.composite
def payloads(draw) -> bytes:
    rtype = draw(st.sampled_from(["parent", "teacher", "student"]))
    base = event("sid", schema_version=draw(st.sampled_from([1, 2])), respondent_type=rtype,
                 answers={"parent": {"P01": 2, "P03": 4}, "teacher": {"T02": 3}, "student": {"S04": 1}}[rtype])
    for name in draw(st.lists(st.sampled_from(sorted(_MUTATIONS)), min_size=1, max_size=3, unique=True)):
        if draw(st.integers(0, 9)) == 0:
            base.pop(name, None)
        else:  # in place: the key keeps its position, so the fast path still sees the layout
            base[name] = draw(st.sampled_from(_MUTATIONS[name]))
    if draw(st.integers(0, 9)) == 0:
        base = dict(sorted(base.items()))
    separators = draw(st.sampled_from([(",", ":"), (",", ":"), (", ", ": ")]))
    return json.dumps(base, separators=separators).encode()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads(), min_size=1, max_size=30))
def test_property_fast_path_agrees_with_reference(values):
    # distinct submission ids, so that in-batch dedup cannot hide a disagreement
    values = [v.replace(b'"sid"', f'"sid-{i}"'.encode()) for i, v in enumerate(values)]
    b = bronze_frame(values, keys=[None] * len(values))
    fast, ref = parse_batch(b), parse_batch(b, fast_path=False)
    assert_same_parse(fast, ref)
    assert fast.stats == ref.stats._replace(fast_path=fast.stats.fast_path, reference_path=fast.stats.reference_path)


@pytest.mark.parametrize("value", [b"", b"   ", b"{}", b"null", b"1"])
def test_degenerate_payloads_are_invalid_json_or_missing_fields(value):
    r = parse_payload(value)
    assert r.reason_code == ("missing_field" if value == b"{}" else "invalid_json")
