{{ config(materialized='table') }}
-- Quarantine is insert-only and about 1% of the stream: a full rebuild stays cheap and
-- never double-counts a re-materialized batch.

select
    batch_id,
    batch_seq,
    reason_code,
    count(*) as quarantined_records,
    count(distinct submission_id) as distinct_submissions,
    min(kafka_timestamp) as first_kafka_timestamp,
    max(kafka_timestamp) as last_kafka_timestamp
from {{ ref('stg_survey_quarantine') }}
group by batch_id, batch_seq, reason_code
