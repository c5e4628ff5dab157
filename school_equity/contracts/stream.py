"""Contracts of the survey stream's tables: Bronze events and the three Silver tables.

Each model's ``Config.name`` is the table's path in the lake and ``Config.unique``
its key; ``contracts.checks`` derives the asset checks and the column schema
metadata from them. No Dagster imports (the Silver parser uses the constants).

Timestamps in Silver are microseconds, UTC: Delta stores every timestamp as
microseconds, so a millisecond Kafka timestamp reads back as ``us`` and the
contract describes the table as it is read.
"""

from typing import Optional

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.engines import polars_engine as pe

from school_equity.reference import RESPONDENT_TYPES, questions

SUPPORTED_SCHEMA_VERSIONS = (1, 2)
MIN_SURVEY_YEAR, MAX_SURVEY_YEAR = 2000, 2100
# Widest scale any question may use; the per-question scale is enforced when parsing.
MIN_ANSWER, MAX_ANSWER = 1, 5

# One per quarantined record: the first rule the record fails, in this order.
INVALID_JSON = "invalid_json"
UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_VALUE = "invalid_value"
UNKNOWN_DBN = "unknown_dbn"
UNKNOWN_QUESTION = "unknown_question"
ANSWER_OUT_OF_RANGE = "answer_out_of_range"
QUARANTINE_REASONS = (
    INVALID_JSON,
    UNSUPPORTED_SCHEMA_VERSION,
    MISSING_FIELD,
    WRONG_TYPE,
    INVALID_VALUE,
    UNKNOWN_DBN,
    UNKNOWN_QUESTION,
    ANSWER_OUT_OF_RANGE,
)

BATCH_ID_PATTERN = r"^b\d{9}$"
DBN_PATTERN = r"^\d{2}[A-Z]\d{3}$"

UtcMillis = pe.DateTime(time_zone="UTC", time_unit="ms")
UtcMicros = pe.DateTime(time_zone="UTC", time_unit="us")
Headers = pe.List(pl.Struct({"key": pl.String, "value": pl.Binary}))


def _batch_seq_matches_batch_id(data: PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col("batch_seq") == pl.col("batch_id").str.slice(1).cast(pl.Int64, strict=False))


class BronzeSurveyEvents(pa.DataFrameModel):
    """``bronze/survey_events``: one row per Kafka record, payload as received."""

    topic: str = pa.Field(str_length={"min_value": 1}, description="Kafka topic")
    partition: pl.Int32 = pa.Field(ge=0, description="Kafka partition")
    offset: pl.Int64 = pa.Field(ge=0, description="Kafka offset")
    timestamp: UtcMillis = pa.Field(description="Kafka record timestamp")
    timestamp_type: pl.Int8 = pa.Field(nullable=True, isin=[-1, 0, 1], description="0 CreateTime, 1 LogAppendTime")
    key: pl.Binary = pa.Field(nullable=True, description="record key (the submission id), as received")
    value: pl.Binary = pa.Field(nullable=True, description="raw payload, as received")
    headers: Headers = pa.Field(description="record headers, as received")
    batch_id: str = pa.Field(str_matches=BATCH_ID_PATTERN, description="batch partition that landed the record")
    ingested_at: UtcMicros = pa.Field(description="when the batch was landed")

    class Config:
        name = "bronze/survey_events"
        strict = True
        unique = ["topic", "partition", "offset"]


class SilverSurveySubmissions(pa.DataFrameModel):
    """``silver/survey_submissions``: one row per submission, its newest version."""

    submission_id: str = pa.Field(str_length={"min_value": 1}, description="business key of the submission")
    dbn: str = pa.Field(str_matches=DBN_PATTERN, description="school (District-Borough-Number)")
    survey_year: pl.Int32 = pa.Field(ge=MIN_SURVEY_YEAR, le=MAX_SURVEY_YEAR)
    respondent_type: str = pa.Field(isin=list(RESPONDENT_TYPES))
    event_time: UtcMicros = pa.Field(description="when the respondent submitted this version (UTC)")
    schema_version: pl.Int16 = pa.Field(isin=list(SUPPORTED_SCHEMA_VERSIONS))
    # Added by schema version 2: the column appears in the table with the first v2 batch.
    language: Optional[str] = pa.Field(nullable=True, description="respondent's language (v2; null for v1)")  # noqa: UP045
    device_type: str = pa.Field()
    device_os: str = pa.Field()
    app_version: str = pa.Field()
    answer_count: pl.Int32 = pa.Field(ge=1, description="answers in this version (rows in survey_answers)")
    kafka_topic: str = pa.Field(str_length={"min_value": 1})
    kafka_partition: pl.Int32 = pa.Field(ge=0)
    kafka_offset: pl.Int64 = pa.Field(ge=0)
    kafka_timestamp: UtcMicros = pa.Field()
    batch_id: str = pa.Field(str_matches=BATCH_ID_PATTERN, description="batch that last wrote the row")
    batch_seq: pl.Int64 = pa.Field(ge=0)
    ingested_at: UtcMicros = pa.Field()

    @pa.dataframe_check(error="batch_seq is the integer part of batch_id")
    def batch_seq_matches_batch_id(cls, data: PolarsData) -> pl.LazyFrame:
        return _batch_seq_matches_batch_id(data)

    @pa.dataframe_check(error="language is set exactly when schema_version >= 2")
    def language_iff_v2(cls, data: PolarsData) -> pl.LazyFrame:
        lf = data.lazyframe
        if "language" not in lf.collect_schema().names():
            return lf.select(pl.col("schema_version") < 2)
        return lf.select((pl.col("schema_version") >= 2) == pl.col("language").is_not_null())

    class Config:
        name = "silver/survey_submissions"
        strict = True
        unique = ["submission_id"]


class SilverSurveyAnswers(pa.DataFrameModel):
    """``silver/survey_answers``: one row per submission x question of the winning version."""

    submission_id: str = pa.Field(str_length={"min_value": 1})
    question_id: str = pa.Field(isin=sorted(questions()), description="question of the catalog (dim_climate_question)")
    answer_value: pl.Int16 = pa.Field(ge=MIN_ANSWER, le=MAX_ANSWER, description="answer on the question's scale")
    dbn: str = pa.Field(str_matches=DBN_PATTERN)
    survey_year: pl.Int32 = pa.Field(ge=MIN_SURVEY_YEAR, le=MAX_SURVEY_YEAR)
    respondent_type: str = pa.Field(isin=list(RESPONDENT_TYPES))
    event_time: UtcMicros = pa.Field(description="event time of the submission version the answer belongs to")
    kafka_partition: pl.Int32 = pa.Field(ge=0)
    kafka_offset: pl.Int64 = pa.Field(ge=0)
    batch_id: str = pa.Field(str_matches=BATCH_ID_PATTERN)
    batch_seq: pl.Int64 = pa.Field(ge=0)

    @pa.dataframe_check(error="the question is asked of the row's respondent_type")
    def question_matches_respondent_type(cls, data: PolarsData) -> pl.LazyFrame:
        asked_of = {q.question_id: q.respondent_type for q in questions().values()}
        return data.lazyframe.select(
            pl.col("question_id").replace_strict(asked_of, default=None, return_dtype=pl.String)
            == pl.col("respondent_type")
        )

    @pa.dataframe_check(error="batch_seq is the integer part of batch_id")
    def batch_seq_matches_batch_id(cls, data: PolarsData) -> pl.LazyFrame:
        return _batch_seq_matches_batch_id(data)

    class Config:
        name = "silver/survey_answers"
        strict = True
        unique = ["submission_id", "question_id"]


class SilverSurveyQuarantine(pa.DataFrameModel):
    """``silver/survey_quarantine``: one row per Kafka record that failed parsing or its contract."""

    kafka_topic: str = pa.Field(str_length={"min_value": 1})
    kafka_partition: pl.Int32 = pa.Field(ge=0)
    kafka_offset: pl.Int64 = pa.Field(ge=0)
    kafka_timestamp: UtcMicros = pa.Field()
    kafka_key: str = pa.Field(nullable=True, description="record key as UTF-8 (invalid bytes replaced)")
    raw_payload: str = pa.Field(nullable=True, description="payload as UTF-8 (invalid bytes replaced); null if none")
    reason_code: str = pa.Field(isin=list(QUARANTINE_REASONS), description="first rule the record failed")
    reason_detail: str = pa.Field(str_length={"min_value": 1}, description="the field, question or value at fault")
    submission_id: str = pa.Field(nullable=True, description="null when the payload could not be read")
    batch_id: str = pa.Field(str_matches=BATCH_ID_PATTERN)
    batch_seq: pl.Int64 = pa.Field(ge=0)
    ingested_at: UtcMicros = pa.Field()

    @pa.dataframe_check(error="batch_seq is the integer part of batch_id")
    def batch_seq_matches_batch_id(cls, data: PolarsData) -> pl.LazyFrame:
        return _batch_seq_matches_batch_id(data)

    class Config:
        name = "silver/survey_quarantine"
        strict = True
        unique = ["kafka_topic", "kafka_partition", "kafka_offset"]
