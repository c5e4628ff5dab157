"""Hand-made survey events and Bronze frames for the Silver tests (and the parse bench).

Built here on purpose rather than with the project's producer: each malformed kind is
spelled out next to the reason code it must get.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from school_equity.bronze.store import BRONZE_SCHEMA, range_file
from school_equity.lake import Lake
from school_equity.reference import questions_for, school_dbns

TOPIC = "survey_submissions"
T0 = datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)
DBNS = sorted(school_dbns())


def event(
    submission_id: str | None = None,
    *,
    respondent_type: str = "parent",
    dbn: str = "01M015",
    event_time: datetime | str = T0,
    answers: dict | None = None,
    schema_version: int = 1,
    language: str | None = "es",
    **overrides,
) -> dict:
    """A valid event (as a dict); ``overrides`` replace or add top-level fields."""
    qs = questions_for(respondent_type)
    d = {
        "schema_version": schema_version,
        "submission_id": submission_id or str(uuid.uuid4()),
        "dbn": dbn,
        "survey_year": 2026,
        "respondent_type": respondent_type,
        "event_time": event_time.isoformat() if isinstance(event_time, datetime) else event_time,
        "answers": answers if answers is not None else {q.question_id: q.scale_min + 1 for q in qs[:4]},
        "device": {"type": "mobile", "os": "iOS 18.1", "app_version": "3.4.0"},
    }
    if schema_version >= 2:
        d["language"] = language
    d.update(overrides)
    return d


def encode(d: dict | list | str, **dumps) -> bytes:
    return json.dumps(d, separators=(",", ":"), **dumps).encode()


def without(d: dict, *fields: str) -> dict:
    return {k: v for k, v in d.items() if k not in fields}


def malformed_cases() -> list[tuple[str, bytes | None, str, str]]:
    """(name, payload, reason_code, a fragment the reason_detail must contain)."""
    ok = event("m-0")
    v2 = event("m-v2", schema_version=2)
    return [
        ("null_value", None, "invalid_json", "null"),
        ("not_utf8", b'{"submission_id":"\xff\xfe"}', "invalid_json", "UTF-8"),
        ("truncated", encode(ok)[:40], "invalid_json", "not JSON"),
        ("not_json", b"hello", "invalid_json", "not JSON"),
        ("array", encode([1, 2]), "invalid_json", "array"),
        ("string_json", encode(json.dumps(ok)), "invalid_json", "string"),
        ("no_schema_version", encode(without(ok, "schema_version")), "missing_field", "schema_version"),
        ("schema_version_str", encode({**ok, "schema_version": "1"}), "wrong_type", "schema_version"),
        ("schema_version_3", encode({**ok, "schema_version": 3}), "unsupported_schema_version", "3"),
        ("no_dbn", encode(without(ok, "dbn")), "missing_field", "dbn"),
        ("null_event_time", encode({**ok, "event_time": None}), "missing_field", "event_time"),
        ("no_answers", encode(without(ok, "answers")), "missing_field", "answers"),
        ("no_device", encode(without(ok, "device")), "missing_field", "device"),
        ("no_device_os", encode({**ok, "device": {"type": "mobile", "app_version": "1"}}), "missing_field",
         "device.os"),
        ("v2_no_language", encode(without(v2, "language")), "missing_field", "language"),
        ("survey_year_str", encode({**ok, "survey_year": "2026a"}), "wrong_type", "survey_year"),
        ("survey_year_float", encode({**ok, "survey_year": 2026.0}), "wrong_type", "survey_year"),
        ("answers_list", encode({**ok, "answers": [1, 2, 3]}), "wrong_type", "answers"),
        ("answer_str", encode({**ok, "answers": {"P01": "3"}}), "wrong_type", "answers.P01"),
        ("answer_bool", encode({**ok, "answers": {"P01": True}}), "wrong_type", "answers.P01"),
        ("dbn_int", encode({**ok, "dbn": 15}), "wrong_type", "dbn"),
        ("device_str", encode({**ok, "device": "iphone"}), "wrong_type", "device"),
        ("bad_respondent", encode({**ok, "respondent_type": "alien"}), "invalid_value", "respondent_type"),
        ("event_time_word", encode({**ok, "event_time": "yesterday"}), "invalid_value", "event_time"),
        ("event_time_feb30", encode({**ok, "event_time": "2026-02-30T10:00:00+00:00"}), "invalid_value",
         "event_time"),
        ("event_time_naive", encode({**ok, "event_time": "2026-03-02T10:00:00"}), "invalid_value", "event_time"),
        ("survey_year_1999", encode({**ok, "survey_year": 1999}), "invalid_value", "survey_year"),
        ("blank_id", encode({**ok, "submission_id": "  "}), "invalid_value", "submission_id"),
        ("empty_answers", encode({**ok, "answers": {}}), "invalid_value", "answers"),
        ("unknown_dbn", encode({**ok, "dbn": "99X999"}), "unknown_dbn", "99X999"),
        ("unknown_question", encode({**ok, "answers": {"P01": 2, "P77": 3}}), "unknown_question", "P77"),
        ("other_respondent_question", encode({**ok, "answers": {"T01": 2}}), "unknown_question", "T01"),
        ("answer_high", encode({**ok, "answers": {"P01": 2, "P02": 9}}), "answer_out_of_range", "P02=9"),
        ("answer_zero", encode({**ok, "answers": {"P03": 0}}), "answer_out_of_range", "P03=0"),
    ]


def bronze_frame(
    values: list[bytes | None],
    *,
    batch_id: str = "b000000001",
    partition: int = 0,
    start_offset: int = 0,
    keys: list[bytes | None] | None = None,
    topic: str = TOPIC,
    offsets: list[int] | None = None,
    partitions: list[int] | None = None,
) -> pl.DataFrame:
    return pl.from_arrow(bronze_table(values, batch_id=batch_id, partition=partition, start_offset=start_offset,
                                      keys=keys, topic=topic, offsets=offsets, partitions=partitions))


def bronze_table(
    values: list[bytes | None],
    *,
    batch_id: str = "b000000001",
    partition: int = 0,
    start_offset: int = 0,
    keys: list[bytes | None] | None = None,
    topic: str = TOPIC,
    offsets: list[int] | None = None,
    partitions: list[int] | None = None,
) -> pa.Table:
    n = len(values)
    partitions = partitions if partitions is not None else [partition] * n
    offsets = offsets if offsets is not None else list(range(start_offset, start_offset + n))
    if keys is None:
        keys = []
        for v in values:
            try:
                keys.append(json.loads(v)["submission_id"].encode())
            except Exception:
                keys.append(None)
    ts = [T0 + timedelta(seconds=o) for o in offsets]
    return pa.Table.from_arrays(
        [
            pa.array([topic] * n, pa.string()),
            pa.array(partitions, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array(ts, pa.timestamp("ms", tz="UTC")),
            pa.array([0] * n, pa.int8()),
            pa.array(keys, pa.binary()),
            pa.array(values, pa.binary()),
            pa.array([[("schema_version", b"1"), ("content-type", b"application/json")]] * n,
                     BRONZE_SCHEMA.field("headers").type),
            pa.array([batch_id] * n, pa.string()),
            pa.array([T0 + timedelta(hours=1)] * n, pa.timestamp("us", tz="UTC")),
        ],
        schema=BRONZE_SCHEMA,
    )


def write_bronze(lake: Lake, table: pa.Table) -> str:
    """Land ``table`` (one batch, one topic-partition) where the Bronze asset would."""
    batch_id = table.column("batch_id")[0].as_py()
    part = table.column("partition")[0].as_py()
    offsets = table.column("offset").to_pylist()
    path = range_file(batch_id, table.column("topic")[0].as_py(), part, min(offsets), max(offsets) + 1)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    lake.write_bytes_atomic(path, buf.getvalue())
    return path


def synthetic_payloads(n: int, *, seed: int = 7, malformed_every: int = 100, v2_from: float = 0.5,
                       versions_per_submission: float = 1.05) -> list[bytes]:
    """A realistic mix for benchmarks: valid v1/v2 events, corrections, ~1% malformed."""
    rng = random.Random(seed)
    cases = [c[1] for c in malformed_cases()]
    types = ["parent", "student", "teacher"]
    ids: list[str] = []
    out = []
    for i in range(n):
        if malformed_every and i % malformed_every == malformed_every - 1:
            out.append(cases[rng.randrange(len(cases))])
            continue
        if ids and rng.random() < versions_per_submission - 1:
            sid = ids[rng.randrange(len(ids))]
        else:
            sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            ids.append(sid)
        rtype = types[rng.randrange(3)]
        qs = questions_for(rtype)
        answers = {q.question_id: rng.randint(q.scale_min, q.scale_max) for q in qs if rng.random() < 0.95}
        answers = answers or {qs[0].question_id: qs[0].scale_min}
        version = 2 if i >= v2_from * n else 1
        t = T0 + timedelta(microseconds=rng.randrange(0, 35 * 86_400_000_000))
        out.append(encode(event(sid, respondent_type=rtype, dbn=DBNS[rng.randrange(len(DBNS))], event_time=t,
                                answers=answers, schema_version=version, language=rng.choice(["en", "es", "zh"]))))
    return out
