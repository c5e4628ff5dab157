{{ config(materialized='table') }}
-- One row per school district (the first two digits of the DBN; key: district): community
-- districts 1-32, District 75 (special education), District 79 (alternative schools) and
-- District 84 (charter schools). Its schools are those of the latest survey year's results
-- and of the current location extract; borough is their one borough, or 'Citywide' when
-- they span several (75 and 84 do).

with survey_schools as (
    select
        dbn,
        district,
        borough
    from {{ ref('school_climate_snapshot') }}
    where survey_year = (select max(survey_year) from {{ ref('school_climate_snapshot') }})
),

located_schools as (
    select
        dbn,
        cast(substr(dbn, 1, 2) as {{ dbt.type_int() }}) as district,
        borough
    from {{ ref('int_school_location_current') }}
),

all_schools as (
    select dbn, district, borough, 1 as is_surveyed, 0 as is_located from survey_schools
    union all
    select dbn, district, borough, 0 as is_surveyed, 1 as is_located from located_schools
),

per_school as (
    select
        district,
        dbn,
        max(borough) as borough,
        max(is_surveyed) as is_surveyed,
        max(is_located) as is_located
    from all_schools
    group by district, dbn
)

select
    district,
    case when count(distinct borough) = 1 then max(borough) else 'Citywide' end as borough,
    case
        when district between 1 and 32 then 'community'
        when district = 75 then 'special_education'
        when district = 79 then 'alternative'
        when district = 84 then 'charter'
        else 'other'
    end as district_type,
    case when district = 84 then true else false end as is_charter_district,
    case when district = 75 then true else false end as is_d75_district,
    count(*) as school_count,
    count(case when is_surveyed = 1 then 1 end) as surveyed_school_count,
    count(case when is_located = 1 then 1 end) as located_school_count
from per_school
group by district
