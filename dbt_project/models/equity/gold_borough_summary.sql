{{ config(materialized='table') }}
-- One row per borough and survey year (key: borough, survey_year), over the schools whose
-- DBN names the borough (charter and District 75 schools count in their own borough).
-- Averages are unweighted means over the schools that report the value.

select
    borough,
    survey_year,
    count(distinct district) as district_count,
    count(*) as school_count,
    avg(parent_response_rate) as avg_parent_response_rate,
    avg(teacher_response_rate) as avg_teacher_response_rate,
    avg(student_response_rate) as avg_student_response_rate,
    avg(climate_score) as avg_climate_score,
    count(case when svi_match_status = 'matched' then 1 end) as svi_matched_school_count,
    avg(svi_score) as avg_svi_score,
    count(case when is_high_vulnerability then 1 end) as high_vulnerability_school_count,
    count(case when svi_bucket = 'very_high' then 1 end) as very_high_vulnerability_school_count,
    count(case when flag_high_vulnerability_low_response then 1 end)
        as high_vulnerability_low_response_school_count,
    count(case when flag_high_vulnerability_weak_climate then 1 end)
        as high_vulnerability_weak_climate_school_count,
    count(case when is_high_vulnerability then 1 end) * 1.0
        / nullif(count(case when svi_match_status = 'matched' then 1 end), 0)
        as high_vulnerability_school_share
from {{ ref('gold_school_equity') }}
group by borough, survey_year
