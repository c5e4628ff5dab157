{{ config(materialized='table') }}
-- One row per school district and survey year (key: district, survey_year): how the
-- district's schools responded, their climate, and how many sit in vulnerable tracts.
-- Averages are unweighted means over the schools that report the value.

with schools as (
    select * from {{ ref('gold_school_equity') }}
),

per_district as (
    select
        district,
        survey_year,
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
            as high_vulnerability_weak_climate_school_count
    from schools
    group by district, survey_year
)

select
    per_district.district,
    per_district.survey_year,
    districts.borough,
    districts.district_type,
    per_district.school_count,
    per_district.avg_parent_response_rate,
    per_district.avg_teacher_response_rate,
    per_district.avg_student_response_rate,
    per_district.avg_climate_score,
    per_district.svi_matched_school_count,
    per_district.avg_svi_score,
    per_district.high_vulnerability_school_count,
    per_district.very_high_vulnerability_school_count,
    per_district.high_vulnerability_low_response_school_count,
    per_district.high_vulnerability_weak_climate_school_count,
    per_district.high_vulnerability_school_count * 1.0
        / nullif(per_district.svi_matched_school_count, 0) as high_vulnerability_school_share
from per_district
left join {{ ref('dim_district') }} as districts
    on districts.district = per_district.district
