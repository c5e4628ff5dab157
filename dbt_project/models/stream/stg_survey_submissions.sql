-- The one reader of silver.survey_submissions (see the sources file for why one).
-- Types are cast explicitly so DuckDB and Snowflake expose the same Gold shape whatever
-- the lake's physical types (Delta i16/i32 arrive as SMALLINT/INTEGER, Iceberg as INT).
{%- set src = source('silver_stream', 'survey_submissions') %}

select
    cast(submission_id as {{ dbt.type_string() }}) as submission_id,
    cast(dbn as {{ dbt.type_string() }}) as dbn,
    cast(survey_year as {{ dbt.type_int() }}) as survey_year,
    cast(respondent_type as {{ dbt.type_string() }}) as respondent_type,
    event_time,
    {{ utc_date('event_time') }} as response_date,
    cast(schema_version as {{ dbt.type_int() }}) as schema_version,
    {{ optional_column(src, 'language', dbt.type_string()) }},
    cast(device_type as {{ dbt.type_string() }}) as device_type,
    cast(device_os as {{ dbt.type_string() }}) as device_os,
    cast(app_version as {{ dbt.type_string() }}) as app_version,
    cast(answer_count as {{ dbt.type_int() }}) as answer_count,
    cast(kafka_topic as {{ dbt.type_string() }}) as kafka_topic,
    cast(kafka_partition as {{ dbt.type_int() }}) as kafka_partition,
    cast(kafka_offset as {{ dbt.type_bigint() }}) as kafka_offset,
    kafka_timestamp,
    cast(batch_id as {{ dbt.type_string() }}) as batch_id,
    cast(batch_seq as {{ dbt.type_bigint() }}) as batch_seq,
    ingested_at
from {{ src }}
