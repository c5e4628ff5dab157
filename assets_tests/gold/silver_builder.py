"""Small, real stream Silver Delta tables for the Gold tests (columns per docs/ARCHITECTURE.md).

Rows are built from a few named submissions so a test can say exactly what Gold must hold.
Writes go through polars/deltalake like the Silver assets do: the first batch creates the
tables, later batches merge by key (newer rows replace their keys), so Gold reads Delta
tables that have been through real merges (reading their parquet files directly would
double-count replaced rows).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import polars as pl

UTC = "UTC"

SUBMISSIONS_SCHEMA = {
    "submission_id": pl.String,
    "dbn": pl.String,
    "survey_year": pl.Int32,
    "respondent_type": pl.String,
    "event_time": pl.Datetime("us", UTC),
    "schema_version": pl.Int16,
    "language": pl.String,
    "device_type": pl.String,
    "device_os": pl.String,
    "app_version": pl.String,
    "answer_count": pl.Int32,
    "kafka_topic": pl.String,
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
    "kafka_timestamp": pl.Datetime("ms", UTC),
    "batch_id": pl.String,
    "batch_seq": pl.Int64,
    "ingested_at": pl.Datetime("us", UTC),
}

ANSWERS_SCHEMA = {
    "submission_id": pl.String,
    "question_id": pl.String,
    "answer_value": pl.Int16,
    "dbn": pl.String,
    "survey_year": pl.Int32,
    "respondent_type": pl.String,
    "event_time": pl.Datetime("us", UTC),
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
    "batch_id": pl.String,
    "batch_seq": pl.Int64,
}

QUARANTINE_SCHEMA = {
    "kafka_topic": pl.String,
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
    "kafka_timestamp": pl.Datetime("ms", UTC),
    "kafka_key": pl.String,
    "raw_payload": pl.String,
    "reason_code": pl.String,
    "reason_detail": pl.String,
    "submission_id": pl.String,
    "batch_id": pl.String,
    "batch_seq": pl.Int64,
    "ingested_at": pl.Datetime("us", UTC),
}

TOPIC = "survey_submissions"
T0 = dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Submission:
    submission_id: str
    dbn: str
    respondent_type: str
    event_time: dt.datetime
    answers: dict[str, int]
    offset: int
    batch_seq: int
    language: str | None = None
    schema_version: int = 1
    partition: int = 0

    @property
    def batch_id(self) -> str:
        return f"b{self.batch_seq:09d}"


@dataclass(frozen=True)
class Quarantined:
    offset: int
    reason_code: str
    batch_seq: int
    submission_id: str | None = None
    partition: int = 0
    raw_payload: str = "{not json"
    reason_detail: str = ""


@dataclass
class Batch:
    submissions: list[Submission] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)


def submissions_frame(subs: list[Submission]) -> pl.DataFrame:
    rows = [
        {
            "submission_id": s.submission_id,
            "dbn": s.dbn,
            "survey_year": 2026,
            "respondent_type": s.respondent_type,
            "event_time": s.event_time,
            "schema_version": s.schema_version,
            "language": s.language,
            "device_type": "mobile",
            "device_os": "iOS 18.1",
            "app_version": "3.4.0",
            "answer_count": len(s.answers),
            "kafka_topic": TOPIC,
            "kafka_partition": s.partition,
            "kafka_offset": s.offset,
            "kafka_timestamp": s.event_time,
            "batch_id": s.batch_id,
            "batch_seq": s.batch_seq,
            "ingested_at": T0 + dt.timedelta(days=30),
        }
        for s in subs
    ]
    return pl.DataFrame(rows, schema=SUBMISSIONS_SCHEMA)


def answers_frame(subs: list[Submission]) -> pl.DataFrame:
    rows = [
        {
            "submission_id": s.submission_id,
            "question_id": q,
            "answer_value": v,
            "dbn": s.dbn,
            "survey_year": 2026,
            "respondent_type": s.respondent_type,
            "event_time": s.event_time,
            "kafka_partition": s.partition,
            "kafka_offset": s.offset,
            "batch_id": s.batch_id,
            "batch_seq": s.batch_seq,
        }
        for s in subs
        for q, v in s.answers.items()
    ]
    return pl.DataFrame(rows, schema=ANSWERS_SCHEMA)


def quarantine_frame(records: list[Quarantined]) -> pl.DataFrame:
    rows = [
        {
            "kafka_topic": TOPIC,
            "kafka_partition": r.partition,
            "kafka_offset": r.offset,
            "kafka_timestamp": T0,
            "kafka_key": r.submission_id,
            "raw_payload": r.raw_payload,
            "reason_code": r.reason_code,
            "reason_detail": r.reason_detail,
            "submission_id": r.submission_id,
            "batch_id": f"b{r.batch_seq:09d}",
            "batch_seq": r.batch_seq,
            "ingested_at": T0 + dt.timedelta(days=30),
        }
        for r in records
    ]
    return pl.DataFrame(rows, schema=QUARANTINE_SCHEMA)


def write_batch(
    lake_root: str, batch: Batch, *, drop_language: bool = False, tables: tuple[str, ...] = ("submissions", "answers")
) -> None:
    """Merge one batch into the three Silver tables the way Silver does: submissions by
    submission_id, answers by replacing each merged submission's whole answer set,
    quarantine insert-only by Kafka coordinates. ``tables=("submissions",)`` stops after
    the first commit, the state a reader sees in the middle of a Silver step;
    ``tables=("answers",)`` then finishes it."""
    if "submissions" in tables:
        subs = submissions_frame(batch.submissions)
        if drop_language:  # a table written before the first schema-version-2 event
            subs = subs.drop("language")
        _merge(f"{lake_root}/silver/survey_submissions", subs, ["submission_id"])
    if "answers" not in tables:
        return

    answers_path = f"{lake_root}/silver/survey_answers"
    ids = [s.submission_id for s in batch.submissions]
    if _exists(answers_path) and ids:
        from deltalake import DeltaTable

        quoted = ", ".join(f"'{i}'" for i in ids)
        DeltaTable(answers_path).delete(f"submission_id in ({quoted})")
    _merge(answers_path, answers_frame(batch.submissions), ["submission_id", "question_id"])

    _merge(
        f"{lake_root}/silver/survey_quarantine",
        quarantine_frame(batch.quarantine),
        ["kafka_topic", "kafka_partition", "kafka_offset"],
    )


def _exists(path: str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(path)


def _merge(path: str, df: pl.DataFrame, keys: list[str]) -> None:
    if not _exists(path):
        df.write_delta(path, mode="overwrite")
        return
    predicate = " and ".join(f"t.{k} = s.{k}" for k in keys)
    (
        df.write_delta(
            path,
            mode="merge",
            delta_merge_options={
                "predicate": predicate,
                "source_alias": "s",
                "target_alias": "t",
                "merge_schema": True,  # additive evolution: v2's `language` column
            },
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def revise(sub: Submission, **changes) -> Submission:
    return replace(sub, **changes)
