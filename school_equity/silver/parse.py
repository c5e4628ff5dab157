"""Bronze survey events -> Silver frames (submissions, answers, quarantine). Pure: no
Dagster, no I/O.

Two paths, one meaning:

- ``parse_payload`` is the reference: plain Python (``json.loads``) applying the rules
  in order and naming the first one a record breaks. It defines what is valid.
- ``parse_batch`` first runs a vectorised polars fast path that recognises records
  which are *certainly* valid, and sends every other record to ``parse_payload``.
  The fast path never rejects anything; it only has to be sound (whatever it accepts,
  the reference accepts with the same values). Malformed records are about 1% of a
  stream, so the Python path sees few of them.

  Soundness rests on one regular expression for the documented layout of an event
  (docs/ARCHITECTURE.md field order, as the producer writes it, any JSON whitespace)
  in which every value has a strict form: strings without escapes or braces,
  integers without leading zeros, the event time as ``YYYY-MM-DDTHH:MM:SS[.ffffff]
  +HH:MM`` (where polars and ``datetime.fromisoformat`` agree), answers as a flat
  object of integers. Every payload it matches is a valid JSON object with exactly
  those members; one pass captures them all. The remaining rules are vectorised
  checks (known DBN, year range, v2 ``language``, each answer's question, respondent
  type, schema version and scale, and every answer key a distinct catalog id). A
  record in another field order, with an escape or an extra field takes the
  reference path: correct, about 2.5x slower per record.

Rule order (the reason code of a quarantined record is the first rule it breaks):
``invalid_json`` (no payload, not UTF-8, not JSON, not an object) ->
``schema_version`` (``missing_field`` / ``wrong_type`` / ``unsupported_schema_version``;
it decides which fields are required) -> ``missing_field`` (absent or null; v2 also
requires ``language``; then ``device.type|os|app_version``) -> ``wrong_type`` (fields,
device fields, then each answer value) -> ``invalid_value`` (blank submission_id,
survey_year range, respondent_type, event_time not ISO-8601 with an offset, empty
answers) -> ``unknown_dbn`` -> ``unknown_question`` (not in the catalog, not asked of
the respondent type, or newer than the record's schema version) ->
``answer_out_of_range`` (outside the question's scale).

Within a batch only the newest version of each submission is kept: greatest
(event_time, kafka_partition, kafka_offset). Nothing is dropped silently:
``records == valid_records + quarantined`` is enforced for every batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import polars as pl

from school_equity.contracts.stream import (
    ANSWER_OUT_OF_RANGE,
    INVALID_JSON,
    INVALID_VALUE,
    MAX_SURVEY_YEAR,
    MIN_SURVEY_YEAR,
    MISSING_FIELD,
    SUPPORTED_SCHEMA_VERSIONS,
    UNKNOWN_DBN,
    UNKNOWN_QUESTION,
    UNSUPPORTED_SCHEMA_VERSION,
    WRONG_TYPE,
    SilverSurveyAnswers,
    SilverSurveyQuarantine,
    SilverSurveySubmissions,
)
from school_equity.reference import RESPONDENT_TYPES, Question, questions, school_dbns

# Columns that exist only from this schema version on: they appear in a Silver frame
# (and so in the Delta table) once a batch holds a record of that version.
VERSIONED_COLUMNS = {"language": 2}
NEWEST_FIRST_KEY = ["event_time", "kafka_partition", "kafka_offset"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DETAIL = 300


def _dtypes(model) -> dict[str, pl.DataType]:
    return {n: c.dtype.type for n, c in model.to_schema().columns.items()}


SUBMISSION_DTYPES = _dtypes(SilverSurveySubmissions)
ANSWER_DTYPES = _dtypes(SilverSurveyAnswers)
QUARANTINE_DTYPES = _dtypes(SilverSurveyQuarantine)


# -- the reference: one record in Python --------------------------------------------
@dataclass(frozen=True)
class ParsedEvent:
    submission_id: str
    dbn: str
    survey_year: int
    respondent_type: str
    event_time_us: int  # microseconds since the epoch, UTC
    schema_version: int
    language: str | None
    device_type: str
    device_os: str
    app_version: str
    answers: tuple[tuple[str, int], ...]  # (question_id, value) in payload order


@dataclass(frozen=True)
class Rejection:
    reason_code: str
    reason_detail: str
    submission_id: str | None = None


_FIELD_TYPES: dict[str, tuple[type, str]] = {
    "submission_id": (str, "string"),
    "dbn": (str, "string"),
    "survey_year": (int, "integer"),
    "respondent_type": (str, "string"),
    "event_time": (str, "string"),
    "answers": (dict, "object"),
    "device": (dict, "object"),
    "language": (str, "string"),
}
_REQUIRED = ("submission_id", "dbn", "survey_year", "respondent_type", "event_time", "answers", "device")
_DEVICE_FIELDS = ("type", "os", "app_version")


def _clip(s: str) -> str:
    return s if len(s) <= _MAX_DETAIL else s[:_MAX_DETAIL] + "..."


def _json_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {json.dumps(v)}"
    if isinstance(v, int | float):
        return f"number {v!r}"
    if isinstance(v, str):
        return f"string {json.dumps(v)}"
    if isinstance(v, list):
        return "array"
    return "object"


def _is_type(v: Any, t: type) -> bool:
    if t is int:
        return type(v) is int  # JSON true/false are bools in Python, not integers
    return isinstance(v, t)


def _required_fields(schema_version: int) -> tuple[str, ...]:
    extra = tuple(c for c, v in VERSIONED_COLUMNS.items() if schema_version >= v)
    return _REQUIRED + extra


def parse_event_time(s: str) -> int | None:
    """ISO-8601 with a UTC offset -> microseconds since the epoch (UTC); None if invalid."""
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    if t.tzinfo is None or t.utcoffset() is None:
        return None
    try:
        return (t - _EPOCH) // timedelta(microseconds=1)
    except OverflowError:
        return None


def parse_payload(
    value: bytes | None,
    *,
    catalog: dict[str, Question] | None = None,
    dbns: frozenset[str] | None = None,
) -> ParsedEvent | Rejection:
    """Apply every rule to one Kafka record value; the reference for what is valid."""
    catalog = questions() if catalog is None else catalog
    dbns = school_dbns() if dbns is None else dbns
    if value is None:
        return Rejection(INVALID_JSON, "no payload (the record value is null)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejection(INVALID_JSON, f"payload is not UTF-8 (invalid byte at position {e.start})")
    try:
        obj = json.loads(text)
    except ValueError as e:
        return Rejection(INVALID_JSON, _clip(f"payload is not JSON: {e}"))
    except RecursionError:
        return Rejection(INVALID_JSON, "payload is not JSON: nested too deeply")
    if not isinstance(obj, dict):
        return Rejection(INVALID_JSON, f"payload is a JSON {_json_kind(obj).split(' ')[0]}, not an object")

    sid = obj.get("submission_id")
    sid = sid if isinstance(sid, str) else None

    def reject(code: str, detail: str) -> Rejection:
        return Rejection(code, _clip(detail), sid)

    def absent(name: str, container: dict, label: str) -> Rejection:
        how = "is null" if name in container else "is missing"
        return reject(MISSING_FIELD, f"{label} {how}")

    sv = obj.get("schema_version")
    if sv is None:
        return absent("schema_version", obj, "schema_version")
    if not _is_type(sv, int):
        return reject(WRONG_TYPE, f"schema_version: expected integer, got {_json_kind(sv)}")
    if sv not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_SCHEMA_VERSIONS))
        return reject(UNSUPPORTED_SCHEMA_VERSION, f"schema_version {sv} (supported: {supported})")

    required = _required_fields(sv)
    for f in required:
        if obj.get(f) is None:
            return absent(f, obj, f)
    device = obj["device"]
    if isinstance(device, dict):
        for f in _DEVICE_FIELDS:
            if device.get(f) is None:
                return absent(f, device, f"device.{f}")

    for f in required:
        t, label = _FIELD_TYPES[f]
        if not _is_type(obj[f], t):
            return reject(WRONG_TYPE, f"{f}: expected {label}, got {_json_kind(obj[f])}")
    for f in _DEVICE_FIELDS:
        if not isinstance(device[f], str):
            return reject(WRONG_TYPE, f"device.{f}: expected string, got {_json_kind(device[f])}")
    answers: dict = obj["answers"]
    for qid, v in answers.items():
        if not _is_type(v, int):
            return reject(WRONG_TYPE, f"answers.{qid}: expected integer, got {_json_kind(v)}")

    if not obj["submission_id"].strip():
        return reject(INVALID_VALUE, "submission_id is blank")
    year = obj["survey_year"]
    if not MIN_SURVEY_YEAR <= year <= MAX_SURVEY_YEAR:
        return reject(INVALID_VALUE, f"survey_year {year} outside {MIN_SURVEY_YEAR}..{MAX_SURVEY_YEAR}")
    rtype = obj["respondent_type"]
    if rtype not in RESPONDENT_TYPES:
        return reject(INVALID_VALUE, f"respondent_type {json.dumps(rtype)} (expected one of {', '.join(RESPONDENT_TYPES)})")
    event_time_us = parse_event_time(obj["event_time"])
    if event_time_us is None:
        return reject(INVALID_VALUE, f"event_time {json.dumps(obj['event_time'])} is not ISO-8601 with a UTC offset")
    if not answers:
        return reject(INVALID_VALUE, "answers is empty")

    if obj["dbn"] not in dbns:
        return reject(UNKNOWN_DBN, f"dbn {json.dumps(obj['dbn'])} is not a known school")

    for qid in answers:
        q = catalog.get(qid)
        if q is None:
            return reject(UNKNOWN_QUESTION, f"question {json.dumps(qid)} is not in the catalog")
        if q.respondent_type != rtype:
            return reject(UNKNOWN_QUESTION, f"question {qid} is asked of {q.respondent_type}s, not {rtype}s")
        if q.introduced_in_schema_version > sv:
            return reject(
                UNKNOWN_QUESTION, f"question {qid} needs schema_version >= {q.introduced_in_schema_version}, got {sv}"
            )
    for qid, v in answers.items():
        q = catalog[qid]
        if not q.scale_min <= v <= q.scale_max:
            return reject(ANSWER_OUT_OF_RANGE, f"{qid}={v} outside its scale {q.scale_min}..{q.scale_max}")

    return ParsedEvent(
        submission_id=obj["submission_id"],
        dbn=obj["dbn"],
        survey_year=year,
        respondent_type=rtype,
        event_time_us=event_time_us,
        schema_version=sv,
        language=obj["language"] if sv >= VERSIONED_COLUMNS["language"] else None,
        device_type=device["type"],
        device_os=device["os"],
        app_version=device["app_version"],
        answers=tuple(answers.items()),
    )


# -- the fast path: certainly-valid records, vectorised ------------------------------
_WS = r"[ \t\n\r]*"
_TEXT = r'[^"\\\x00-\x1f{}]*'  # a JSON string body without escapes, control characters or braces
_INT = r"-?(?:0|[1-9][0-9]*)"  # JSON forbids leading zeros
_ANSWER = rf'{_WS}"[A-Za-z0-9_]+"{_WS}:{_WS}{_INT}{_WS}'


def _field(name: str, value: str, *, first: bool = False) -> str:
    return ("" if first else ",") + _WS + '"' + name + '"' + _WS + ":" + _WS + value


def _quoted(group: str, body: str) -> str:
    return '"(?<' + group + ">" + body + ')"'


_EVENT_TIME = (
    r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]"
)
# Each payload this matches is a valid JSON object with exactly these members, so
# json.loads would read the same values (see the module docstring).
_LAYOUT = (
    r"^" + _WS + r"\{"
    + _field("schema_version", r"(?<schema_version>[12])", first=True)
    + _field("submission_id", _quoted("submission_id", r"[!#-\[\]-z|~]+"))  # printable ASCII but " \ { }
    + _field("dbn", _quoted("dbn", r"[0-9]{2}[A-Z][0-9]{3}"))
    + _field("survey_year", r"(?<survey_year>[1-9][0-9]{3})")
    + _field("respondent_type", _quoted("respondent_type", "parent|teacher|student"))
    + _field("event_time", _quoted("event_time", _EVENT_TIME))
    + _field("answers", r"\{(?<answers>" + _ANSWER + "(?:," + _ANSWER + r")*)\}")
    + _field(
        "device",
        r"\{"
        + _field("type", _quoted("device_type", _TEXT), first=True)
        + _field("os", _quoted("device_os", _TEXT))
        + _field("app_version", _quoted("app_version", _TEXT))
        + _WS + r"\}",
    )
    + "(?:" + _field("language", _quoted("language", _TEXT)) + ")?"
    + _WS + r"\}" + _WS + "$"
)


def _catalog_frame(catalog: dict[str, Question]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "question_id": [q.question_id for q in catalog.values()],
            "_q_respondent_type": [q.respondent_type for q in catalog.values()],
            "_q_min": [q.scale_min for q in catalog.values()],
            "_q_max": [q.scale_max for q in catalog.values()],
            "_q_since": [q.introduced_in_schema_version for q in catalog.values()],
        },
        schema_overrides={"_q_min": pl.Int64, "_q_max": pl.Int64, "_q_since": pl.Int64},
    )


def _utf8_or_none(v: bytes | None) -> str | None:
    try:
        return None if v is None else v.decode("utf-8")
    except UnicodeDecodeError:
        return None


FAST_PATH_SLICE = 25_000  # records the fast path decodes at once


def _payload_text(values: pl.Series, chunk: int = 4096) -> pl.Series:
    """Payloads as UTF-8 text; null where the bytes are not UTF-8 (the reference says why).

    One invalid payload fails a whole cast, so on failure the cast is retried per
    chunk and only the failing chunks are decoded record by record.
    """
    try:
        return values.cast(pl.String)
    except pl.exceptions.ComputeError:
        pass
    parts = []
    for start in range(0, values.len(), chunk):
        part = values.slice(start, chunk)
        try:
            parts.append(part.cast(pl.String))
        except pl.exceptions.ComputeError:
            parts.append(pl.Series(values.name, [_utf8_or_none(v) for v in part.to_list()], dtype=pl.String))
    return pl.concat(parts)


def layout_captures(frame: pl.LazyFrame, text: pl.Expr, *keep: str | pl.Expr) -> pl.LazyFrame:
    """``keep`` and the layout's captures of ``text``, one row per payload in the documented
    layout (``_LAYOUT``; the others are left out), the schema version and survey year as
    integers and the event time as a UTC timestamp (null where polars cannot read it, e.g.
    February 30th). No other rule is applied."""
    return (
        frame.select(*keep, _m=text.str.extract_groups(_LAYOUT))
        .unnest("_m")
        .filter(pl.col("schema_version").is_not_null())
        .with_columns(
            schema_version=pl.col("schema_version").cast(pl.Int64),
            survey_year=pl.col("survey_year").cast(pl.Int64),
            event_time=pl.col("event_time").str.to_datetime(
                "%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", time_zone="UTC", strict=False
            ),
        )
    )


def answer_members(captures: pl.LazyFrame, *keep: str) -> pl.LazyFrame:
    """One row per member of each captured ``answers`` object: ``keep``, ``question_id`` and
    ``answer_value`` (Int64; null where it is not an integer). The layout admits only
    `"key":int` members there, so splitting on "," and ":" is exact."""
    return (
        captures.select(*keep, _pair=pl.col("answers").str.split(","))
        .explode("_pair")
        .with_columns(_kv=pl.col("_pair").str.split_exact(":", 1))
        .select(
            *keep,
            question_id=pl.col("_kv").struct.field("field_0").str.strip_chars(" \t\n\r").str.strip_chars('"'),
            answer_value=pl.col("_kv").struct.field("field_1").str.strip_chars(" \t\n\r")
            .cast(pl.Int64, strict=False),
        )
    )


def _fast_path(
    rows: pl.DataFrame, catalog: dict[str, Question], dbns: frozenset[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(events, answers) of the rows that are certainly valid; ``rows`` has ``_row`` and ``_text``.

    One regex pass recognises the documented layout and captures every field; what
    it cannot recognise (another field order, escapes in strings, an extra field, any
    defect) is left to the reference.
    """
    v2 = VERSIONED_COLUMNS["language"]
    cand = (
        layout_captures(rows.lazy(), pl.col("_text"), "_row")
        .filter(
            pl.col("event_time").is_not_null()  # e.g. February 30th: the reference names it
            & pl.col("dbn").is_in(list(dbns))
            & pl.col("survey_year").is_between(MIN_SURVEY_YEAR, MAX_SURVEY_YEAR)
            & ((pl.col("schema_version") < v2) | pl.col("language").is_not_null())
        )
        # a v1 record may carry a language; like the reference, ignore it
        .with_columns(language=pl.when(pl.col("schema_version") >= v2).then(pl.col("language")))
        .collect()
    )
    # Every key must be a catalog question, once: matching the quoted catalog ids
    # (Aho-Corasick) must find as many distinct ids as the object has members.
    # The matches are a column of their own: an eager filter repeats an expression used
    # twice, and this one is the fast path's second-largest cost after the regex.
    quoted_ids = ['"' + q + '"' for q in catalog]
    members = pl.col("answers").str.count_matches(":", literal=True)
    cand = cand.with_columns(answer_count=members.cast(pl.Int64), _found=pl.col("answers").str.extract_many(quoted_ids))
    cand = cand.filter(
        (pl.col("_found").list.len() == pl.col("answer_count"))
        & (pl.col("_found").list.n_unique() == pl.col("answer_count"))
    ).drop("_found")
    pairs = (
        answer_members(cand.lazy(), "_row", "respondent_type", "schema_version")
        .join(_catalog_frame(catalog).lazy(), on="question_id", how="left", maintain_order="left")
        .with_columns(
            _ok=(
                (pl.col("_q_respondent_type") == pl.col("respondent_type"))
                & (pl.col("_q_since") <= pl.col("schema_version"))
                & pl.col("answer_value").is_between(pl.col("_q_min"), pl.col("_q_max"))
            ).fill_null(False)
        )
        .select("_row", "question_id", "answer_value", "_ok")
        .collect()
    )
    bad_rows = pairs.filter(~pl.col("_ok")).get_column("_row").unique()
    events = cand.filter(~pl.col("_row").is_in(bad_rows.implode())).select(_EVENT_SCHEMA.keys())
    answers = pairs.filter(~pl.col("_row").is_in(bad_rows.implode())).select(_ANSWER_SCHEMA.keys())
    return events, answers


# -- a batch --------------------------------------------------------------------------
class ParseStats(NamedTuple):
    records: int
    valid_records: int  # records that passed every rule
    quarantined: int
    superseded_in_batch: int  # valid records replaced by a newer version of the same submission
    fast_path: int  # valid records recognised by the vectorised path
    reference_path: int  # records decided by parse_payload

    def as_dict(self) -> dict[str, int]:
        return self._asdict()


# the columns of the answers contract that come from the answer's submission version
_REPEATED_COLUMNS = [c for c in ANSWER_DTYPES if c not in ("question_id", "answer_value")]


@dataclass(frozen=True)
class BatchAnswers:
    """The answers of a batch's winning versions, held narrow until a part is asked for.

    A Silver answer row repeats nine columns of its submission version. For a 250k-record
    batch, the 1.4M rows with them were the Silver step's largest frame and its memory
    peak. Held as (``_row``, question_id, answer_value) beside one row per version, they
    take a fraction of it, and each part (a key range for the merge, a chunk of versions
    for the validation) is joined when it is used.

    ``values``: one row per answer, ``_row`` naming its version's row in ``versions``.
    ``versions``: ``_row`` and the answers contract's submission columns, one row per
    winning version. Both in the contract's types; both are kept sorted by ``_row``, so
    the answers of a run of versions are a run of values (``parts``).
    """

    values: pl.DataFrame
    versions: pl.DataFrame

    def __post_init__(self) -> None:
        # the parse hands both over sorted: checking is a pass, sorting 5.6M rows 0.2 s
        if not self.values.get_column("_row").is_sorted():
            object.__setattr__(self, "values", self.values.sort("_row", maintain_order=True))
        if not self.versions.get_column("_row").is_sorted():
            object.__setattr__(self, "versions", self.versions.sort("_row"))

    @property
    def height(self) -> int:
        return self.values.height

    def filter(self, predicate: pl.Expr, of: pl.DataFrame | None = None) -> pl.DataFrame:
        """The answer rows (the contract's columns and order) of the versions that match
        ``predicate``, an expression on the submission columns (e.g. a key range), and, if
        ``of`` is given, are among its rows (a frame of submission columns: the merge's
        winners of a key range). The versions are picked before any answer row is built,
        so a version left out costs nothing, and a semi-join of the answer rows (1M
        versions' 5.6M rows, on four columns: 0.5 s) is not needed.

        The rows come in arrival order (``kafka_offset``, ties in record order), the order
        the merge writes them in: the versions are ordered before the rows are built, so
        the merge need not sort the rows (the 1M bench batch's 16 key ranges: 1.11 ->
        0.96 s, ad hoc)."""
        versions = self.versions.filter(predicate)
        if of is not None:
            versions = versions.join(of, on=of.columns, how="semi")
        return self._rows(versions.sort("kafka_offset", maintain_order=True), by_version=True)

    def head(self, n: int) -> pl.DataFrame:
        return self._rows(self.versions.head(n)).head(n)  # a version has at least one answer

    def frame(self) -> pl.DataFrame:
        """Every answer row at once (the merge and the validation read them in parts)."""
        return self._rows(self.versions)

    def parts(self, versions_per_part: int = 200_000) -> Iterator[pl.DataFrame]:
        """Every answer row, in frames of the answers of up to ``versions_per_part``
        versions: the parts split the answers' key (submission_id, question_id). A part
        of 200k versions is ~1.2M rows, ~120 MiB. Validating a frame has a fixed cost
        (each rule is a query of its own), so smaller parts cost time: a 1M-record batch's
        answers took 1.72-1.84 s in parts of 50k versions, 1.44-1.51 s in parts of 100k and
        1.25-1.28 s in parts of 200k (16k against 50k: 0.55 s against 0.25 s for a
        250k-record batch). Each part reads only its own run of ``values``: joining each
        part against all of them made a 1M-record batch's validation 3x slower."""
        rows = self.values.get_column("_row")
        for start in range(0, max(self.versions.height, 1), versions_per_part):
            part = self.versions.slice(start, versions_per_part)
            if part.height == 0:
                yield self._rows(part)
                continue
            # the part's values are one run of the sorted values: no pass over all of them
            lo = rows.search_sorted(part.get_column("_row").first(), side="left")
            hi = rows.search_sorted(part.get_column("_row").last(), side="right")
            yield self._rows(part, self.values.slice(lo, hi - lo))

    def _rows(self, versions: pl.DataFrame, values: pl.DataFrame | None = None, *,
              by_version: bool = False) -> pl.DataFrame:
        """The answer rows of ``versions``: in the order of ``versions`` (``by_version``;
        a version's answers in payload order) or else of ``values`` (record order)."""
        values = self.values if values is None else values
        return values.join(versions, on="_row", how="inner",
                           maintain_order="right" if by_version else "left").select(list(ANSWER_DTYPES))


class ParsedBatch(NamedTuple):
    submissions: pl.DataFrame
    answer_rows: BatchAnswers
    quarantine: pl.DataFrame
    stats: ParseStats

    @property
    def answers(self) -> pl.DataFrame:
        """Every answer row of the batch, built on each call (see ``BatchAnswers``)."""
        return self.answer_rows.frame()


_EVENT_SCHEMA = {
    "_row": pl.Int64,
    "submission_id": pl.String,
    "dbn": pl.String,
    "survey_year": pl.Int64,
    "respondent_type": pl.String,
    "event_time": pl.Datetime("us", "UTC"),
    "schema_version": pl.Int64,
    "language": pl.String,
    "device_type": pl.String,
    "device_os": pl.String,
    "app_version": pl.String,
    "answer_count": pl.Int64,  # members of the answers object: the version's rows in the answers
}
_ANSWER_SCHEMA = {"_row": pl.Int64, "question_id": pl.String, "answer_value": pl.Int64}


def _reference_path(
    rows: pl.DataFrame, catalog: dict[str, Question], dbns: frozenset[str]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    events: list[tuple] = []
    answers: list[tuple] = []
    rejected: list[tuple] = []
    for row, value in rows.select("_row", "value").iter_rows():
        out = parse_payload(value, catalog=catalog, dbns=dbns)
        if isinstance(out, Rejection):
            rejected.append((row, out.reason_code, out.reason_detail, out.submission_id))
            continue
        events.append((
            row, out.submission_id, out.dbn, out.survey_year, out.respondent_type, out.event_time_us,
            out.schema_version, out.language, out.device_type, out.device_os, out.app_version, len(out.answers),
        ))
        answers.extend((row, q, v) for q, v in out.answers)
    ev_schema = {**_EVENT_SCHEMA, "event_time": pl.Int64}
    ev = pl.DataFrame(events, schema=ev_schema, orient="row").with_columns(
        pl.col("event_time").cast(pl.Datetime("us", "UTC"))
    )
    ans = pl.DataFrame(answers, schema=_ANSWER_SCHEMA, orient="row")
    rej = pl.DataFrame(
        rejected,
        schema={"_row": pl.Int64, "reason_code": pl.String, "reason_detail": pl.String, "submission_id": pl.String},
        orient="row",
    )
    return ev, ans, rej


def _lossy_utf8(v: bytes | None) -> str | None:
    return None if v is None else v.decode("utf-8", errors="replace")


def _coordinates(bronze: pl.DataFrame) -> pl.DataFrame:
    return bronze.select(
        "_row",
        kafka_topic=pl.col("topic"),
        kafka_partition=pl.col("partition").cast(pl.Int32),
        kafka_offset=pl.col("offset").cast(pl.Int64),
        kafka_timestamp=pl.col("timestamp").dt.cast_time_unit("us"),
        batch_id=pl.col("batch_id"),
        batch_seq=pl.col("batch_id").str.slice(1).cast(pl.Int64),
        ingested_at=pl.col("ingested_at").dt.cast_time_unit("us"),
    )


def _cast(df: pl.DataFrame, dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    return df.select(pl.col(c).cast(t) for c, t in dtypes.items() if c in df.columns)


def parse_batch(
    bronze: pl.DataFrame,
    *,
    catalog: dict[str, Question] | None = None,
    dbns: frozenset[str] | None = None,
    fast_path: bool = True,
) -> ParsedBatch:
    """Parse one Bronze batch (BRONZE_SCHEMA columns) into the three Silver frames.

    Submissions hold the newest version of each submission in the batch; answers are
    exactly that version's answers; quarantine holds every record that broke a rule.
    ``fast_path=False`` decides every record with the reference (tests compare both).
    The frame is not kept past the parse: passed without another reference (as the
    Silver asset does), its payloads are freed before the frames are joined.
    """
    catalog = questions() if catalog is None else catalog
    dbns = school_dbns() if dbns is None else dbns
    bronze = bronze.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
    n = bronze.height

    if fast_path and n:
        # in slices: the payload text and the regex captures of a whole 250k-record batch
        # held at once were most of the Silver step's memory; records are independent here
        parts = []
        for start in range(0, n, FAST_PATH_SLICE):
            part = bronze.slice(start, FAST_PATH_SLICE)
            parts.append(_fast_path(part.select("_row", _text=_payload_text(part.get_column("value"))), catalog, dbns))
        fast_events = pl.concat([e for e, _ in parts])
        fast_answers = pl.concat([a for _, a in parts])
        del parts, part  # a slice shares the whole batch's buffers
    else:
        fast_events = pl.DataFrame(schema=_EVENT_SCHEMA)
        fast_answers = pl.DataFrame(schema=_ANSWER_SCHEMA)
    rest = bronze.filter(~pl.col("_row").is_in(fast_events.get_column("_row").implode()))
    coords = _coordinates(bronze)
    # the payloads are needed no further (rejected records are all in `rest`): without
    # this frame, a caller that passed the batch without keeping it frees them here
    del bronze
    ref_events, ref_answers, rejected = _reference_path(rest, catalog, dbns)

    n_fast = fast_events.height
    # each path's events and answers come in record order (_row), and so do their merges
    # (BatchAnswers keeps the values in that order)
    events = fast_events.merge_sorted(ref_events.select(fast_events.columns), key="_row")
    answers = fast_answers.merge_sorted(ref_answers, key="_row")
    del fast_events, fast_answers, ref_events, ref_answers
    n_valid = events.height
    if n_valid + rejected.height != n:
        raise RuntimeError(f"parse lost records: {n} in, {n_valid} valid + {rejected.height} quarantined")

    # The newest version of each submission. Most submissions have one version in a batch,
    # so only those with several are ordered, on the columns that order versions (sorting
    # every version took 0.3 s of a 1M-record parse). The winners stay in record order.
    repeated = events.get_column("submission_id").is_duplicated()
    newest = (
        events.filter(repeated).select("_row", "submission_id", "event_time")
        .join(coords.select("_row", "kafka_partition", "kafka_offset"), on="_row", how="left")
        .sort(NEWEST_FIRST_KEY, descending=True, maintain_order=True)
        .unique("submission_id", keep="first")
        .get_column("_row")
    )
    winners = events.filter(~repeated | pl.col("_row").is_in(newest.implode()))
    # coords has one row per record, in record order: a record's row is its _row
    winners = pl.concat([winners, coords.drop("_row")[winners.get_column("_row")]], how="horizontal")
    del events, newest
    submissions = winners
    if not (winners.get_column("schema_version") >= VERSIONED_COLUMNS["language"]).any():
        submissions = submissions.drop("language")
    submissions = _cast(submissions, SUBMISSION_DTYPES)

    # the winners' answers, narrow: their submission columns are joined per part (BatchAnswers)
    versions = _cast(winners, {"_row": pl.Int64, **{c: ANSWER_DTYPES[c] for c in _REPEATED_COLUMNS}})
    values = _cast(answers.join(versions.select("_row"), on="_row", how="semi", maintain_order="left"),
                   {"_row": pl.Int64, "question_id": ANSWER_DTYPES["question_id"],
                    "answer_value": ANSWER_DTYPES["answer_value"]})
    n_winners = winners.height
    del answers, winners

    q = rejected.join(rest.select("_row", "key", "value"), on="_row", how="left").join(coords, on="_row", how="left")
    quarantine = _cast(
        q.with_columns(
            kafka_key=pl.Series("kafka_key", [_lossy_utf8(v) for v in q.get_column("key").to_list()], pl.String),
            raw_payload=pl.Series("raw_payload", [_lossy_utf8(v) for v in q.get_column("value").to_list()], pl.String),
        ).sort("kafka_partition", "kafka_offset"),
        QUARANTINE_DTYPES,
    )

    stats = ParseStats(
        records=n,
        valid_records=n_valid,
        quarantined=quarantine.height,
        superseded_in_batch=n_valid - n_winners,
        fast_path=n_fast,
        reference_path=rest.height,
    )
    return ParsedBatch(submissions, BatchAnswers(values, versions), quarantine, stats)
