-- The one reader of silver.survey_answers.
select
    cast(submission_id as {{ dbt.type_string() }}) as submission_id,
    cast(question_id as {{ dbt.type_string() }}) as question_id,
    cast(answer_value as {{ dbt.type_int() }}) as answer_value,
    cast(dbn as {{ dbt.type_string() }}) as dbn,
    cast(survey_year as {{ dbt.type_int() }}) as survey_year,
    cast(respondent_type as {{ dbt.type_string() }}) as respondent_type,
    event_time,
    {{ utc_date('event_time') }} as response_date,
    cast(kafka_partition as {{ dbt.type_int() }}) as kafka_partition,
    cast(kafka_offset as {{ dbt.type_bigint() }}) as kafka_offset,
    cast(batch_id as {{ dbt.type_string() }}) as batch_id,
    cast(batch_seq as {{ dbt.type_bigint() }}) as batch_seq
from {{ source('silver_stream', 'survey_answers') }}
