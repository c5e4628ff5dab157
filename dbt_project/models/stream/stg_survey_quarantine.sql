-- The one reader of silver.survey_quarantine.
select
    cast(kafka_topic as {{ dbt.type_string() }}) as kafka_topic,
    cast(kafka_partition as {{ dbt.type_int() }}) as kafka_partition,
    cast(kafka_offset as {{ dbt.type_bigint() }}) as kafka_offset,
    kafka_timestamp,
    cast(kafka_key as {{ dbt.type_string() }}) as kafka_key,
    cast(raw_payload as {{ dbt.type_string() }}) as raw_payload,
    cast(reason_code as {{ dbt.type_string() }}) as reason_code,
    cast(reason_detail as {{ dbt.type_string() }}) as reason_detail,
    cast(submission_id as {{ dbt.type_string() }}) as submission_id,
    cast(batch_id as {{ dbt.type_string() }}) as batch_id,
    cast(batch_seq as {{ dbt.type_bigint() }}) as batch_seq,
    ingested_at
from {{ source('silver_stream', 'survey_quarantine') }}
