"""A seeded, deterministic simulation of NYC School Survey submissions as Kafka records.

Pure: no Kafka, no Dagster. `SurveyStream(n_events, config)` yields `SurveyRecord`s
(key, value bytes, headers) built from the real school list and question catalog, and
keeps a `StreamReport` with the ground truth the pipeline is tested against: how many
valid distinct submissions there are, how many duplicates, corrections, late and
out-of-order records, and how many malformed records of each quarantine reason code
(docs/ARCHITECTURE.md "The survey event").

Shape of the simulated stream:
- Event times follow the survey window's daily rhythm (America/New_York): students answer
  in class on weekdays, teachers around prep periods and after school, parents in the
  morning, the evening and at weekends. Stream order follows event time (stratified
  sampling of the window's intensity), so "late" and "out of order" are measurable.
- Respondent type is drawn per hour from those rhythms (about half parents, 42% students,
  8% teachers); a school is drawn per type, weighted by its 2019 response rate for that
  type. Schools whose 2019 student response rate is `N/A` (elementary schools) give no
  student submissions. Answers lean toward the school's 2019 framework scores.
- Duplicates resend the exact bytes of an earlier version; corrections resend a submission
  with a strictly newer event time and changed answers (newer wins downstream); malformed
  records always carry a fresh submission id, so a valid submission is never "spoiled".
- After `v2_after_fraction` of the stream, new records use schema version 2 (adds
  `language`); duplicates of older versions stay as they were sent.

The same seed and config give the same bytes in the same order.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from school_equity.reference import (
    RESPONDENT_TYPES,
    SURVEY_RESULTS_FILE,
    questions_for,
    school_dbns,
)

PRODUCER_ID = "school_equity.producer/1"
NYC_TZ = ZoneInfo("America/New_York")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR_US = 3_600_000_000
# RFC 4122 version 4 / variant bits, as uuid.UUID(int=..., version=4) sets them
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_V4 = (4 << 76) | (0x8000 << 48)

# Quarantine reason codes (docs/ARCHITECTURE.md), in the parser's rule order.
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
UNKNOWN_DBN = "unknown_dbn"
UNKNOWN_QUESTION = "unknown_question"
ANSWER_OUT_OF_RANGE = "answer_out_of_range"
INVALID_VALUE = "invalid_value"
UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
MALFORMED_KINDS: tuple[str, ...] = (
    INVALID_JSON, MISSING_FIELD, WRONG_TYPE, UNKNOWN_DBN, UNKNOWN_QUESTION,
    ANSWER_OUT_OF_RANGE, INVALID_VALUE, UNSUPPORTED_SCHEMA_VERSION,
)
# Fields whose absence every reader must reject. schema_version, device and language are
# left out on purpose: a lenient reader could default them, which would make the
# expected reason code ambiguous.
REQUIRED_FIELDS = ("submission_id", "dbn", "survey_year", "respondent_type", "event_time", "answers")

# Record kinds
SUBMISSION = "submission"  # first version of a valid submission
DUPLICATE = "duplicate"  # identical resend of an earlier version
CORRECTION = "correction"  # newer version of a valid submission (newer event_time, changed answers)
MALFORMED = "malformed"

# Share of valid submissions per respondent type over the whole window (NYC 2019:
# roughly 500k parents, 420k students, 75k teachers answered).
DEFAULT_RESPONDENT_MIX = {"parent": 0.50, "student": 0.42, "teacher": 0.08}

# Survey languages: parents answer in many (NYC home languages); students and teachers
# overwhelmingly in English.
_PARENT_LANGUAGES = {"en": 0.60, "es": 0.23, "zh": 0.065, "bn": 0.025, "ru": 0.02, "ar": 0.015,
                     "ht": 0.015, "ur": 0.01, "ko": 0.008, "fr": 0.007}
_STUDENT_LANGUAGES = {"en": 0.88, "es": 0.07, "zh": 0.025, "bn": 0.008, "ru": 0.005, "ar": 0.004,
                      "ht": 0.003, "ur": 0.002, "ko": 0.002, "fr": 0.001}
_TEACHER_LANGUAGES = {"en": 0.97, "es": 0.02, "zh": 0.005, "ru": 0.003, "fr": 0.002}
LANGUAGES = {"parent": _PARENT_LANGUAGES, "student": _STUDENT_LANGUAGES, "teacher": _TEACHER_LANGUAGES}

# (device type, os, weight) per respondent type: students mostly on school Chromebooks.
_DEVICES = {
    "student": [("desktop", "ChromeOS 128", 0.45), ("desktop", "ChromeOS 126", 0.12), ("mobile", "iOS 18.1", 0.13),
                ("mobile", "Android 14", 0.12), ("mobile", "Android 13", 0.06), ("tablet", "iPadOS 18.1", 0.08),
                ("desktop", "Windows 11", 0.04)],
    "teacher": [("desktop", "Windows 11", 0.33), ("desktop", "macOS 15.1", 0.20), ("desktop", "ChromeOS 128", 0.12),
                ("mobile", "iOS 18.1", 0.16), ("mobile", "Android 14", 0.09), ("tablet", "iPadOS 18.1", 0.05),
                ("desktop", "Windows 10", 0.05)],
    "parent": [("mobile", "iOS 18.1", 0.22), ("mobile", "iOS 17.6", 0.10), ("mobile", "Android 14", 0.24),
               ("mobile", "Android 15", 0.10), ("mobile", "Android 13", 0.12), ("desktop", "Windows 11", 0.09),
               ("desktop", "macOS 15.1", 0.04), ("tablet", "iPadOS 18.1", 0.05), ("desktop", "Windows 10", 0.04)],
}
# The app release that ships schema version 2 is 4.x; before it, 3.x.
_APP_VERSIONS = {1: (("3.4.1", 0.70), ("3.4.0", 0.22), ("3.3.2", 0.08)), 2: (("4.0.1", 0.80), ("4.0.0", 0.20))}

# Relative hourly intensity (local time) per respondent type: (weekday profile, weekend profile).
_STUDENT_WEEKDAY = {8: 0.3, 9: 1.0, 10: 1.0, 11: 0.9, 12: 0.6, 13: 0.9, 14: 0.7, 15: 0.2, 16: 0.05, 17: 0.04,
                    18: 0.04, 19: 0.05, 20: 0.04, 21: 0.02}
_TEACHER_WEEKDAY = {7: 0.2, 8: 0.4, 9: 0.5, 10: 0.5, 11: 0.5, 12: 0.7, 13: 0.5, 14: 0.8, 15: 1.0, 16: 0.8,
                    17: 0.4, 18: 0.2, 19: 0.25, 20: 0.25, 21: 0.2, 22: 0.1}
_PARENT_WEEKDAY = {0: 0.05, 1: 0.01, 2: 0.01, 3: 0.01, 4: 0.01, 5: 0.03, 6: 0.1, 7: 0.5, 8: 0.7, 9: 0.4,
                   10: 0.3, 11: 0.3, 12: 0.35, 13: 0.3, 14: 0.3, 15: 0.5, 16: 0.5, 17: 0.6, 18: 0.8,
                   19: 1.0, 20: 1.0, 21: 0.8, 22: 0.4, 23: 0.15}
_PROFILES = {
    "student": (_STUDENT_WEEKDAY, {h: 0.01 for h in range(10, 20)}),
    "teacher": (_TEACHER_WEEKDAY, {h: 0.1 for h in range(10, 21)}),
    "parent": (_PARENT_WEEKDAY, {**{h: 0.4 for h in range(9, 22)}, 22: 0.2, 23: 0.08, 8: 0.2}),
}


def _first_monday_of_march(year: int) -> date:
    d = date(year, 3, 1)
    return d + timedelta(days=(7 - d.weekday()) % 7)


@dataclass(frozen=True)
class GeneratorConfig:
    """Every knob of the simulated stream. Rates are per generated record."""

    seed: int = 42
    survey_year: int = 2026
    window_start: date | None = None  # local date the survey opens; default: first Monday of March
    window_days: int = 35
    respondent_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RESPONDENT_MIX))
    skip_rate: float = 0.03  # chance each question is left unanswered (at least one is always answered)
    late_rate: float = 0.03  # share of new submissions whose event time is hours or days old
    late_lag_hours: tuple[float, float] = (1.0, 120.0)  # log-uniform lag of a late event
    out_of_order_rate: float = 0.05  # share of records delivered late in the stream ...
    shuffle_window: int = 32  # ... by 1..shuffle_window records
    duplicate_rate: float = 0.02
    correction_rate: float = 0.01
    malformed_rate: float = 0.01
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    v2_after_fraction: float | None = 0.5  # None: schema version 1 throughout
    pool_size: int = 5000  # recent submissions eligible for duplicates and corrections
    track_expected: bool = False  # keep every valid submission's final version (tests; memory grows with n)

    def __post_init__(self) -> None:
        for name in ("skip_rate", "late_rate", "out_of_order_rate", "duplicate_rate", "correction_rate",
                     "malformed_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.duplicate_rate + self.correction_rate + self.malformed_rate > 1.0:
            raise ValueError("duplicate_rate + correction_rate + malformed_rate must not exceed 1")
        if self.v2_after_fraction is not None and not 0.0 <= self.v2_after_fraction <= 1.0:
            raise ValueError(f"v2_after_fraction must be in [0, 1] or None, got {self.v2_after_fraction}")
        unknown = set(self.malformed_kinds) - set(MALFORMED_KINDS)
        if unknown or (self.malformed_rate > 0 and not self.malformed_kinds):
            raise ValueError(f"malformed_kinds must be a non-empty subset of {MALFORMED_KINDS}")
        if self.shuffle_window < 1 or self.pool_size < 1 or self.window_days < 1:
            raise ValueError("shuffle_window, pool_size and window_days must be >= 1")
        lo, hi = self.late_lag_hours
        if not 0 < lo <= hi:
            raise ValueError(f"late_lag_hours must be 0 < low <= high, got {self.late_lag_hours}")
        if set(self.respondent_mix) - set(RESPONDENT_TYPES) or sum(self.respondent_mix.values()) <= 0:
            raise ValueError(f"respondent_mix keys must be among {RESPONDENT_TYPES} with a positive total")

    @property
    def window_start_date(self) -> date:
        return self.window_start or _first_monday_of_march(self.survey_year)


@dataclass(slots=True)
class SurveyRecord:
    """One Kafka record as it will be sent, plus the ground truth about it."""

    seq: int  # generation order (a record delivered out of order is emitted later than its seq)
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    schema_version: int  # as in the header
    kind: str  # SUBMISSION | DUPLICATE | CORRECTION | MALFORMED
    submission_id: str
    respondent_type: str
    late: bool = False
    reason: str | None = None  # quarantine reason code, malformed records only
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectedSubmission:
    """The version of a valid submission that must win downstream (latest event time)."""

    submission_id: str
    dbn: str
    survey_year: int
    respondent_type: str
    event_time_us: int  # microseconds since the epoch, UTC
    answers: dict[str, int]
    schema_version: int
    language: str | None
    versions: int


def fingerprint(submission_id: str, event_time_us: int, answers: dict[str, int]) -> int:
    """64-bit digest of one submission version; summed (mod 2**64) over the final versions it
    gives `StreamReport.final_versions_hash`, which Silver can recompute from its rows."""
    text = submission_id + "|" + str(event_time_us) + "|" + ",".join(f"{q}={answers[q]}" for q in sorted(answers))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def versions_hash(versions: Iterable[tuple[str, int, dict[str, int]]]) -> int:
    """`StreamReport.final_versions_hash` of (submission_id, event_time_us, answers) rows: what
    Silver's winning versions must hash to. Order-independent."""
    return sum(fingerprint(sid, t_us, answers) for sid, t_us, answers in versions) % (1 << 64)


@dataclass
class StreamReport:
    """Ground truth of what the stream contains. Counts cover emitted records."""

    seed: int
    events: int = 0
    valid_submissions: int = 0  # distinct submission ids whose records are all valid
    valid_records: int = 0  # records that pass every rule (first versions, duplicates, corrections)
    duplicates: int = 0
    corrections: int = 0
    late: int = 0
    out_of_order: int = 0  # records emitted after a record generated later than them
    malformed: dict[str, int] = field(default_factory=dict)  # reason code -> records
    schema_versions: dict[int, int] = field(default_factory=dict)  # header version -> records
    valid_by_respondent_type: dict[str, int] = field(default_factory=dict)  # distinct valid submissions
    v2_from_seq: int | None = None  # first generated seq of schema version 2
    final_versions_hash: int = 0
    expected: dict[str, ExpectedSubmission] | None = None  # only with track_expected

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def to_dict(self) -> dict:
        d = {
            "seed": self.seed, "events": self.events, "valid_submissions": self.valid_submissions,
            "valid_records": self.valid_records, "duplicates": self.duplicates, "corrections": self.corrections,
            "late": self.late, "out_of_order": self.out_of_order, "malformed_total": self.malformed_total,
            "malformed": dict(sorted(self.malformed.items())),
            "schema_versions": {str(k): v for k, v in sorted(self.schema_versions.items())},
            "valid_by_respondent_type": dict(sorted(self.valid_by_respondent_type.items())),
            "v2_from_seq": self.v2_from_seq, "final_versions_hash": f"{self.final_versions_hash:016x}",
        }
        return d


# -- reference data -------------------------------------------------------------------------

@dataclass(frozen=True)
class School:
    dbn: str
    response_rate: dict[str, float | None]  # 0-1 per respondent type, None for N/A
    quality: float  # 0-1, from the mean 2019 framework score (1-5)


def _pct(v: str) -> float | None:
    v = v.strip()
    return None if v in ("", "N/A") else float(v) / 100.0


@lru_cache(maxsize=1)
def schools() -> tuple[School, ...]:
    """The survey file's schools with their 2019 response rates and climate level."""
    import csv

    out = []
    with open(SURVEY_RESULTS_FILE, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if not row or not row[0].strip():
                continue
            scores = [float(x) for x in row[5:11] if x.strip() not in ("", "N/A")]
            mean = sum(scores) / len(scores) if scores else 3.5
            out.append(School(
                dbn=row[0].strip(),
                response_rate={"parent": _pct(row[2]), "teacher": _pct(row[3]), "student": _pct(row[4])},
                quality=min(1.0, max(0.0, (mean - 1.0) / 4.0)),
            ))
    if {s.dbn for s in out} != school_dbns():
        raise RuntimeError("school list and reference.school_dbns() disagree")
    return tuple(out)


def _cum(weights: Sequence[float]) -> list[float]:
    out, t = [], 0.0
    for w in weights:
        t += w
        out.append(t)
    return out


def _iso(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=us)).isoformat()


def _us(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


@dataclass(slots=True)
class _Version:
    event_time_us: int
    answers: dict[str, int]
    schema_version: int
    language: str | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(slots=True)
class _Submission:
    submission_id: str
    dbn: str
    school: int
    respondent_type: str
    device: dict[str, str]
    versions: list[_Version]
    fp: int  # fingerprint of the latest version


class SurveyStream:
    """Iterate to get the records; `report` is complete once iteration ends.

    `stop()` ends the stream early: nothing new is generated and the records still in the
    shuffle buffer are emitted, so the report always describes exactly what was yielded.
    """

    def __init__(self, n_events: int, config: GeneratorConfig | None = None):
        if n_events < 0:
            raise ValueError(f"n_events must be >= 0, got {n_events}")
        self.n_events = n_events
        self.config = cfg = config or GeneratorConfig()
        self.report = StreamReport(seed=cfg.seed, expected={} if cfg.track_expected else None)
        self._stopped = False
        self._rng = random.Random(cfg.seed)
        # A separate stream for delivery order: changing the shuffle window leaves the content alone.
        self._shuffle_rng = random.Random(f"delivery-{cfg.seed}")
        self._schools = schools()
        self._questions = {t: questions_for(t) for t in RESPONDENT_TYPES}
        self._known_questions = {q.question_id for qs in self._questions.values() for q in qs}
        self._dbns = school_dbns()
        self._headers = {v: [("schema_version", str(v).encode()), ("content-type", b"application/json"),
                             ("producer", PRODUCER_ID.encode())] for v in (1, 2, 3)}
        self._build_school_draws()
        self._build_timeline()
        self._answer_tables: dict[tuple[int, str, int], list[tuple[str, int, list[float]]]] = {}
        self._language_tables = {t: (list(w), _cum(list(w.values()))) for t, w in LANGUAGES.items()}
        self._device_tables = {t: ([(d, o) for d, o, _ in rows], _cum([w for *_, w in rows]))
                               for t, rows in _DEVICES.items()}
        self._app_tables = {v: ([a for a, _ in rows], _cum([w for _, w in rows])) for v, rows in _APP_VERSIONS.items()}
        self._pool: list[_Submission] = []
        if cfg.v2_after_fraction is None:
            self._v2_from = None
        else:
            self._v2_from = math.floor(cfg.v2_after_fraction * n_events)
        self.report.v2_from_seq = self._v2_from if self._v2_from is not None and self._v2_from < n_events else None
        self._kind_cycle: list[str] = []
        self._fingerprint_sum = 0

    def stop(self) -> None:
        self._stopped = True

    # -- set-up ---------------------------------------------------------------------------

    def _build_school_draws(self) -> None:
        self._school_idx: dict[str, list[int]] = {}
        self._school_cum: dict[str, list[float]] = {}
        for t in RESPONDENT_TYPES:
            idx = [i for i, s in enumerate(self._schools) if s.response_rate[t] is not None]
            # a 0% school still gets the odd response: floor the weight
            w = [max(self._schools[i].response_rate[t], 0.02) for i in idx]
            self._school_idx[t], self._school_cum[t] = idx, _cum(w)

    def _build_timeline(self) -> None:
        """Hourly buckets over the window, each with its mass per respondent type."""
        cfg = self.config
        start = cfg.window_start_date
        start_utc = datetime(start.year, start.month, start.day, tzinfo=NYC_TZ).astimezone(UTC)
        end = start + timedelta(days=cfg.window_days)
        end_utc = datetime(end.year, end.month, end.day, tzinfo=NYC_TZ).astimezone(UTC)
        n_buckets = int((end_utc - start_utc) / timedelta(hours=1))
        types = [t for t in RESPONDENT_TYPES if cfg.respondent_mix.get(t, 0) > 0 and self._school_idx[t]]
        raw: dict[str, list[float]] = {t: [] for t in types}
        for b in range(n_buckets):
            local = (start_utc + timedelta(hours=b)).astimezone(NYC_TZ)
            day = (local.date() - start).days
            # launch push in the first days, reminder push in the last week
            boost = 1.4 if day < 3 else 1.2 if day >= cfg.window_days - 5 else 1.0
            for t in types:
                weekday, weekend = _PROFILES[t]
                prof = weekday if local.weekday() < 5 else weekend
                raw[t].append(prof.get(local.hour, 0.0) * boost)
        totals = {t: sum(raw[t]) for t in types}
        mix = {t: cfg.respondent_mix[t] / totals[t] for t in types if totals[t] > 0}
        self._types = list(mix)
        if not self._types:
            raise ValueError("no respondent type has any weight in the survey window")
        self._bucket_type_cum = [_cum([raw[t][b] * mix[t] for t in self._types]) for b in range(n_buckets)]
        self._bucket_cum = _cum([c[-1] for c in self._bucket_type_cum])
        self._start_us = _us(start_utc)
        self._window_total = self._bucket_cum[-1]

    # -- drawing --------------------------------------------------------------------------

    def _nominal(self, seq: int) -> tuple[int, str]:
        """Event time (us) and respondent type for generated record `seq`: stratified over the
        window's intensity, so times rise with seq and clump in the busy hours."""
        rng = self._rng
        target = (seq + rng.random()) / max(self.n_events, 1) * self._window_total
        b = min(bisect_right(self._bucket_cum, target), len(self._bucket_cum) - 1)
        lo = self._bucket_cum[b - 1] if b else 0.0
        tcum = self._bucket_type_cum[b]
        width = tcum[-1]
        frac = min(max((target - lo) / width, 0.0), 1.0) if width else rng.random()
        t_us = self._start_us + b * _HOUR_US + int(frac * (_HOUR_US - 1))
        rtype = self._types[min(bisect_right(tcum, rng.random() * width), len(self._types) - 1)]
        return t_us, rtype

    def _pick(self, table: tuple[list, list[float]]):
        values, cum = table
        return values[min(bisect_right(cum, self._rng.random() * cum[-1]), len(values) - 1)]

    def _language(self, rtype: str) -> str:
        return self._pick(self._language_tables[rtype])

    def _question_tables(self, school: int, rtype: str, schema_version: int) -> list[tuple[str, int, list[float]]]:
        key = (school, rtype, schema_version)
        tables = self._answer_tables.get(key)
        if tables is None:
            tables = []
            for q in self._questions[rtype]:
                if q.introduced_in_schema_version > schema_version:
                    continue
                # a discretised bell around the school's 2019 climate level
                mu = q.scale_min + self._schools[school].quality * (q.scale_max - q.scale_min)
                cum = _cum([math.exp(-((k - mu) ** 2) / 1.28) for k in range(q.scale_min, q.scale_max + 1)])
                tables.append((q.question_id, q.scale_min, cum))
            self._answer_tables[key] = tables
        return tables

    def _answers(self, school: int, rtype: str, schema_version: int) -> dict[str, int]:
        rand, skip = self._rng.random, self.config.skip_rate
        tables = self._question_tables(school, rtype, schema_version)
        out = {}
        for qid, lo, cum in tables:
            if rand() >= skip:
                out[qid] = lo + min(bisect_right(cum, rand() * cum[-1]), len(cum) - 1)
        if not out and tables:
            qid, lo, cum = tables[self._rng.randrange(len(tables))]
            out[qid] = lo + min(bisect_right(cum, rand() * cum[-1]), len(cum) - 1)
        return out

    def _uuid(self) -> str:
        # what str(uuid.UUID(int=bits, version=4)) gives, without the object (a hot path)
        h = "%032x" % ((self._rng.getrandbits(128) & _UUID_CLEAR) | _UUID_V4)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _payload(self, sid: str, dbn: str, rtype: str, t_us: int, answers, device: dict,
                 schema_version: int, language: str | None) -> dict:
        d = {"schema_version": schema_version, "submission_id": sid, "dbn": dbn,
             "survey_year": self.config.survey_year, "respondent_type": rtype, "event_time": _iso(t_us),
             "answers": answers, "device": device}
        if schema_version >= 2:
            d["language"] = language
        return d

    @staticmethod
    def _encode(d: dict) -> bytes:
        return json.dumps(d, separators=(",", ":")).encode()

    def _encode_valid(self, sid: str, dbn: str, rtype: str, t_us: int, answers: dict[str, int],
                      device: dict[str, str], version: int, language: str | None) -> bytes:
        """Byte-identical to `_encode(_payload(...))` (a test holds it to that), about 4x faster:
        every string here comes from our own catalogs, so nothing needs escaping."""
        ans = ",".join([f'"{q}":{v}' for q, v in answers.items()])
        text = (f'{{"schema_version":{version},"submission_id":"{sid}","dbn":"{dbn}",'
                f'"survey_year":{self.config.survey_year},"respondent_type":"{rtype}",'
                f'"event_time":"{_iso(t_us)}","answers":{{{ans}}},"device":{{"type":"{device["type"]}",'
                f'"os":"{device["os"]}","app_version":"{device["app_version"]}"}}')
        if version >= 2:
            text += f',"language":"{language}"'
        return (text + "}").encode()

    def _device(self, rtype: str, schema_version: int) -> dict[str, str]:
        dtype, os_ = self._pick(self._device_tables[rtype])
        return {"type": dtype, "os": os_, "app_version": self._pick(self._app_tables[schema_version])}

    def _draw_school(self, rtype: str) -> int:
        idx, cum = self._school_idx[rtype], self._school_cum[rtype]
        return idx[min(bisect_right(cum, self._rng.random() * cum[-1]), len(idx) - 1)]

    # -- record kinds ---------------------------------------------------------------------

    def _new_submission(self, seq: int, version: int) -> SurveyRecord:
        cfg, rng = self.config, self._rng
        t_us, rtype = self._nominal(seq)
        late = False
        if rng.random() < cfg.late_rate:
            lo, hi = cfg.late_lag_hours
            lag = int(math.exp(rng.uniform(math.log(lo), math.log(hi))) * _HOUR_US)
            # nobody answers before the survey opens: clip, and count as late only if still >= the minimum lag
            lagged = max(t_us - lag, self._start_us)
            if t_us - lagged >= int(lo * _HOUR_US):
                t_us, late = lagged, True
        school = self._draw_school(rtype)
        sid = self._uuid()
        answers = self._answers(school, rtype, version)
        device = self._device(rtype, version)
        language = self._language(rtype) if version >= 2 else None
        dbn = self._schools[school].dbn
        value = self._encode_valid(sid, dbn, rtype, t_us, answers, device, version, language)
        headers = self._headers[version]
        sub = _Submission(sid, dbn, school, rtype, device,
                          [_Version(t_us, answers, version, language, value, headers)],
                          fingerprint(sid, t_us, answers))
        self._fingerprint_sum += sub.fp
        if len(self._pool) < cfg.pool_size:
            self._pool.append(sub)
        else:
            # replacing a random slot keeps mostly recent submissions, with a tail of older ones
            self._pool[rng.randrange(cfg.pool_size)] = sub
        self._remember(sub)
        return SurveyRecord(seq, sid.encode(), value, headers, version, SUBMISSION, sid, rtype, late=late)

    def _duplicate(self, seq: int) -> SurveyRecord:
        sub = self._pool[self._rng.randrange(len(self._pool))]
        # any version: a stale copy arriving after a correction must not win
        v = sub.versions[self._rng.randrange(len(sub.versions))]
        return SurveyRecord(seq, sub.submission_id.encode(), v.value, v.headers, v.schema_version, DUPLICATE,
                            sub.submission_id, sub.respondent_type)

    def _correction(self, seq: int, version: int) -> SurveyRecord:
        rng = self._rng
        sub = self._pool[rng.randrange(len(self._pool))]
        prev = sub.versions[-1]
        now_us, _ = self._nominal(seq)
        lo = prev.event_time_us + 1_000_000
        t_us = lo + int(rng.random() * max(0, now_us - lo))
        answers = dict(prev.answers)
        qs = [q for q in self._questions[sub.respondent_type] if q.introduced_in_schema_version <= version]
        for q in rng.sample(qs, k=min(len(qs), rng.choice((1, 1, 2)))):
            old = answers.get(q.question_id)
            choices = [v for v in range(q.scale_min, q.scale_max + 1) if v != old]
            answers[q.question_id] = rng.choice(choices)
        language = prev.language if prev.language else (self._language(sub.respondent_type) if version >= 2 else None)
        device = sub.device if version == prev.schema_version else {**sub.device, "app_version":
                                                                     self._pick(self._app_tables[version])}
        value = self._encode_valid(sub.submission_id, sub.dbn, sub.respondent_type, t_us, answers, device, version,
                                   language)
        headers = self._headers[version]
        sub.versions.append(_Version(t_us, answers, version, language, value, headers))
        fp = fingerprint(sub.submission_id, t_us, answers)
        self._fingerprint_sum += fp - sub.fp
        sub.fp = fp
        self._remember(sub)
        return SurveyRecord(seq, sub.submission_id.encode(), value, headers, version, CORRECTION, sub.submission_id,
                            sub.respondent_type)

    def _remember(self, sub: _Submission) -> None:
        if self.report.expected is None:
            return
        v = sub.versions[-1]
        self.report.expected[sub.submission_id] = ExpectedSubmission(
            sub.submission_id, sub.dbn, self.config.survey_year, sub.respondent_type, v.event_time_us,
            dict(v.answers), v.schema_version, v.language, len(sub.versions))

    def _next_malformed_kind(self) -> str:
        # shuffled round-robin: every kind shows up as soon as there are enough malformed records
        if not self._kind_cycle:
            self._kind_cycle = list(self.config.malformed_kinds)
            self._rng.shuffle(self._kind_cycle)
        return self._kind_cycle.pop()

    def _unknown_dbn(self) -> str:
        rng = self._rng
        while True:
            dbn = f"{rng.randint(1, 32):02d}{rng.choice('MXKQR')}{rng.randint(1, 999):03d}"
            if dbn not in self._dbns:
                return dbn

    def _malformed(self, seq: int, version: int) -> SurveyRecord:
        """A fresh submission id with exactly one defect, the one its reason code names."""
        rng = self._rng
        kind = self._next_malformed_kind()
        t_us, rtype = self._nominal(seq)
        school = self._draw_school(rtype)
        sid = self._uuid()
        answers = self._answers(school, rtype, version)
        language = self._language(rtype) if version >= 2 else None
        d = self._payload(sid, self._schools[school].dbn, rtype, t_us, answers, self._device(rtype, version),
                          version, language)
        header_version = version
        if kind == INVALID_JSON:
            full = self._encode(d)
            cut = rng.randint(1, len(full) - 1)  # a strict prefix of a JSON object never parses
            value, detail = full[:cut], f"truncated at byte {cut} of {len(full)}"
        else:
            if kind == MISSING_FIELD:
                detail = rng.choice(REQUIRED_FIELDS)
                del d[detail]
            elif kind == WRONG_TYPE:
                detail = rng.choice(("survey_year", "answers"))
                if detail == "survey_year":
                    d["survey_year"] = f"{self.config.survey_year}a"
                else:
                    d["answers"] = [answers[q] for q in sorted(answers)]
            elif kind == UNKNOWN_DBN:
                d["dbn"] = detail = self._unknown_dbn()
            elif kind == UNKNOWN_QUESTION:
                prefix = self._questions[rtype][0].question_id[0]
                qid = next(f"{prefix}{n:02d}" for n in range(rng.randint(50, 90), 100)
                           if f"{prefix}{n:02d}" not in self._known_questions)
                d["answers"] = {**answers, qid: 3}
                detail = qid
            elif kind == ANSWER_OUT_OF_RANGE:
                qid = rng.choice(sorted(answers))
                q = next(q for q in self._questions[rtype] if q.question_id == qid)
                bad = rng.choice((q.scale_min - 1, q.scale_min - 2, q.scale_max + 1, q.scale_max + 5))
                d["answers"] = {**answers, qid: bad}
                detail = f"{qid}={bad}"
            elif kind == INVALID_VALUE:
                local = (_EPOCH + timedelta(microseconds=t_us)).astimezone(NYC_TZ)
                d["event_time"] = rng.choice((f"{local.year}-02-30T{local:%H:%M:%S}+00:00", "yesterday",
                                              f"{local:%Y-%m-%d}T25:61:00+00:00"))
                detail = "event_time"
            elif kind == UNSUPPORTED_SCHEMA_VERSION:
                header_version = 3
                d["schema_version"] = 3
                d["language"] = language or self._language(rtype)
                detail = "3"
            else:  # pragma: no cover - guarded by GeneratorConfig
                raise AssertionError(kind)
            value = self._encode(d)
        return SurveyRecord(seq, sid.encode(), value, self._headers[header_version], header_version, MALFORMED, sid,
                            rtype, reason=kind, detail=detail)

    # -- the stream -----------------------------------------------------------------------

    def _generate(self) -> Iterator[SurveyRecord]:
        cfg, rng = self.config, self._rng
        p_mal = cfg.malformed_rate
        p_dup = p_mal + cfg.duplicate_rate
        p_cor = p_dup + cfg.correction_rate
        for seq in range(self.n_events):
            if self._stopped:
                return
            version = 2 if self._v2_from is not None and seq >= self._v2_from else 1
            r = rng.random()
            if r < p_mal:
                yield self._malformed(seq, version)
            elif r < p_dup and self._pool:
                yield self._duplicate(seq)
            elif r < p_cor and self._pool:
                yield self._correction(seq, version)
            else:
                yield self._new_submission(seq, version)

    def _count(self, rec: SurveyRecord, max_seq: int) -> None:
        rep = self.report
        rep.events += 1
        rep.schema_versions[rec.schema_version] = rep.schema_versions.get(rec.schema_version, 0) + 1
        if rec.seq < max_seq:
            rep.out_of_order += 1
        if rec.kind == MALFORMED:
            rep.malformed[rec.reason] = rep.malformed.get(rec.reason, 0) + 1
            return
        rep.valid_records += 1
        if rec.kind == SUBMISSION:
            rep.valid_submissions += 1
            rep.late += rec.late
        elif rec.kind == DUPLICATE:
            rep.duplicates += 1
        else:
            rep.corrections += 1

    def __iter__(self) -> Iterator[SurveyRecord]:
        # Out-of-order delivery: a record is held back with probability out_of_order_rate and
        # released 1..shuffle_window records later; the rest go straight through. So a record
        # is never more than shuffle_window places late, and most of the stream stays in order.
        cfg = self.config
        rate, window, rng = cfg.out_of_order_rate, cfg.shuffle_window, self._shuffle_rng
        held: list[tuple[int, int, SurveyRecord]] = []
        max_seq = -1
        by_type: Counter[str] = Counter()

        def emit(rec: SurveyRecord) -> SurveyRecord:
            nonlocal max_seq
            self._count(rec, max_seq)
            max_seq = max(max_seq, rec.seq)
            if rec.kind == SUBMISSION:
                by_type[rec.respondent_type] += 1
            return rec

        for rec in self._generate():
            delay = rng.randint(1, window) if rate and rng.random() < rate else 0
            if not delay and not held:
                yield emit(rec)
                continue
            heapq.heappush(held, (rec.seq + delay, rec.seq, rec))
            while held and held[0][0] <= rec.seq:
                yield emit(heapq.heappop(held)[2])
        while held:
            yield emit(heapq.heappop(held)[2])
        self.report.valid_by_respondent_type = dict(by_type)
        self.report.final_versions_hash = self._fingerprint_sum % (1 << 64)


def generate(n_events: int, config: GeneratorConfig | None = None) -> tuple[list[SurveyRecord], StreamReport]:
    """All records in emission order, and the report (small streams: tests, demos)."""
    stream = SurveyStream(n_events, config)
    records = list(stream)
    return records, stream.report
