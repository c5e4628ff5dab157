{{ config(materialized='view') }}
-- The one reader of silver.school_survey_results (rates already 0-1, N/A already null).

select
    dbn,
    cast(survey_year as {{ dbt.type_int() }}) as survey_year,
    school_name,
    cast(district as {{ dbt.type_int() }}) as district,
    borough_code,
    borough,
    is_charter,
    is_d75,
    parent_response_rate,
    teacher_response_rate,
    student_response_rate,
    collaborative_teachers_score,
    effective_school_leadership_score,
    rigorous_instruction_score,
    supportive_environment_score,
    strong_family_community_ties_score,
    trust_score
from {{ source('silver', 'school_survey_results') }}
