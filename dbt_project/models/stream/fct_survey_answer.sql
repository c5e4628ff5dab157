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
    a.submission_id,
    a.question_id,
    a.answer_value,
    a.dbn,
    a.survey_year,
    a.respondent_type,
    a.event_time,
    a.response_date,
    a.kafka_partition,
    a.kafka_offset,
    a.batch_id,
    a.batch_seq
from {{ ref('stg_survey_answers') }} as a
-- Only the answers of the version Silver's submissions table holds. Silver merges a
-- batch's submissions, then its answers: a build that reads the two tables between those
-- commits (another run's Silver step, running beside this dbt step) sees a submission's
-- new version with its old answers. Without this join those answers would land under a
-- submission this window does not carry; with it they wait for the window of the
-- version that wins, which brings both.
inner join {{ ref('stg_survey_submissions') }} as s
    on a.submission_id = s.submission_id
    and a.event_time = s.event_time
    and a.kafka_partition = s.kafka_partition
    and a.kafka_offset = s.kafka_offset
    and a.batch_seq = s.batch_seq
{% if is_incremental() %}
where {{ batch_window('a.batch_seq') }}
{% endif %}
