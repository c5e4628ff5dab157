{{
  config(
    materialized='incremental',
    unique_key='submission_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
  )
}}
-- Grain: submission x question. The delete+insert key is submission_id, not the grain:
-- Silver holds exactly the answers of a submission's winning version, so when a newer
-- version drops a question, replacing the submission's whole answer set removes it here
-- too (a (submission_id, question_id) key would leave the dropped answer behind).
-- Uniqueness of the grain is a test instead. This relies on Silver's contract: a winning
-- version rewrites all its answer rows with its batch, and has at least one answer (the
-- parser rejects empty answer sets), so its whole set is inside the window.

select
    submission_id,
    question_id,
    answer_value,
    dbn,
    survey_year,
    respondent_type,
    event_time,
    response_date,
    kafka_partition,
    kafka_offset,
    batch_id,
    batch_seq
from {{ ref('stg_survey_answers') }}
{% if is_incremental() %}
where {{ batch_window('batch_seq') }}
{% endif %}
