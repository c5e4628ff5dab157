{{
  config(
    materialized='incremental',
    unique_key='submission_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
  )
}}
-- Incremental over the batch window: a Silver row carries the batch that last wrote it,
-- so the window selects exactly the submissions a batch (or a late / re-materialized
-- batch) created or replaced, and delete+insert swaps those rows whole. A first build
-- (or --full-refresh) takes all of Silver.

select
    submission_id,
    dbn,
    survey_year,
    respondent_type,
    event_time,
    response_date,
    schema_version,
    language,
    device_type,
    device_os,
    app_version,
    answer_count,
    kafka_topic,
    kafka_partition,
    kafka_offset,
    kafka_timestamp,
    ingested_at,
    batch_id,
    batch_seq
from {{ ref('stg_survey_submissions') }}
{% if is_incremental() %}
where {{ batch_window('batch_seq') }}
{% endif %}
